"""Documented commands stay true: each one parses, and each one runs in a test or says why not.

Every ``samtune ...`` line in a shell block of README.md or docs/*.md must be listed below,
either in ``RUN`` (executed, in order, in a scratch workspace) or in ``NOT_RUN`` with the
reason. A new example in the docs therefore fails this test until someone decides.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.main import get_command
from typer.testing import CliRunner

from samtune.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

NEEDS_NETWORK = (
    "needs a download from the hub or the dataset's publisher (tests never reach the network)"
)
NOT_RUN = {
    "samtune suite examples/suites/demo.yaml -o suites/demo": (
        "four demo fine-tuning runs (minutes); tests/test_suite.py runs a shrunk suite and "
        "checks the shipped specs"
    ),
    "samtune data download taco": NEEDS_NETWORK,
    "samtune suite examples/suites/recipe-study.yaml -o suites/recipe-study": (
        "the recipe study: 36 demo fine-tuning runs (CPU-hours on a busy machine); "
        "tests/test_recipe_study.py checks its specs"
    ),
    "samtune suite examples/suites/recipe-study-lora.yaml -o suites/recipe-study-lora": (
        "the recipe study's 21 LoRA runs; tests/test_recipe_study.py checks its specs"
    ),
    "samtune suite examples/suites/recipe-study-test.yaml -o suites/recipe-study-test": (
        "scores (or trains) the study's 12 old- and new-default runs on the test split; "
        "tests/test_recipe_study.py checks its spec"
    ),
    "samtune suite examples/suites/recipe-study-round2.yaml -o suites/recipe-study-round2": (
        "the study's second round: 72 demo fine-tuning runs; tests/test_recipe_study.py checks "
        "its spec"
    ),
    "samtune suite examples/suites/recipe-study-round2-test.yaml -o suites/recipe-study-round2-test": (
        "round 2's 24 runs on the test split; tests/test_recipe_study.py checks its spec"
    ),
    "samtune suite examples/suites/recipe-study-long.yaml -o suites/recipe-study-long": (
        "24 runs of 400 and 1000 steps; tests/test_recipe_study.py checks its spec"
    ),
    "samtune fit --model facebook/sam3 --strategy lora --prompt text --dataset zerowaste": (
        NEEDS_NETWORK
    ),
    'samtune fit --model facebook/sam3 --prompt text --dataset taco --prompt-map "Shoe=old shoe"': (
        NEEDS_NETWORK
    ),
    "samtune fit --model facebook/sam2.1-hiera-small --strategy lora --dataset trashcan": (
        NEEDS_NETWORK
    ),
    "samtune convert sam2.1_hiera_small.pt ./sam2.1-small-hf --to hf": (
        "needs the real SAM 2.1 checkpoint (a download); test_convert_family converts "
        "reference-built SAM 2 and SAM-HQ checkpoints and exports them back"
    ),
    "samtune convert ./sam2.1-small-hf ./sam2.1_hiera_small.pt --to original": (
        "continues the SAM 2.1 conversion above, which needs the download"
    ),
    "samtune suite examples/suites/waste-vit-b.yaml -o suites/waste-vit-b": NEEDS_NETWORK,
    "samtune suite examples/suites/waste-vit-b.yaml -o suites/waste-vit-b --check": (
        "needs the three datasets; test_suite checks the spec and that missing data exits 2"
    ),
    "samtune suite examples/suites/waste-sam3.yaml -o suites/waste-sam3 --max-cells 4": (
        NEEDS_NETWORK
    ),
    "samtune fit --strategy lora --dataset trashcan": NEEDS_NETWORK,
    "samtune fit --strategy decoder --dataset trashcan --model facebook/sam-vit-huge --mixed-precision bf16": NEEDS_NETWORK,
    "samtune fit --strategy lora --dataset trashcan --mixed-precision bf16 --attention flex --compile default": NEEDS_NETWORK,
    "samtune fit --strategy decoder --dataset trashcan --epochs 20 --mixed-precision bf16": NEEDS_NETWORK,
    "samtune fit --config runs/lora-trashcan/config.yaml --resume": (
        "continues a TrashCan run, which needs the network; resume is tested in test_train_resume"
    ),
    "samtune fit --strategy lora -S rank=16 -S use_dora=true --dataset zerowaste": NEEDS_NETWORK,
    "samtune eval --dataset trashcan --prompt clicks:10 --output reports/trashcan-clicks": NEEDS_NETWORK,
    "samtune eval -m facebook/sam-vit-base -d zerowaste --split test --prompt point -o runs/zs": NEEDS_NETWORK,
    "samtune eval -m facebook/sam-vit-base -a runs/lora/adapter -a runs/decoder/adapter --compare -o runs/cmp": NEEDS_NETWORK,
    "samtune predict *.jpg --prompts prompts.json -m facebook/sam-vit-base --adapter runs/lora/adapter": NEEDS_NETWORK,
    "samtune data download zerowaste": NEEDS_NETWORK,
    "samtune data download zerowaste --root data/zerowaste": NEEDS_NETWORK,
    "samtune data download trashcan": NEEDS_NETWORK,
    "samtune segment photo.jpg images/ -m facebook/sam-vit-base --adapter runs/lora/adapter -o out/": NEEDS_NETWORK,
    "samtune eval -m demo -a runs/lora-demo/adapter --compare --prompt auto -d demo --split test": (
        "automatic masks on 50 images for two models (minutes); test_evaluate_auto runs "
        "eval --prompt auto on demo images and checks it against COCOeval"
    ),
    "samtune fit --strategy lora --dataset demo --prompt point --point-sampling random": (
        "a second demo fine-tuning (minutes); test_point_sampling checks the prompts it trains on"
    ),
    "samtune fit --strategy lora --dataset cvat:export/annotations.xml --images export/images": (
        "needs a CVAT export; test_tool_exports trains on a fabricated one through the CLI"
    ),
    "samtune eval -m demo --adapter runs/lora-cvat/adapter --dataset cvat:export --split test": (
        "needs a CVAT export and its run; test_tool_exports loads fabricated exports"
    ),
    "samtune fit --strategy lora --dataset labelme:photos/": (
        "needs LabelMe files; test_tool_exports reads fabricated ones"
    ),
    "samtune serve label-studio --model demo --images media/upload/1": (
        "a server that runs until stopped; test_serve_label_studio runs it on 127.0.0.1 and "
        "posts Label Studio's payloads"
    ),
    "samtune serve label-studio --model facebook/sam-vit-base --adapter runs/lora-label-studio-export/adapter --images media/upload/1 --port 9090": NEEDS_NETWORK,
    "samtune fit --dataset label-studio:project-1.json --images media/upload/1": (
        "needs a Label Studio export and the default model (a download); "
        "test_bad_input_labelstudio and test_label_studio_data read fabricated exports"
    ),
    "samtune eval --model demo --adapter runs/lora-label-studio-project-1/adapter --compare --dataset label-studio:project-1.json --images media/upload/1 --split test": (
        "continues the Label Studio fit above"
    ),
    "samtune eval -m facebook/sam3 -d zerowaste --split test --prompt text -o reports/sam3-zs": (
        NEEDS_NETWORK
    ),
    "samtune fit --strategy decoder --dataset trashcan --recipe lightning-sam": NEEDS_NETWORK,
    "samtune fit --model demo --strategy lora --dataset label-studio:project-1.json --images media/upload/1": (
        "the annotation loop; test_annotation_loop runs it on a fabricated export"
    ),
    "samtune serve label-studio --model demo --adapter runs/lora-label-studio-project-1/adapter --images media/upload/1": (
        "a server that runs until stopped; test_annotation_loop serves an adapter the same way"
    ),
    "samtune info tiny-sam3": "test_sam3_inference checks info on the tiny-sam3 preset",
    "samtune segment photos/ -m facebook/sam3 --classes taco -o out/": NEEDS_NETWORK,
    'samtune segment photos/ -m facebook/sam3 --text "plastic bottle" --text can -o out/': (
        NEEDS_NETWORK
    ),
    "samtune fit --config runs/lora-demo/config.yaml --output-dir runs/again": (
        "a second full main-job run; the config round trip is tested in test_train_units"
    ),
}

# Executed in this order; later commands use what earlier ones wrote.
RUN = [
    "samtune fit --strategy lora --dataset demo",
    "samtune eval --model demo --adapter runs/lora-demo/adapter --compare --dataset demo --split test",
    "samtune eval --model demo --dataset demo --prompt box",
    "samtune strategies",
    "samtune strategies --json",
    "samtune convert sam_vit_b_01ec64.pth ./sam-vit-b-hf --to hf",
    "samtune convert ./sam-vit-b-hf ./sam_vit_b.pth --to segment-anything",
    "samtune info ./sam_vit_b_01ec64.pth",
    "samtune merge runs/lora-demo/adapter merged-model",
    "samtune export runs/lora-demo/adapter ./to-hub --format hub",
    "samtune export runs/lora-demo/adapter hub-folder --format hub --metrics runs/lora-demo/metrics.json",
    "samtune merge runs/lora ./sam-merged",
    "samtune export runs/lora ./sam_tuned.pth --format segment-anything",
    "samtune export runs/lora ./lora-peft --format peft",
    "samtune export runs/lora ./upload --format hub --metrics runs/lora/eval.json",
    "samtune export runs/lora-demo/adapter ./sam-onnx --format onnx",
    "samtune export runs/lora-demo/adapter ./sam-onnx-int8 --format onnx --quantize int8",
    "samtune export runs/lora-demo/adapter ./sam-xany --format x-anylabeling",
    "samtune export runs/lora-demo/adapter ./sam-osam --format x-anylabeling --profile osam",
    "samtune export runs/lora-demo/adapter ./sam-cvat --format cvat",
    'samtune predict photo.jpg --boxes "10,20,200,240" --model demo --overlay',
    'samtune predict photo.jpg --boxes "10,20,200,180;220,40,300,160" -m demo',
    'samtune predict a.jpg b.jpg --points "64,80" --multimask --overlay -o out/',
    "samtune fit --model demo-sam3 --strategy lora --prompt text --dataset demo -o runs/lora-demo-sam3",
    'samtune segment photo.jpg --model demo-sam3 --text "plastic bag" --text can -o out-sam3/',
]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block, in order (language "" when unlabelled)."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        fence = line.strip().startswith("```")
        if language is None and fence:
            language, body = line.strip()[3:].strip(), []
        elif language is not None and fence:
            blocks.append((language, "\n".join(body)))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def documented_commands() -> dict[str, str]:
    """Every ``samtune`` command line in a shell or unlabelled block -> the file it is in.

    Synopses with placeholders (``NAME [--root DIR]``) go in ``text`` blocks, which are skipped.
    """
    found: dict[str, str] = {}
    for path in DOC_FILES:
        for language, block in fenced_blocks(path.read_text()):
            if language not in ("", "bash", "sh", "shell", "console"):
                continue
            for line in block.splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("samtune "):
                    command = re.split(r"\s+#", line)[0].strip()
                    found.setdefault(command, path.name)
    return found


def test_every_documented_command_runs_in_a_test_or_says_why_not():
    documented = documented_commands()
    undecided = sorted(set(documented) - set(RUN) - set(NOT_RUN))
    assert not undecided, f"documented commands neither run nor marked: {undecided}"
    stale = sorted((set(RUN) | set(NOT_RUN)) - set(documented))
    assert not stale, f"listed here but no longer documented: {stale}"


@pytest.mark.parametrize("command", sorted(documented_commands()))
def test_documented_command_parses(command):
    """Sub-commands exist, options are spelled right, no argument is missing or extra."""
    error = parse_error(command)
    assert error is None, f"{command!r}: {error}"


def test_the_parse_check_catches_mistakes():
    assert "No such option" in parse_error("samtune fit --strategyy lora")
    assert "No such command" in parse_error("samtune data downloadd zerowaste")
    assert "Missing argument" in parse_error("samtune convert model.pth")
    assert "unexpected extra argument" in parse_error("samtune strategies lora")
    assert parse_error("samtune fit --strategy lora --dataset demo") is None


def parse_error(command: str) -> str | None:
    """The usage error a documented command line would get, or None if it parses.

    typer vendors click, so its exceptions are not ``click``'s: they are told apart by name.
    A ``BadParameter`` (e.g. a documented file that does not exist here) is not a doc error.
    """
    cmd, name = get_command(app), "samtune"
    args = shlex.split(command)[1:]
    ctx = None
    try:
        while hasattr(cmd, "resolve_command"):  # a group: find the sub-command
            ctx = cmd.make_context(name, list(args), parent=ctx, resilient_parsing=True)
            wanted = args[0] if args else None
            name, cmd, args = cmd.resolve_command(ctx, args)
            if cmd is None:
                return f"No such command {wanted!r}"
        cmd.make_context(name, list(args), parent=ctx)
    except Exception as exc:
        if type(exc).__name__ == "BadParameter":
            return None
        if hasattr(exc, "format_message"):
            return exc.format_message()
        raise
    return None


def _workspace(root: Path) -> None:
    """The files the documented commands name: a (tiny) Meta checkpoint and a few images."""
    from conftest import randomize_

    from samtune.models.convert.sam import build_meta_sam
    from samtune.models.presets import tiny_config

    meta = randomize_(build_meta_sam(tiny_config()), seed=1)
    torch.save(meta.state_dict(), root / "sam_vit_b_01ec64.pth")  # stand-in: tiny, not ViT-B
    rng = np.random.default_rng(0)
    for name, size in (("photo.jpg", (320, 260)), ("a.jpg", (160, 128)), ("b.jpg", (128, 200))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            root / name
        )


@pytest.mark.slow
def test_documented_commands_run(tmp_path, monkeypatch):
    _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for command in RUN:
        if command.startswith("samtune merge runs/lora "):
            # docs/adapters.md calls the adapter folder runs/lora
            shutil.copytree("runs/lora-demo/adapter", "runs/lora")
            shutil.copy("runs/lora-demo/metrics.json", "runs/lora/eval.json")
        result = runner.invoke(app, shlex.split(command)[1:])
        assert result.exit_code == 0, f"{command!r} failed:\n{result.output[-3000:]}"
        if command == RUN[0]:
            _check_main_job(result.output, tmp_path / "runs" / "lora-demo")
        if "--model demo-sam3 --strategy lora --prompt text" in command:
            _check_sam3_demo(result.output)


def _check_sam3_demo(output: str) -> None:
    """SAM 3 by name on the demo: the text protocol's table, with class-aware AP and semantic
    mIoU higher after fine-tuning."""
    table = re.findall(r"^\| (zero-shot|fine-tuned) \| ([0-9.]+)[^|]*\| ([0-9.]+)", output, re.M)
    rows = {name: (float(miou), float(ap)) for name, miou, ap in table}
    assert set(rows) == {"zero-shot", "fine-tuned"}, output[-2000:]
    (miou0, ap0), (miou1, ap1) = rows["zero-shot"], rows["fine-tuned"]
    assert ap1 > ap0 and miou1 >= miou0, output[-2000:]


def _check_main_job(output: str, run_dir: Path) -> None:
    """The README's main job: a zero-shot vs fine-tuned table that shows adaptation, and files."""
    rows = dict(re.findall(r"^\| (zero-shot|fine-tuned) \| ([0-9.]+)", output, re.M))
    assert set(rows) == {"zero-shot", "fine-tuned"}, output[-2000:]
    assert float(rows["fine-tuned"]) > float(rows["zero-shot"]) + 3.0  # mIoU points, box prompts
    for name in ("config.yaml", "metrics.json", "results.md", "adapter/adapter.safetensors"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "best" / "adapter.safetensors").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics, "metrics.json is empty"
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert not leftovers, leftovers
