"""``samtune suite`` with the ``text`` protocol: SAM 3 cells train by name, are scored by
class-aware AP, semantic mIoU and cgF1, and get their own leaderboard table, whose every
number equals the runs' files and ``samtune.evaluate``'s.

One tiny suite (``tiny-sam3``, lora, 4 demo images, 2 training steps) runs once for the module.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from samtune.cli import app
from samtune.errors import ConfigError
from samtune.suite.leaderboard import build_leaderboard, format_leaderboard
from samtune.suite.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "examples" / "suites"
COUNTS = {"train": 2, "val": 1, "test": 2}
DEMO_PHRASES = {"1": "bottle", "2": "can", "3": "piece of cardboard", "4": "plastic bag"}


def text_spec(data_root: Path) -> dict:
    return {
        "name": "text suite",
        "models": ["tiny-sam3"],
        "strategies": [{"name": "lora", "options": {"rank": 2}}],
        "datasets": [{"name": "demo", "root": str(data_root), "options": {"counts": COUNTS}}],
        "splits": {"val": None},
        "protocols": ["text"],
        "seeds": [0],
        # a high rate: two steps move the scores, so base and adapter can be told apart
        "train": {
            "max_steps": 2,
            "batch_size": 1,
            "lr": 0.01,
            "warmup_steps": 0,
            "log_with": None,
        },  # fmt: skip
    }


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a busy 2-core machine
    base = tmp_path_factory.mktemp("text-suite")
    spec = text_spec(base / "demo-data")
    spec_file = base / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = base / "out"
    result = CliRunner().invoke(app, ["suite", str(spec_file), "-o", str(out)])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output[-3000:]
    return {"spec": spec, "out": out, "output": result.output}


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_text_cell_trains_by_name_and_is_scored_class_aware(suite):
    out = suite["out"]
    run = out / "runs/tiny-sam3/demo/lora/seed-0"
    assert yaml.safe_load((run / "config.yaml").read_text())["prompt"] == "text"
    cell = read(run / "cell.json")
    assert list(cell["test"]) == ["text"]
    assert {"ap", "semantic_miou", "cgf1"} <= set(cell["test"]["text"])
    assert "miou" not in cell["test"]["text"]
    # evaluated by the phrases it trained with (the demo recipe's prompt map)
    metrics = read(run / "eval/text/metrics.json")
    names = {"1": "bottle", "2": "can", "3": "cardboard", "4": "bag"}
    assert set(metrics["metrics"]["per_class"]) == set(names.values())  # scored per category
    assert metrics["options"]["phrases"] == {names[k]: v for k, v in DEMO_PHRASES.items()}
    zero = read(out / "zero-shot/tiny-sam3/demo/text/zero-shot.json")
    assert zero["settings"]["phrases"] == DEMO_PHRASES
    assert "[suite] zero-shot tiny-sam3 on demo, text: AP " in suite["output"]
    assert "done, test text AP " in suite["output"]


def test_text_leaderboard_equals_the_runs_files(suite):
    out = suite["out"]
    board = read(out / "leaderboard.json")
    assert board["rows"] == [] and board["zero_shot"] == []  # no instance-mIoU table
    (zero,) = board["text_zero_shot"]
    report = read(out / zero["file"]).get("metrics")
    zero_file = read(out / Path(zero["file"]).parent / "metrics.json")["metrics"]
    (row,) = board["text_rows"]
    cell_dir = out / row["runs"][0]
    cell = read(cell_dir / "cell.json")
    fine = read(cell_dir / cell["test"]["text"]["file"])["metrics"]
    for key in ("ap", "semantic_miou", "cgf1"):
        assert zero[key] == report[key] == zero_file[key] == cell["zero_shot"]["text"][key]
        assert row[key]["values"] == [fine[key]] == [cell["test"]["text"][key]]
        assert row[key]["gain"] == [fine[key] - zero_file[key]]
        assert row[key]["mean"] == fine[key] and row[key]["std"] is None
    assert board["text_ranking"] == [
        {"model": "tiny-sam3", "strategy": "lora", "ap_mean": fine["ap"], "rank": 1}
    ]
    markdown = (out / "leaderboard.md").read_text()
    assert markdown in suite["output"]
    assert "Test-split instance mIoU" not in markdown
    assert "## `tiny-sam3`, text prompts" in markdown
    assert "| rank | strategy | mean AP | demo AP | demo semantic mIoU | demo cgF1 |" in markdown
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    gain = lambda v, z: f"{100 * (v - z):+.2f}"  # noqa: E731
    zero_line = f"|  | zero-shot | {pct(zero_file['ap'])} | {pct(zero_file['ap'])} | "
    zero_line += f"{pct(zero_file['semantic_miou'])} | {pct(zero_file['cgf1'])} |"
    assert zero_line in markdown
    cells = " | ".join(
        f"{pct(fine[k])} ({gain(fine[k], zero_file[k])})" for k in ("ap", "semantic_miou", "cgf1")
    )
    assert f"| 1 | lora | {pct(fine['ap'])} | {cells} |" in markdown
    assert (out / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def scores(results: list[dict]) -> list[tuple]:
    return [(r["image_id"], r["category_id"], round(r["score"], 6)) for r in results]


def test_text_cell_equals_samtune_evaluate(suite):
    """The cell's numbers and predictions are ``samtune.evaluate(model + adapter, test split
    asked by the recipe's phrases, "text")``'s; the base model's and the category names'
    predictions differ (so the comparison can tell them apart)."""
    import samtune
    from samtune.data import load_dataset

    out = suite["out"]
    run = out / "runs/tiny-sam3/demo/lora/seed-0"
    test = load_dataset("demo", "test", suite["spec"]["datasets"][0]["root"], counts=COUNTS)
    names = dict(test.categories)
    model = samtune.load_adapter(samtune.load_model("tiny-sam3"), run / "adapter")
    # samtune.evaluate asks a demo split by the demo recipe's phrases by default
    report = samtune.evaluate(model, test, "text", progress=False)
    phrased = {int(k): v for k, v in DEMO_PHRASES.items()}
    assert report.options["phrases"] == {names[k]: v for k, v in phrased.items()}
    cell = read(run / "cell.json")["test"]["text"]
    for key in ("ap", "semantic_miou", "cgf1"):
        assert report.metrics[key] == pytest.approx(cell[key], abs=1e-12)
    suite_results = scores(json.loads((run / "eval/text/coco_results.json").read_text()))
    assert scores(report.coco["results"]) == suite_results and suite_results
    zero = out / "zero-shot/tiny-sam3/demo/text/coco_results.json"
    assert scores(json.loads(zero.read_text())) != suite_results
    by_names = samtune.evaluate(model, test, "text", progress=False, phrases=names)
    assert scores(by_names.coco["results"]) != suite_results


def test_rerun_skips_the_text_cell(suite):
    from samtune.suite.run import run_suite

    out = suite["out"]
    before = (out / "leaderboard.json").read_text()
    events = []
    result = run_suite(suite["spec"], out, on_event=events.append, quiet=True)
    assert [e.kind for e in events] == ["zero-shot-cached", "skip"]
    assert result.leaderboard == json.loads(before)


def test_text_rows_mean_spread_and_ranking(tmp_path):
    """Seeds: mean ± sample standard deviation of each metric; strategies ranked by mean AP."""
    spec = load_spec(
        {
            "models": ["tiny-sam3"],
            "strategies": ["decoder", "lora"],
            "datasets": ["demo"],
            "protocols": ["text"],
            "seeds": [0, 1],
        }  # fmt: skip
    )
    zero = {"ap": 0.10, "semantic_miou": 0.30, "cgf1": 0.05}
    zs = tmp_path / "zero-shot/tiny-sam3/demo/text/zero-shot.json"
    zs.parent.mkdir(parents=True)
    zs.write_text(json.dumps({"format": 1, **zero}))
    aps = {"decoder": [0.20, 0.24], "lora": [0.30, 0.36]}
    for strategy, values in aps.items():
        for seed, ap in enumerate(values):
            folder = tmp_path / f"runs/tiny-sam3/demo/{strategy}/seed-{seed}"
            folder.mkdir(parents=True)
            test = {"ap": ap, "semantic_miou": 0.5, "cgf1": None}
            training = {"trainable_params": 10, "adapter_bytes": 2048, "seconds": 1.0,
                        "resumed_from_step": None}  # fmt: skip
            record = {"format": 1, "test": {"text": test}, "zero_shot": {"text": zero},
                      "training": training}  # fmt: skip
            (folder / "cell.json").write_text(json.dumps(record))
    board = build_leaderboard(spec, tmp_path)
    rows = {r["strategy"]: r for r in board["text_rows"]}
    assert rows["lora"]["ap"]["mean"] == pytest.approx(statistics.fmean(aps["lora"]))
    assert rows["lora"]["ap"]["std"] == pytest.approx(statistics.stdev(aps["lora"]))
    assert rows["lora"]["ap"]["gain_mean"] == pytest.approx(statistics.fmean(aps["lora"]) - 0.1)
    assert rows["lora"]["cgf1"]["values"] == [] and rows["lora"]["cgf1"]["mean"] is None
    assert [r["strategy"] for r in board["text_ranking"]] == ["lora", "decoder"]
    markdown = format_leaderboard(board)
    lines = [x for x in markdown.splitlines() if x.startswith("| 1 ") or x.startswith("| 2 ")]
    assert lines[0].startswith(
        "| 1 | lora | 33.00 | 33.00 ± 4.24 (+23.00) | 50.00 ± 0.00 (+20.00) | n/a |"
    )
    assert lines[1].startswith("| 2 | decoder | 22.00 |")
    assert "2 of 2 cells done" not in markdown and "4 of 4 cells done" in markdown


# --------------------------------------------------------------------------- spec checks


def test_mixed_protocols_run_per_model_family(tmp_path):
    """``[box, text]``: the SAM 3 model's cells train and evaluate by name, the SAM model's
    with boxes; the prompted leaderboard is unchanged by the text cells beside it."""
    spec = load_spec(
        {
            "models": ["tiny", "tiny-sam3"],
            "strategies": ["lora"],
            "datasets": ["demo"],
            "protocols": ["box", "text"],
        }  # fmt: skip
    )
    tiny, sam3 = spec.models
    assert spec.protocols_for(tiny) == ("box",) and spec.protocols_for(sam3) == ("text",)
    from samtune.suite.spec import fit_config

    prompts = {c.model.label: fit_config(spec, c, tmp_path).prompt for c in spec.cells()}
    assert prompts == {"tiny": "box", "tiny-sam3": "text"}
    board = build_leaderboard(spec, tmp_path)
    assert {z["model"] for z in board["zero_shot"]} == {"tiny"}
    assert {z["model"] for z in board["text_zero_shot"]} == {"tiny-sam3"}
    markdown = format_leaderboard(board)
    assert "| strategy | demo box |" in markdown and "demo text" not in markdown
    assert "## `tiny-sam3`, text prompts" in markdown
    from samtune.suite.leaderboard import plot_gains

    png = plot_gains(board, tmp_path / "gains.png")  # a box panel for tiny, an AP one for SAM 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_plus_exemplar_is_kept(tmp_path):
    spec = load_spec(
        {
            "models": ["tiny-sam3"],
            "strategies": ["lora"],
            "datasets": ["demo"],
            "protocols": ["text"],
            "train": {"prompt": "text+exemplar"},
        }  # fmt: skip
    )
    from samtune.suite.spec import fit_config

    assert fit_config(spec, spec.cells()[0], tmp_path).prompt == "text+exemplar"


BAD = {
    "text on a model without a text encoder": (
        {"models": ["tiny"], "protocols": ["text"]},
        "models[0]: protocol text needs a model with a text encoder",
    ),
    "a SAM 3 model with box only": (
        {"models": ["tiny-sam3"], "protocols": ["box"]},
        "models[0]: 'tiny-sam3' is a SAM 3 model (family sam3), prompted by name",
    ),
    "text that fits no model": (
        {"models": ["tiny"], "protocols": ["box", "text"]},
        "protocols[1]: 'text' fits none of the models",
    ),
    "auto": ({"protocols": ["auto"]}, "protocols[0]: 'auto' (automatic masks"),
    "box training prompt for SAM 3": (
        {"models": ["tiny-sam3"], "protocols": ["text"], "train": {"prompt": "box"}},
        "train.prompt 'box' does not fit the model",
    ),
    "prompt map in a strategy": (
        {
            "models": ["tiny-sam3"],
            "protocols": ["text"],
            "strategies": [{"name": "lora", "train": {"prompt_map": {"can": "tin"}}}],
        },  # fmt: skip
        "strategies[0]: train.prompt_map: give the phrases under the spec's or a dataset's",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_text_spec(case):
    change, message = BAD[case]
    spec = {"models": ["tiny-sam3"], "strategies": ["lora"], "datasets": ["demo"], **change}
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    assert message in str(info.value), str(info.value)


# --------------------------------------------------------------------------- shipped spec


def test_waste_sam3_spec_is_valid():
    waste = load_spec(SPECS / "waste-sam3.yaml")
    assert [m.source for m in waste.models] == ["facebook/sam3"]
    assert waste.protocols == ("text",)
    assert {d.name for d in waste.datasets} == {"trashcan", "zerowaste", "taco"}
    assert {s.name for s in waste.strategies} >= {"lora", "decoder"}
    assert len(waste.seeds) >= 2
    from samtune.suite.spec import fit_config

    for cell in waste.cells():
        config = fit_config(waste, cell, "OUT")
        assert config.prompt == "text" and config.model == "facebook/sam3"
    # each strategy applies to a SAM 3 (tiny-sam3: the same family and module names)
    import samtune

    trainable = {}
    for s in waste.strategies:
        model = samtune.get_strategy(s.name, **s.options).apply(samtune.load_model("tiny-sam3"))
        trainable[s.label] = {n for n, p in model.named_parameters() if p.requires_grad}
    lora_in = lambda label, part: any(part in n and "lora_" in n for n in trainable[label])  # noqa: E731
    assert lora_in("lora", "vision_encoder") and lora_in("lora", "text_encoder")
    assert not lora_in("lora", "detr_encoder") and lora_in("lora-detr", "detr_encoder")
    assert trainable["decoder"] and not lora_in("decoder", "")
    assert len(trainable["full"]) > max(len(v) for k, v in trainable.items() if k != "full")


def test_box_source_reaches_only_the_box_protocol(tmp_path):
    """``eval.box_source: annotation`` with ``[box, point, text]``: the point and text
    evaluations run (they take no box; ``evaluate`` refuses the option for them)."""
    import samtune
    from samtune.suite.run import _Runner

    data = {"name": "demo", "root": str(tmp_path / "data"),
            "options": {"counts": {"train": 1, "val": 1, "test": 1}}}  # fmt: skip
    spec = load_spec(
        {
            "models": ["tiny", "tiny-sam3"],
            "strategies": ["decoder"],
            "datasets": [data],
            "protocols": ["box", "point", "text"],
            "eval": {"box_source": "annotation"},
        }  # fmt: skip
    )
    runner = _Runner(spec, tmp_path / "out", None, quiet=True)
    tiny, sam3 = samtune.load_model("tiny"), samtune.load_model("tiny-sam3")
    for model, protocol in ((tiny, "box"), (tiny, "point"), (sam3, "text")):
        metrics = runner.evaluate(model, spec.datasets[0], protocol, tmp_path / "out" / protocol)
        assert metrics["num_images"] == 1
    box = json.loads((tmp_path / "out/box/metrics.json").read_text())
    assert box["options"]["box_source"] == "annotation"


def test_hub_model_family_from_its_config(monkeypatch):
    """A hub model not in the cache: with text-only protocols it is taken at its word (and
    checked once loaded); a spec mixing text and prompted protocols fetches its config."""
    import samtune
    from samtune.suite import text

    fetched = []

    def hub_config(repo: str, fetch: bool) -> dict | None:
        fetched.append((repo, fetch))
        return {"model_type": "sam3"} if fetch else None

    monkeypatch.setattr(text, "_hub_config", hub_config)
    base = {"strategies": ["lora"], "datasets": ["demo"]}
    alone = load_spec({**base, "models": ["org/sam3-copy"], "protocols": ["text"]})
    assert alone.protocols_for(alone.models[0]) == ("text",)
    assert fetched == [("org/sam3-copy", False)]
    mixed = load_spec({**base, "models": ["org/sam3-copy", "tiny"], "protocols": ["box", "text"]})
    assert [mixed.protocols_for(m) for m in mixed.models] == [("text",), ("box",)]
    assert ("org/sam3-copy", True) in fetched
    # a model taken at its word is checked when it loads, before it trains
    with pytest.raises(ConfigError, match="protocol text needs a model with a text encoder"):
        text.check_family(samtune.load_model("tiny"), "org/not-sam3", ("text",))
