"""One table of bad input across the commands: exit code, the words of the one-line message,
and what must not be left behind.

Each case builds its inputs in a scratch folder (the current folder while the command runs),
then runs ``samtune ARGS`` in-process. Every message is one line starting ``error:``; exit 2
is bad input, 1 a run that started and failed; nothing says "unexpected".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from samtune.cli import app


@dataclass
class Case:
    id: str
    args: list[str]
    words: list[str]
    code: int = 2
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    kept: dict[str, str] = field(default_factory=dict)  # files that must keep their content


# --------------------------------------------------------------------------- fixtures


def _adapter(root: Path, name: str = "adapter", *, edit=None, metadata=None) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    import samtune

    model = samtune.load_model("tiny")
    samtune.get_strategy("lora").apply(model)
    samtune.save_adapter(model, root / name)
    if edit or metadata:
        path = root / name / "adapter.safetensors"
        with safe_open(str(path), framework="pt") as fh:
            meta = {**fh.metadata(), **(metadata or {})}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        save_file(edit(tensors) if edit else tensors, str(path), metadata=meta)


def _nan(tensors):
    key = sorted(tensors)[0]
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    return tensors


def _image(root: Path, name: str = "scene.png", size=(120, 90)) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / name)


def _write(name: str, text: str):
    def setup(root: Path, _mp) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)

    return setup


def _all(*steps):
    def setup(root: Path, mp) -> None:
        for step in steps:
            step(root, mp)

    return setup


def _unwritable(root: Path, mp) -> None:
    """A read-only output folder (root ignores mode bits, so the OS refusal is simulated)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", kwargs.get("dir"))

    mp.setattr(tempfile, "mkdtemp", refuse)
    mp.setattr(tempfile, "mkstemp", refuse)


ADAPTER = lambda root, mp: _adapter(root)  # noqa: E731


# --------------------------------------------------------------------------- the table

CASES = [
    # ---- export / merge: data loss
    Case(
        "export-over-current-folder",
        ["export", "adapter", ".", "--format", "hub", "--overwrite"],
        ["current folder"],
        setup=_all(ADAPTER, _write("keep.txt", "mine")),
        kept={"keep.txt": "mine"},
    ),
    Case(
        "export-over-its-own-run-folder",
        ["export", "run/adapter", "run", "--format", "hub", "--overwrite"],
        ["input of this command"],
        setup=_all(lambda r, mp: _adapter(r / "run"), _write("run/checkpoints/x", "ckpt")),
        kept={"run/checkpoints/x": "ckpt"},
    ),
    Case(
        "export-over-a-folder-samtune-did-not-write",
        ["export", "adapter", "theirs", "--format", "hf", "--overwrite"],
        ["samtune did not write"],
        setup=_all(ADAPTER, _write("theirs/a.txt", "mine")),
        kept={"theirs/a.txt": "mine"},
    ),
    Case(
        "export-pth-over-a-file-samtune-did-not-write",
        ["export", "adapter", "theirs.pth", "-f", "segment-anything", "--overwrite"],
        ["did not write"],
        setup=_all(ADAPTER, _write("theirs.pth", "mine")),
        kept={"theirs.pth": "mine"},
    ),
    Case(
        "export-to-a-non-empty-folder",
        ["export", "adapter", "out"],
        ["not empty", "--overwrite"],
        setup=_all(ADAPTER, _write("out/a.txt", "mine")),
        kept={"out/a.txt": "mine"},
    ),
    Case(
        "export-output-is-a-file",
        ["export", "adapter", "out", "--format", "hf"],
        ["a file of that name exists"],
        setup=_all(ADAPTER, _write("out", "mine")),
        kept={"out": "mine"},
    ),
    Case(
        "export-output-under-a-file",
        ["export", "adapter", "f/out", "--format", "hub"],
        ["is a file"],
        setup=_all(ADAPTER, _write("f", "mine")),
        kept={"f": "mine"},
    ),
    Case(
        "export-output-folder-read-only",
        ["export", "adapter", "ro/out", "--format", "hub"],
        ["cannot write", "Permission denied"],
        setup=_all(ADAPTER, _unwritable),
        absent=["ro/out"],
    ),
    Case(
        "export-unknown-format",
        ["export", "adapter", "out", "--format", "tflite"],
        ["unknown export format", "tflite"],
        setup=ADAPTER,
        absent=["out"],
    ),
    Case(
        "export-metrics-missing",
        ["export", "adapter", "out", "--metrics", "nope.json"],
        ["nope.json", "does not exist"],
        setup=ADAPTER,
        absent=["out"],
    ),
    Case(
        "export-metrics-not-json",
        ["export", "adapter", "out", "--metrics", "m.json"],
        ["neither Markdown", "valid JSON"],
        setup=_all(ADAPTER, _write("m.json", "{oops")),
        absent=["out"],
    ),
    Case(
        "export-metrics-without-metrics",
        ["export", "adapter", "out", "--metrics", "m.json"],
        ["no metrics samtune recognises"],
        setup=_all(ADAPTER, _write("m.json", json.dumps({"note": "hello"}))),
        absent=["out"],
    ),
    Case(
        "merge-bottleneck-adapter",
        ["merge", "adapter", "out"],
        ["cannot"],
        setup=lambda r, mp: _bottleneck(r),
        absent=["out"],
    ),
    # ---- adapters: malformed, wrong, missing
    Case(
        "adapter-metadata-not-json",
        ["export", "adapter", "out"],
        ["strategy_config", "not valid JSON"],
        setup=lambda r, mp: _adapter(r, metadata={"strategy_config": "{r: 4"}),
        absent=["out"],
    ),
    Case(
        "adapter-nan-tensors",
        ["export", "adapter", "out"],
        ["NaN"],
        setup=lambda r, mp: _adapter(r, edit=_nan),
        absent=["out"],
    ),
    Case(
        "adapter-not-safetensors",
        ["export", "adapter", "out"],
        ["not a readable safetensors file"],
        setup=_write("adapter/adapter.safetensors", "garbage"),
        absent=["out"],
    ),
    Case(
        "adapter-folder-without-file",
        ["export", "adapter", "out"],
        ["has no adapter.safetensors"],
        setup=_write("adapter/notes.txt", "x"),
        absent=["out"],
    ),
    Case(
        "adapter-typo-in-local-path",
        ["export", "runs/no-such-adapter", "out"],
        ["does not exist"],
        setup=_write("runs/other.txt", "x"),
        absent=["out"],
    ),
    Case(
        "adapter-bare-name-is-not-a-hub-id",
        ["export", "nonexist", "out"],
        ["'nonexist' does not exist"],
        absent=["out"],
    ),
    Case(
        "adapter-for-another-base",
        ["export", "adapter", "out", "--base", "demo"],
        ["was trained on base", "fingerprint"],
        setup=ADAPTER,
        absent=["out"],
    ),
    # ---- models
    Case("model-path-missing", ["info", "./nope.pth"], ["does not exist"]),
    Case(
        "model-pth-corrupt",
        ["info", "bad.pth"],
        ["not a readable PyTorch checkpoint"],
        setup=_write("bad.pth", "garbage"),
    ),
    Case(
        "model-folder-without-config",
        ["info", "folder"],
        ["has no config.json"],
        setup=_write("folder/x.txt", "x"),
    ),
    Case(
        "model-decoder-heads-on-a-preset",
        ["info", "demo", "--decoder-heads", "4"],
        ["only apply to Meta"],
    ),
    Case("model-decoder-heads-zero", ["info", "demo", "--decoder-heads", "0"], ["--decoder-heads"]),
    Case(
        "convert-unknown-format",
        ["convert", "tiny", "out", "--to", "onnx2"],
        ["unknown format"],
        absent=["out"],
    ),
    Case(
        "convert-pth-over-a-file-samtune-did-not-write",
        ["convert", "tiny", "theirs.pth", "--to", "segment-anything", "--overwrite"],
        ["did not write"],
        setup=_write("theirs.pth", "mine"),
        kept={"theirs.pth": "mine"},
    ),
    # ---- fit and eval options (tests/test_config_validation.py has every field)
    Case(
        "fit-yaml-seed-not-an-integer",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["seed", "an integer", "'abc'"],
        setup=_write("c.yaml", 'seed: "abc"\n'),
        absent=["run"],
    ),
    Case(
        "fit-yaml-focal-weight-not-a-number",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["focal_weight", "a number", "'high'"],
        setup=_write("c.yaml", 'focal_weight: "high"\n'),
        absent=["run"],
    ),
    Case(
        "fit-yaml-epochs-bool",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["epochs", "an integer", "True"],
        setup=_write("c.yaml", "epochs: true\n"),
        absent=["run"],
    ),
    Case("fit-lr-nan", ["fit", "--lr", "nan", "-o", "run"], ["lr", "finite"], absent=["run"]),
    Case(
        "fit-unknown-dataset",
        ["fit", "--strategy", "lora", "--dataset", "nope", "-o", "run"],
        ["unknown dataset 'nope'", "demo"],
        absent=["run"],
    ),
    Case(
        "fit-unknown-strategy",
        ["fit", "--strategy", "nope", "--dataset", "demo", "-o", "run"],
        ["'nope'", "lora"],
        absent=["run"],
    ),
    Case(
        "fit-config-is-a-folder",
        ["fit", "-c", "cfg", "-o", "run"],
        ["cfg", "is a folder"],
        setup=_write("cfg/x", ""),
        absent=["run"],
    ),
    Case(
        "eval-max-images-negative",
        ["eval", "-m", "tiny", "--max-images", "-3", "--split", "test", "-o", "rep"],
        ["max_images", "-3"],
        absent=["rep"],
    ),
    Case(
        "eval-yaml-prompt-batch-not-an-integer",
        ["eval", "-m", "tiny", "-c", "e.yaml", "--split", "test", "-o", "rep"],
        ["prompt_batch", "an integer", "'lots'"],
        setup=_write("e.yaml", 'prompt_batch: "lots"\n'),
        absent=["rep"],
    ),
    Case(
        "eval-unknown-dataset",
        ["eval", "-m", "tiny", "--dataset", "nope", "-o", "rep"],
        ["unknown dataset 'nope'"],
        absent=["rep"],
    ),
    # ---- the command line itself
    Case("cli-unknown-command", ["fitt"], ["No such command", "fit"]),
    Case("cli-not-an-integer", ["fit", "--epochs", "abc"], ["--epochs", "integer"]),
    Case("cli-extra-argument", ["strategies", "lora"], ["Too many arguments"]),
    # ---- predict (samtune/segment/prompted.py, tests/test_predict.py has more)
    Case(
        "predict-box-outside-image",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--boxes", "100,10,130,50"],
        ["scene.png", "120x90"],
        setup=lambda r, mp: _image(r),
        absent=["o"],
    ),
    Case(
        "predict-point-outside-image",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--points", "500,10"],
        ["scene.png", "outside", "120x90"],
        setup=lambda r, mp: _image(r),
        absent=["o"],
    ),
    Case(
        "predict-inverted-box-in-prompts-file",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--prompts", "p.json"],
        ["scene.png", "prompt 1", "x1 <= x0"],
        setup=_all(
            lambda r, mp: _image(r),
            _write("p.json", json.dumps({"boxes": [[1, 2, 3, 4], [50, 10, 20, 40]]})),
        ),
        absent=["o"],
    ),
    Case(
        "predict-label-7",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--prompts", "p.json"],
        ["label 7"],
        setup=_all(
            lambda r, mp: _image(r),
            _write("p.json", json.dumps({"points": [[[5, 5]]], "labels": [[7]]})),
        ),
        absent=["o"],
    ),
    Case(
        "predict-later-image-bad-writes-nothing",
        ["predict", "scene.png", "small.png", "-m", "tiny", "-o", "o", "--boxes", "10,10,100,80"],
        ["small.png", "50x40"],
        setup=lambda r, mp: (_image(r), _image(r, "small.png", (50, 40))),
        absent=["o"],
    ),
    Case(
        "predict-same-output-name",
        ["predict", "dup.png", "dup.jpg", "-m", "tiny", "-o", "o", "--boxes", "1,2,30,40"],
        ["dup.png", "dup.jpg"],
        setup=lambda r, mp: (_image(r, "dup.png"), _image(r, "dup.jpg")),
        absent=["o"],
    ),
    Case(
        "predict-corrupt-image",
        ["predict", "broken.png", "-m", "tiny", "-o", "o", "--boxes", "1,2,30,40"],
        ["broken.png", "cannot be read"],
        setup=_write("broken.png", "not a png"),
        absent=["o"],
    ),
]


def _bottleneck(root: Path) -> None:
    import samtune

    model = samtune.load_model("tiny")
    samtune.get_strategy("adapter").apply(model)
    samtune.save_adapter(model, root / "adapter")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_and_its_exit_code(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)


def run_case(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one case of the table; other tables (``test_bad_input_*.py``) call it too."""
    root = tmp_path / "work"
    root.mkdir()
    old = Path.cwd()
    os.chdir(root)
    try:
        if case.setup is not None:
            case.setup(root, monkeypatch)
        before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        result = CliRunner().invoke(app, case.args)
    finally:
        monkeypatch.undo()
        os.chdir(old)
    out = result.output
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert result.exit_code == case.code, out
    assert len(errors) == 1, out
    assert "unexpected" not in out and "Traceback" not in out, out
    for word in case.words:
        assert word in errors[0], (word, errors[0])
    for path in case.absent:
        assert not (root / path).exists(), path
    for path, text in case.kept.items():
        assert (root / path).read_text() == text, path
    after = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert after == before, set(after) ^ set(before)  # nothing written, nothing removed
