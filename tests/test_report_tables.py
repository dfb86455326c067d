"""One table writer and one number formatter for every consumer, and reports rebuilt from JSON.

An ``EvalReport`` read back from ``metrics.json`` / ``comparison.json`` (``from_dict``) prints
the same tables as the report it was written from; the model card, the training summary and
the leaderboard write a metric the way the report does.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_evaluate import make_dataset

from samtune.errors import InputError
from samtune.evaluation import EvalReport, evaluate, format_comparison
from samtune.evaluation.report import reports_to_json
from samtune.export.card import _metrics_section
from samtune.models.loading import load_model
from samtune.tables import format_change, format_number, markdown_table
from samtune.train.loop import _comparison_table


@pytest.fixture(scope="module")
def reports() -> dict[str, EvalReport]:
    """Two real reports of two models (clicks protocol: mIoU, per-class, NoC, mIoU@k)."""
    data = make_dataset(2)
    base = evaluate(load_model("tiny", seed=0), data, "clicks:2", name="base", progress=False)
    other = evaluate(load_model("tiny", seed=1), data, "clicks:2", name="other", progress=False)
    return {"base": base, "other": other}


def test_to_dict_from_dict_round_trip(reports):
    report = reports["base"]
    back = EvalReport.from_dict(report.to_dict())
    assert back.to_dict() == report.to_dict()
    assert back == EvalReport(
        protocol=report.protocol,
        metrics=report.metrics,
        model=report.model,
        dataset=report.dataset,
        timing=report.timing,
        options=report.options,
    )
    assert back.to_markdown() == report.to_markdown()


def test_reports_rebuilt_from_json_print_the_same_tables(reports, tmp_path):
    """Through the files samtune writes: comparison.json (``eval --json``) and metrics.json."""
    stored = json.loads(reports_to_json(reports))
    rebuilt = {label: EvalReport.from_dict(d) for label, d in stored.items()}
    assert format_comparison(rebuilt) == format_comparison(reports)
    paths = reports["other"].save(tmp_path)
    again = EvalReport.from_dict(json.loads(paths["metrics"].read_text()))
    assert again.to_markdown() == paths["markdown"].read_text()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([1, 2], ["JSON object", "list"]),
        ({"metrics": {}}, ["'protocol'", "found keys ['metrics']"]),
        ({"protocol": "box", "metrics": [0.5]}, ["'metrics' (an object)"]),
    ],
)
def test_from_dict_says_what_a_report_needs(data, words):
    with pytest.raises(InputError) as err:
        EvalReport.from_dict(data)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    ("value", "percent", "signed", "text"),
    [
        (0.686, True, False, "68.60"),
        (0.1005, True, True, "+10.05"),
        (-0.0089, True, True, "-0.89"),
        (np.float32(0.5), True, False, "50.00"),
        (3.5, False, False, "3.50"),
        (np.float64(-1.25), False, True, "-1.25"),
        (120, False, False, "120"),
        (np.int64(7), False, True, "+7"),
        (0.01234, False, False, "0.0123"),
        (None, True, False, "n/a"),
        (float("nan"), True, False, "n/a"),
        (np.float32("nan"), False, False, "n/a"),
        ("-", True, False, "-"),
        (True, False, False, "True"),
    ],
)
def test_format_number(value, percent, signed, text):
    assert format_number(value, percent, signed=signed) == text


def test_format_change_is_in_percentage_points():
    assert format_change(0.686, 0.5855, percent=True) == "+10.05"
    assert format_change(2.0, 3.5) == "-1.50"
    assert format_change(0.5, None, percent=True) == "n/a"
    assert format_change(math.nan, 0.5, percent=True, missing="") == ""


def test_markdown_table_layout():
    table = markdown_table(["model", "mIoU", "Dice"], [["zero-shot", "58.55", "70.12"]])
    assert table == "| model | mIoU | Dice |\n|---|---:|---:|\n| zero-shot | 58.55 | 70.12 |"


def _metrics(miou: float, noc: float, oracle: float) -> dict:
    return {"miou": miou, "miou_oracle": oracle, "noc@85": noc, "num_images": 4}


def test_the_model_card_writes_metrics_as_the_report_does(tmp_path):
    """A comparison.json holding NaN (an oracle mIoU the protocol has none of) and NoC: the
    card said ``nan``/``+nan`` and ``3.5`` where the report says ``n/a`` and ``3.50``."""
    a = EvalReport("point", _metrics(0.5855, 3.5, float("nan")))
    b = EvalReport("point", _metrics(0.686, 2.0, 0.9))
    path = tmp_path / "comparison.json"
    path.write_text(reports_to_json({"zero-shot": a, "tuned": b}))
    card = _metrics_section(path)
    assert "| mIoU | 58.55 | 68.60 | +10.05 |" in card
    assert "| mIoU (oracle) | n/a | 90.00 | - |" in card
    assert "| NoC@85 | 3.50 | 2.00 | -1.50 |" in card
    report = format_comparison({"zero-shot": a, "tuned": b})
    assert "| zero-shot | 58.55 | n/a | 3.50 |" in report
    assert "| tuned | 68.60 (+10.05) | 90.00 | 2.00 (-1.50) |" in report


def test_a_resumed_runs_table_is_an_uninterrupted_runs(reports):
    """A resumed fit reads its zero-shot results back from metrics.json as metric dicts; its
    results.md table was a different, 4-decimal fraction table."""
    base, other = reports["base"], reports["other"]
    live = {"zero_shot": {"clicks:2": base}, "fine_tuned": {"clicks:2": other}}
    stored = json.loads(json.dumps({"clicks:2": dict(base.metrics)}, default=float))
    resumed = {"zero_shot": stored, "fine_tuned": {"clicks:2": other}}
    table = _comparison_table(resumed, ["clicks:2"])
    assert table == _comparison_table(live, ["clicks:2"])
    assert table.startswith("**clicks:2 prompts**\n\n") and "| model | mIoU |" in table
