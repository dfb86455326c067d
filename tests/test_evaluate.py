"""The evaluation runner: protocols against an independent pipeline, sharding, reports, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port

from samtune.errors import ConfigError, UnknownNameError
from samtune.evaluation import evaluate, format_comparison, parse_protocol

CATEGORIES = {1: "bottle", 2: "can"}

# Fabricated data, shared with the 2-process script below (it is exec'd there too).
FABRICATE = """
import numpy as np
from samtune.data.sample import Sample, masks_to_boxes


class ListDataset:
    def __init__(self, samples, categories, name="fabricated"):
        self.samples, self.categories, self.name = samples, categories, name

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def make_sample(seed, h=72, w=90, n=4, crowd=False, empty=False):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 20), rng.integers(0, w - 20)
        masks[i, y0 : y0 + rng.integers(6, 20), x0 : x0 + rng.integers(6, 20)] = True
        img[masks[i]] = (200, 40 * i, 50)
    iscrowd = np.zeros(n, bool)
    if crowd:
        iscrowd[-1] = True
    if empty:
        masks[0] = False
    return Sample(
        image=img, masks=masks, boxes=masks_to_boxes(masks),
        category_ids=np.arange(n, dtype=np.int64) % 2 + 1, iscrowd=iscrowd,
        instance_ids=np.arange(n, dtype=np.int64) + 100 * seed, image_id=seed,
        file_name=f"{seed}.png",
    )


def make_dataset(n_images=3):
    return ListDataset([make_sample(i) for i in range(n_images)], {1: "bottle", 2: "can"})
"""
_ns: dict = {}
exec(FABRICATE, _ns)
make_sample, make_dataset, ListDataset = _ns["make_sample"], _ns["make_dataset"], _ns["ListDataset"]


def _ious(report):
    return [r["iou"] for r in report.records]


def _coco_iou(pred, gt):
    from pycocotools import mask as mu

    enc = [mu.encode(np.asfortranarray(x.astype(np.uint8))) for x in (pred, gt)]
    return float(mu.iou([enc[0]], [enc[1]], [0])[0, 0])


def test_box_protocol_matches_sam_processor_pipeline(tiny_model):
    """Oracle: HF SamProcessor + full forward + post_process_masks + pycocotools IoU."""
    from transformers import SamImageProcessor, SamProcessor

    sample = make_sample(0)
    size = tiny_model.config.vision_config.image_size
    proc = SamProcessor(
        image_processor=SamImageProcessor(
            size={"longest_edge": size}, pad_size={"height": size, "width": size}
        )
    )
    inputs = proc(
        images=sample.image, input_boxes=[[b.tolist() for b in sample.boxes]], return_tensors="pt"
    )
    with torch.no_grad():
        out = tiny_model(
            pixel_values=inputs["pixel_values"],
            input_boxes=inputs["input_boxes"],
            multimask_output=False,
        )
    masks = proc.post_process_masks(
        out.pred_masks,
        inputs["original_sizes"],
        inputs["reshaped_input_sizes"],
        pad_size={"height": size, "width": size},
    )[0][:, 0].numpy()
    expected = [_coco_iou(p, g) for p, g in zip(masks, sample.masks, strict=True)]

    report = evaluate(tiny_model, ListDataset([sample], CATEGORIES), "box", prompt_batch=3)
    assert [r["instance_id"] for r in report.records] == sample.instance_ids.tolist()
    np.testing.assert_allclose(_ious(report), expected, atol=1e-6, rtol=0)
    assert min(expected) > 0  # a non-degenerate comparison
    np.testing.assert_allclose(
        [r["score"] for r in report.records], out.iou_scores[0, :, 0].numpy(), atol=1e-5
    )
    assert report.metrics["miou"] == pytest.approx(np.mean(expected), abs=1e-9)


def test_prompt_batch_and_training_mode(tiny_model):
    ds = make_dataset(2)
    tiny_model.train()
    one = evaluate(tiny_model, ds, "point", prompt_batch=1)
    assert tiny_model.training  # restored after evaluation
    many = evaluate(tiny_model, ds, "point", prompt_batch=64)
    # Chunking only changes float summation order: a pixel whose logit is within rounding of
    # 0 may flip, nothing more.
    ious_one = [r["intersection"] / max(r["union"], 1) for r in one.records]
    ious_many = [r["intersection"] / max(r["union"], 1) for r in many.records]
    assert ious_one == pytest.approx(ious_many, abs=1e-3)
    assert one.metrics["miou"] == pytest.approx(many.metrics["miou"], abs=1e-4)


def test_point_reports_head_choice_and_oracle(tiny_model):
    report = evaluate(tiny_model, make_dataset(2), "point")
    m = report.metrics
    assert m["num_instances"] == 8
    for r in report.records:
        oracle = r["oracle"]["intersection"] / r["oracle"]["union"]
        assert oracle >= r["iou"] - 1e-12
    assert m["miou_oracle"] >= m["miou"]
    assert m["miou_oracle"] == pytest.approx(m["oracle"]["miou"])
    assert set(m["per_class"]) == {"bottle", "can"}
    assert 0 <= m["semantic_miou"] <= 1
    assert set(m["semantic_per_class"]) == {"background", "bottle", "can"}


def test_clicks_protocol_curves(tiny_model):
    ds = make_dataset(2)
    clicks = evaluate(tiny_model, ds, "clicks:3")
    point = evaluate(tiny_model, ds, "point")
    m = clicks.metrics
    assert all(len(r["ious"]) == 3 for r in clicks.records)
    # click 1 is the point protocol (centre point, IoU head's choice), batched differently
    assert m["miou@1"] == pytest.approx(point.metrics["miou"], abs=1e-6)
    assert m["miou"] == pytest.approx(m["miou@3"])
    assert 1 <= m["noc@85"] <= 3 and 1 <= m["noc@90"] <= 3
    assert m["miou@2"] != m["miou@1"]  # the corrective clicks reach the model


def test_crowd_and_empty_instances_are_skipped(tiny_model):
    ds = ListDataset([make_sample(0, crowd=True), make_sample(1, empty=True)], CATEGORIES)
    report = evaluate(tiny_model, ds, "box")
    assert report.metrics["skipped_crowd"] == 1 and report.metrics["skipped_empty"] == 1
    assert report.metrics["num_instances"] == 6
    assert 3 not in [r["instance_id"] for r in report.records]  # the crowd instance of image 0


def test_jitter_is_seeded_per_image(tiny_model):
    ds = make_dataset(2)
    exact = evaluate(tiny_model, ds, "box")
    a = evaluate(tiny_model, ds, "box", jitter=0.3, seed=1)
    b = evaluate(tiny_model, ds, "box", jitter=0.3, seed=1)
    assert _ious(a) == _ious(b)
    assert _ious(a) != _ious(exact)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("boxes", UnknownNameError, "unknown evaluation protocol 'boxes'"),
        ("clicks:0", ConfigError, "clicks:N"),
        ("clicks:x", ConfigError, "positive"),
    ],
)
def test_bad_protocols(spec, error, match):
    with pytest.raises(error, match=match):
        parse_protocol(spec)


def test_one_grammar_for_protocols_and_training_configs():
    from samtune.prompting import parse_prompt
    from samtune.train.config import FitConfig

    assert (
        parse_protocol("Click:2") == parse_prompt("clicks:2")
        and parse_protocol("box").name == "box"
    )
    # eval_prompt takes every evaluation protocol, stored in canonical form
    assert FitConfig(eval_prompt="Clicks:3").eval_prompt == "clicks:3"
    assert FitConfig(prompt=" Box").prompt == "box"
    with pytest.raises(ConfigError, match="eval_prompt must be one of box, point, clicks:N"):
        FitConfig(eval_prompt="interactive")
    with pytest.raises(ConfigError, match="invalid click protocol 'clicks:0'"):
        FitConfig(eval_prompt="clicks:0")
    with pytest.raises(ConfigError, match="prompt must be one of box, point, interactive"):
        FitConfig(prompt="clicks:3")


def test_bad_options(tiny_model):
    ds = make_dataset(1)
    with pytest.raises(ConfigError, match="box protocol only"):
        evaluate(tiny_model, ds, "point", jitter=0.1)
    with pytest.raises(ConfigError, match="prompt_batch"):
        evaluate(tiny_model, ds, "box", prompt_batch=0)


def test_report_files_and_comparison(tiny_model, tmp_path):
    ds = make_dataset(2)
    base = evaluate(tiny_model, ds, "box", name="base", worst=2)
    other = evaluate(tiny_model, ds, "box", name="other", jitter=0.5)
    paths = base.save(tmp_path)
    saved = json.loads(paths["metrics"].read_text())
    assert saved["metrics"]["miou"] == pytest.approx(base.metrics["miou"])
    assert saved["protocol"] == "box"
    assert len(paths["records"].read_text().splitlines()) == base.metrics["num_instances"]
    assert "| mIoU |" in paths["markdown"].read_text()
    assert len(base.worst) == 2 and base.worst[0]["iou"] == min(_ious(base))

    table = format_comparison({"base": base, "other": other})
    delta = 100 * (other.metrics["miou"] - base.metrics["miou"])
    row = next(line for line in table.splitlines() if line.startswith("| other"))
    assert f"{100 * other.metrics['miou']:.2f} ({delta:+.2f})" in row
    assert "| bottle |" in table
    with pytest.raises(ConfigError, match="baseline"):
        format_comparison({"base": base}, baseline="nope")


DIST_SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from accelerate import Accelerator
from samtune.models import load_model
from samtune.evaluation import evaluate
exec(open(sys.argv[2]).read())
acc = Accelerator(cpu=True)
model = load_model("tiny")
out = {}
for prompt in ("box", "point", "clicks:2"):
    r = evaluate(model, make_dataset(3), prompt, accelerator=acc, prompt_batch=3)
    out[prompt] = {"metrics": r.metrics, "records": r.records, "images": r.images}
if acc.is_main_process:
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh)
acc.wait_for_everyone()
if torch.distributed.is_initialized():  # a clean gloo shutdown: no abort at interpreter exit
    torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_two_processes_give_exactly_the_numbers_of_one(tmp_path):
    """3 images over 2 processes: one image is padded twice and must count once."""
    script = tmp_path / "dist_eval.py"
    script.write_text(DIST_SCRIPT)
    fabricate = tmp_path / "fabricate.py"
    fabricate.write_text(textwrap.dedent(FABRICATE))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    results = {}
    for n in (1, 2):
        out = tmp_path / f"out{n}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
               "--master_port", str(free_port()), str(script), str(out),
               str(fabricate)]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[n] = json.loads(out.read_text())
    for prompt in ("box", "point", "clicks:2"):
        assert results[2][prompt]["records"] == results[1][prompt]["records"]
        assert results[2][prompt]["metrics"] == results[1][prompt]["metrics"]
        assert results[2][prompt]["images"] == results[1][prompt]["images"]
        assert results[1][prompt]["metrics"]["num_images"] == 3
        assert results[1][prompt]["metrics"]["num_instances"] == 12


# --------------------------------------------------------------------------- CLI


def _train_adapter(strategy: str, directory, root, steps: int = 3, lr: float = 3e-4):
    """A few manual optimizer steps with a strategy, saved as an adapter (fit is tested elsewhere)."""
    import torch.nn.functional as F

    from samtune.adapters import save_adapter
    from samtune.data import load_dataset, preprocess_image
    from samtune.models.identity import preprocess_config
    from samtune.models.loading import load_model
    from samtune.strategies import get_strategy

    torch.manual_seed(0)
    model = get_strategy(strategy).apply(load_model("tiny"))
    model.train()
    cfg = preprocess_config(model)
    train = load_dataset("demo", "train", root)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        s = train[step % 2]
        pixel_values, geom = preprocess_image(s.image, cfg)
        boxes = torch.as_tensor(geom.coords_to_model(s.boxes))[None]
        logits = model(pixel_values=pixel_values[None], input_boxes=boxes, multimask_output=False)
        logits = logits.pred_masks[0, :, 0]
        target = geom.masks_to_model(s.masks, size=logits.shape[-1]).float()
        loss = F.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_adapter(model, directory)
    return model


@pytest.mark.slow
def test_cli_compare_base_and_adapters_on_demo(tmp_path):
    """``samtune eval --adapter A --adapter B --compare``: numbers equal in-memory evaluation."""
    from typer.testing import CliRunner

    from samtune.cli import app
    from samtune.data import load_dataset
    from samtune.models.loading import load_model

    root = tmp_path / "demo"
    tuned = {
        name: _train_adapter(name, tmp_path / name, root, lr=lr)
        for name, lr in (("decoder", 3e-4), ("full", 1e-3))
    }
    val = load_dataset("demo", "val", root)
    for prompt in ("box", "point"):
        out = tmp_path / f"cmp-{prompt}"
        args = ["eval", "-m", "tiny", "-d", "demo", "--root", str(root), "--max-images", "3",
                "-p", prompt, "--compare", "-a", str(tmp_path / "decoder"),
                "-a", str(tmp_path / "full"), "-o", str(out), "--worst", "1"]  # fmt: skip
        if prompt == "point":  # figures once is enough: they are the slow part
            args.append("--no-plots")
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        rows = [line for line in res.output.splitlines() if line.startswith("| ")]
        assert [r.split("|")[1].strip() for r in rows[:4]] == [
            "model", "tiny (zero-shot)", "decoder", "full",
        ]  # fmt: skip
        saved = json.loads((out / "comparison.json").read_text())
        expected = {
            "tiny (zero-shot)": evaluate(load_model("tiny"), val, prompt, max_images=3),
            **{n: evaluate(m, val, prompt, max_images=3) for n, m in tuned.items()},
        }
        for label, report in expected.items():
            assert saved[label]["metrics"]["miou"] == pytest.approx(
                report.metrics["miou"], abs=1e-12
            )
        base, dec = (
            expected["tiny (zero-shot)"].metrics["miou"],
            expected["decoder"].metrics["miou"],
        )
        assert dec != base  # the adapter was applied
        assert f"{100 * dec:.2f} ({100 * (dec - base):+.2f})" in rows[2]
        assert (out / "comparison.md").read_text().startswith("Protocol")
        if prompt == "point":
            assert not list(out.glob("*.png"))
            continue
        assert (out / "per_class_iou.png").stat().st_size > 1000
        assert (out / "1-decoder" / "metrics.json").is_file()
        assert len(list((out / "0-tiny" / "worst").glob("*.png"))) == 1


@pytest.mark.slow  # a full CLI evaluation twice; the merge rules are unit-tested in test_config_validation
def test_cli_config_file_and_overrides(tmp_path):
    from typer.testing import CliRunner

    from samtune.cli import app

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"model: tiny\ndataset: demo\nroot: {tmp_path / 'demo'}\nmax-images: 2\nprompt: point\n"
    )
    res = CliRunner().invoke(app, ["eval", "--config", str(cfg), "--json", "-p", "box"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["tiny"]["protocol"] == "box"  # the flag beats the file
    assert out["tiny"]["metrics"]["num_images"] == 2  # the file beats the default


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["-p", "boxes"], "unknown evaluation protocol 'boxes'"),
        (["-p", "clicks:0"], "clicks:N"),
        (["-m", "./no-such-model"], "does not exist"),
        (["-a", "./no-such-adapter"], "no-such-adapter"),
        (["-d", "nope"], "nope"),
        (["--compare"], "--compare needs at least one --adapter"),
        (["--config", "missing.yaml"], "missing.yaml"),
        (["--config", "{bad}"], "unknown option 'prompts'"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path, args, match):
    from typer.testing import CliRunner

    from samtune.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: box\n")
    args = [a.replace("{bad}", str(bad)) for a in args]
    res = CliRunner().invoke(app, ["eval", "--root", str(tmp_path / "demo"), "-m", "tiny", *args])
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert "Traceback" not in res.output
