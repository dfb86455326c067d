"""``samtune suite``: the leaderboard comes from the cells' files, reruns skip and resume, bad
specs fail before anything is written, and the shipped specs are valid.

One small suite (tiny model, 2 strategies x 1 demo dataset x 2 protocols, 2 training steps)
is run once for the module; the other tests reuse or copy its folder.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from samtune.cli import app
from samtune.errors import ConfigError
from samtune.suite.leaderboard import build_leaderboard, format_leaderboard
from samtune.suite.plan import plan_suite
from samtune.suite.run import run_suite
from samtune.suite.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "examples" / "suites"
BUILT_INS = {"full", "decoder", "lora", "adapter"}


def small_spec(data_root: Path) -> dict:
    return {
        "name": "test suite",
        "models": ["tiny"],
        "strategies": ["decoder", {"name": "lora", "options": {"rank": 2}}],
        "datasets": [
            {
                "name": "demo",
                "root": str(data_root),
                "options": {"counts": {"train": 2, "val": 1, "test": 2}},
            }
        ],
        "splits": {"val": None},
        "protocols": ["box", "point"],
        "seeds": [0],
        # dice only: the tiny model starts from random weights (see docs/training.md)
        "train": {
            "max_steps": 2,
            "batch_size": 1,
            "max_instances": 2,
            "focal_weight": 0,
            "checkpoint_every": 1,
            "log_with": None,
        },
    }


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is much faster than two on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def suite(tmp_path_factory, one_thread):
    """The reference suite, run once through the command line."""
    base = tmp_path_factory.mktemp("suite")
    spec = small_spec(base / "demo-data")
    spec_file = base / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = base / "out"
    result = CliRunner().invoke(app, ["suite", str(spec_file), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output[-3000:]
    return {"spec": spec, "spec_file": spec_file, "out": out, "output": result.output}


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def stamps(out: Path) -> dict[str, int]:
    names = ("cell.json", "train.json", "zero-shot.json", "adapter.safetensors", "metrics.json")
    return {str(p): p.stat().st_mtime_ns for p in out.rglob("*") if p.name in names}


def without_times(markdown: str) -> list[str]:
    """The leaderboard's lines without the train-time column and the note on resumed runs."""
    lines = markdown.split("\n\n\\*")[0].splitlines()
    return [x.rsplit(" | ", 1)[0] if x.startswith("|") else x for x in lines]


def comparable(board: dict) -> dict:
    """The leaderboard without what differs between any two runs (wall times)."""
    board = json.loads(json.dumps(board))
    for s in board["strategies"]:
        s.pop("train_seconds"), s.pop("train_seconds_mean"), s.pop("resumed")
    return board


# --------------------------------------------------------------------------- the leaderboard


def test_suite_prints_and_writes_the_leaderboard(suite):
    out = suite["out"]
    markdown = (out / "leaderboard.md").read_text()
    assert markdown in suite["output"]  # the command prints it
    assert "| zero-shot |" in markdown and "| decoder |" in markdown and "| lora |" in markdown
    assert "| demo box | demo point |" in markdown
    assert "2 of 2 cells done" in markdown
    assert (out / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    board = read(out / "leaderboard.json")
    assert board["cells"] == {"total": 2, "done": 2}
    assert len(board["rows"]) == 2 * 2  # strategies x (dataset x protocol)
    for folder in ("runs/tiny/demo/decoder/seed-0", "runs/tiny/demo/lora/seed-0"):
        for name in (
            "cell.json",
            "train.json",
            "adapter/adapter.safetensors",
            "config.yaml",
            "eval/box/metrics.json",
            "eval/point/metrics.json",
        ):
            assert (out / folder / name).is_file(), f"{folder}/{name}"
    assert (out / "zero-shot/tiny/demo/box/zero-shot.json").is_file()
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


def test_every_leaderboard_number_equals_its_cells_files(suite):
    out = suite["out"]
    board = read(out / "leaderboard.json")
    zero = {}
    for z in board["zero_shot"]:
        record = read(out / z["file"])
        report = read(out / Path(z["file"]).parent / "metrics.json")["metrics"]
        assert z["miou"] == record["miou"] == record["metrics"]["miou"] == report["miou"]
        zero[(z["dataset"], z["protocol"])] = z["miou"]
    expected_md = {}
    for row in board["rows"]:
        assert row["seeds"] == [0] and len(row["runs"]) == 1
        cell = read(out / row["runs"][0] / "cell.json")
        protocol = row["protocol"]
        entry = cell["test"][protocol]
        report = read(out / row["runs"][0] / entry["file"])["metrics"]
        assert row["miou"] == [entry["miou"]] == [report["miou"]] == [entry["metrics"]["miou"]]
        assert cell["zero_shot"][protocol] == zero[(row["dataset"], protocol)]
        assert row["gain"] == [entry["miou"] - cell["zero_shot"][protocol]]
        assert row["miou_mean"] == entry["miou"] and row["miou_std"] is None
        text = f"{100 * entry['miou']:.2f} ({100 * (entry['miou'] - zero[(row['dataset'], protocol)]):+.2f})"
        expected_md.setdefault(row["strategy"], []).append(text)
    for s in board["strategies"]:
        cell = read(out / s["runs"][0] / "cell.json")["training"]
        adapter = out / s["runs"][0] / "adapter" / "adapter.safetensors"
        assert s["trainable_params"] == [cell["trainable_params"]]
        assert s["adapter_bytes"] == [cell["adapter_bytes"]] == [adapter.stat().st_size]
        assert s["train_seconds"] == [cell["seconds"]] == [s["train_seconds_mean"]]
        expected_md[s["strategy"]].append(f"{cell['trainable_params']:,}")
    rows = {
        line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")
        for line in (out / "leaderboard.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| strategy")
    }
    for z_key, text in zip(
        [("demo", "box"), ("demo", "point")], rows["zero-shot"][1:3], strict=True
    ):
        assert text == f"{100 * zero[z_key]:.2f}"
    for strategy, cells in expected_md.items():
        assert rows[strategy][1:4] == cells, rows[strategy]


def test_rerun_skips_finished_cells(suite):
    out = suite["out"]
    before, board = stamps(out), read(out / "leaderboard.json")
    events = []
    result = run_suite(suite["spec_file"], out, on_event=events.append, quiet=True)
    kinds = [e.kind for e in events]
    assert kinds == ["zero-shot-cached", "zero-shot-cached", "skip", "skip"], kinds
    assert (result.ran, result.skipped, result.pending) == (0, 2, 0)
    assert stamps(out) == before  # no cell, training, evaluation or adapter file rewritten
    assert read(out / "leaderboard.json") == board


def test_interrupted_suite_completes_like_an_uninterrupted_one(suite, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(suite["out"], out)
    # the decoder cell never started; the lora cell stopped after its first step
    shutil.rmtree(out / "runs/tiny/demo/decoder")
    lora = out / "runs/tiny/demo/lora/seed-0"
    for name in ("cell.json", "train.json", "adapter", "checkpoints/step-000002", "eval"):
        path = lora / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert [p.status for p in plan_suite(suite["spec_file"], out)] == ["train", "resume"]

    events = []
    first = run_suite(suite["spec_file"], out, max_cells=1, on_event=events.append, quiet=True)
    assert [e.kind for e in events][2:] == ["train", "done", "stop"]
    assert (first.ran, first.pending) == (1, 1) and not first.complete
    assert "pending" in first.markdown and "1 of 2 cells done" in first.markdown

    events.clear()
    second = run_suite(suite["spec_file"], out, on_event=events.append, quiet=True)
    assert [e.kind for e in events][2:] == ["skip", "resume", "done"]
    assert read(lora / "train.json")["resumed_from_step"] == 1
    assert second.complete
    assert comparable(second.leaderboard) == comparable(read(suite["out"] / "leaderboard.json"))
    assert "\\* some runs were resumed" in second.markdown
    assert without_times(second.markdown) == without_times(
        (suite["out"] / "leaderboard.md").read_text()
    )


def test_trained_cells_are_evaluated_from_their_adapter(suite, tmp_path):
    """A cell stopped during evaluation, and a protocol added to the spec: no training, and
    only the missing evaluations run (from the saved adapter, with the same numbers)."""
    out = tmp_path / "out"
    shutil.copytree(suite["out"], out)
    (out / "runs/tiny/demo/decoder/seed-0/cell.json").unlink()
    lora_box = out / "runs/tiny/demo/lora/seed-0/eval/box/metrics.json"
    lora_box_written = lora_box.stat().st_mtime_ns
    spec = {**suite["spec"], "protocols": ["box", "point", "clicks:2"]}
    events = []
    result = run_suite(spec, out, on_event=events.append, quiet=True)
    kinds = [e.kind for e in events]
    assert kinds == ["zero-shot-cached", "zero-shot-cached", "zero-shot"] + ["evaluate", "done"] * 2
    assert lora_box.stat().st_mtime_ns == lora_box_written
    reference = {
        (r["strategy"], r["protocol"]): r for r in read(suite["out"] / "leaderboard.json")["rows"]
    }
    for row in result.leaderboard["rows"]:
        if row["protocol"] != "clicks:2":
            assert row["miou"] == reference[(row["strategy"], row["protocol"])]["miou"]
    assert "| demo box | demo point | demo clicks:2 |" in result.markdown


def test_changed_settings_are_refused_not_mixed(suite, tmp_path):
    spec = {**suite["spec"], "train": {**suite["spec"]["train"], "lr": 1e-3}}
    before = stamps(suite["out"])
    with pytest.raises(ConfigError, match=r"other settings \(lr: "):
        run_suite(spec, suite["out"])
    assert stamps(suite["out"]) == before


def test_mean_and_spread_over_seeds(tmp_path):
    """Several seeds: the cell shows mean ± sample standard deviation, from the records."""
    spec = load_spec(
        {"models": ["tiny"], "strategies": ["decoder"], "datasets": ["demo"], "seeds": [0, 1, 2]}
    )
    mious, zero = [0.50, 0.56, 0.59], 0.40
    zs = tmp_path / "zero-shot/tiny/demo/box/zero-shot.json"
    zs.parent.mkdir(parents=True)
    zs.write_text(json.dumps({"format": 1, "miou": zero}))
    for seed, miou in enumerate(mious):
        folder = tmp_path / f"runs/tiny/demo/decoder/seed-{seed}"
        folder.mkdir(parents=True)
        training = {
            "trainable_params": 10,
            "adapter_bytes": 2048,
            "seconds": 1.0 + seed,
            "resumed_from_step": None,
        }
        record = {
            "format": 1,
            "test": {"box": {"miou": miou}},
            "zero_shot": {"box": zero},
            "training": training,
        }
        (folder / "cell.json").write_text(json.dumps(record))
    board = build_leaderboard(spec, tmp_path)
    (row,) = board["rows"]
    assert row["miou_mean"] == pytest.approx(statistics.fmean(mious))
    assert row["miou_std"] == pytest.approx(statistics.stdev(mious))
    assert row["gain_mean"] == pytest.approx(statistics.fmean(mious) - zero)
    assert board["strategies"][0]["train_seconds_mean"] == pytest.approx(2.0)
    line = next(x for x in format_leaderboard(board).splitlines() if x.startswith("| decoder"))
    assert "| 55.00 ± 4.58 (+15.00) | 10 | 2.0 KiB | 2.0 s |" in line
    # a missing seed is said, not hidden
    (tmp_path / "runs/tiny/demo/decoder/seed-2/cell.json").unlink()
    assert "[2/3 seeds]" in format_leaderboard(build_leaderboard(spec, tmp_path))


# --------------------------------------------------------------------------- bad specs


BAD_SPECS = {
    "unknown strategy": (
        {"strategies": ["lorax"]},
        "strategies[0]: strategy 'lorax' is not installed",
    ),
    "unknown strategy option": (
        {"strategies": [{"name": "lora", "options": {"r": 8}}]},
        "strategies[0]: strategy 'lora' has no option 'r'",
    ),
    "unknown dataset": ({"datasets": ["trashcann"]}, "unknown dataset 'trashcann'"),
    "unknown split": ({"splits": {"test": "testing"}}, "has no split 'testing'"),
    "unknown protocol": (
        {"protocols": ["box", "boxes"]},
        "protocols[1]: unknown evaluation protocol",
    ),
    "bad clicks": ({"protocols": ["clicks:0"]}, "protocols[0]: invalid click protocol"),
    "unknown top-level key": ({"epochs": 3}, "top level: unknown key(s) 'epochs'"),
    "unknown entry key": (
        {"strategies": [{"name": "lora", "rank": 8}]},
        "strategies[0]: unknown key(s) 'rank'",
    ),
    "unknown training option": ({"train": {"epoch": 3}}, "train: unknown training option(s) epoch"),
    "unknown eval key": ({"eval": {"jitter": 0.1}}, "eval: unknown key(s) 'jitter'"),
    "reserved training option": (
        {"train": {"seed": 3}},
        "train.seed is set by the suite; use seeds",
    ),
    "wrong type: seeds": ({"seeds": ["zero"]}, "seeds must be"),
    "wrong type: training option": ({"train": {"max_steps": "ten"}}, "max_steps must be"),
    "wrong type: strategies": ({"strategies": 8}, "strategies must be a non-empty list"),
    "wrong type: options": (
        {"strategies": [{"name": "lora", "options": [8]}]},
        "strategies[0].options must be a mapping",
    ),
    "duplicate label": ({"strategies": ["lora", "lora"]}, "strategies[1]: label 'lora' is also"),
    "missing key": ({"models": None}, "missing 'models'"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_exits_2_before_anything_is_written(case, tmp_path):
    change, message = BAD_SPECS[case]
    spec = {"models": ["tiny"], "strategies": ["decoder"], "datasets": ["demo"], **change}
    spec = {k: v for k, v in spec.items() if v is not None}
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["suite", str(spec_file), "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: suite spec '{spec_file}': "), lines
    assert message in lines[0], lines[0]
    assert "unexpected" not in lines[0]
    assert not out.exists()


def test_missing_dataset_files_exit_2_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMTUNE_DATA", str(tmp_path / "no-data"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["suite", str(SPECS / "waste-vit-b.yaml"), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "samtune data download trashcan" in result.output
    assert not out.exists()


# --------------------------------------------------------------------------- shipped specs


def test_shipped_specs_are_valid():
    demo = load_spec(SPECS / "demo.yaml")
    assert [m.source for m in demo.models] == ["demo"]
    assert {s.name for s in demo.strategies} == BUILT_INS
    assert [d.name for d in demo.datasets] == ["demo"]

    waste = load_spec(SPECS / "waste-vit-b.yaml")
    assert [m.source for m in waste.models] == ["facebook/sam-vit-base"]
    assert {s.name for s in waste.strategies} == BUILT_INS
    assert {d.name for d in waste.datasets} == {"trashcan", "zerowaste", "taco"}

    paper = load_spec(SPECS / "dont-waste-sam.yaml")
    assert [m.source for m in paper.models] == ["facebook/sam-vit-huge"]
    assert [(s.name, s.label) for s in paper.strategies] == [
        ("full", "full"),
        ("decoder", "lightning-sam"),
    ]
    assert {d.name for d in paper.datasets} == {"trashcan", "zerowaste", "taco"}
    assert paper.protocols == ("box",)


def test_check_prints_the_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["suite", str(SPECS / "demo.yaml"), "-o", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "4 cells, 4 to run" in result.output
    assert not out.exists()
