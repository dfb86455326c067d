"""The recipe study behind samtune's defaults (docs/training.md, "Why these defaults"): its
shipped specs validate offline, its `new-default` rows are what the defaults now are, its
`old-default` rows what they were, and a trained cell can be scored on another split."""

from __future__ import annotations

from pathlib import Path

import pytest

from samtune.suite.plan import _check_same
from samtune.suite.spec import fit_config, load_spec
from samtune.train.config import build_config

SPECS = Path(__file__).resolve().parents[1] / "examples" / "suites"
STUDIED = ("focal_weight", "dice_weight", "iou_weight", "box_jitter", "schedule",
           "warmup_steps", "lr", "max_instances", "batch_size", "augment")  # fmt: skip
OLD = {"focal_weight": 20.0, "dice_weight": 1.0, "iou_weight": 1.0, "box_jitter": 0.1,
       "schedule": "cosine", "warmup_steps": 2, "lr": 3e-4, "max_instances": 8,
       "batch_size": 2, "augment": False}  # fmt: skip
ROUND_1 = {**OLD, "focal_weight": 0.0, "box_jitter": 0.0, "schedule": "constant"}
"""What round 1 chose (the defaults between the two rounds); the later specs start from it."""
STUDY_SPECS = ("recipe-study.yaml", "recipe-study-lora.yaml", "recipe-study-test.yaml")


def _studied(config) -> dict:
    return {k: getattr(config, k) for k in STUDIED}


def _cells(name: str, tmp_path) -> dict:
    spec = load_spec(SPECS / name)
    return {c.strategy.label: fit_config(spec, c, tmp_path) for c in spec.cells()}


@pytest.mark.parametrize("name", STUDY_SPECS)
def test_study_specs_validate_and_pin_the_old_defaults(name, tmp_path):
    spec = load_spec(SPECS / name)
    assert [m.source for m in spec.models] == ["demo"] and spec.seeds == (0, 1, 2)
    assert spec.protocols == ("box",)
    cells = _cells(name, tmp_path)
    for label, config in cells.items():
        assert config.max_steps == 200 and config.val_split is None, label
        assert config.test_split == ("test" if name.endswith("test.yaml") else "val"), label
        if label.endswith("old-default"):
            assert _studied(config) == OLD, label


@pytest.mark.parametrize("strategy", ["decoder", "lora"])
def test_the_defaults_are_round_2_s_choice(strategy, tmp_path):
    """Round 1's choice (its test spec's new-default rows) was refined by round 2: the defaults
    are round 2's winner on val, the row its test spec confirms."""
    assert _studied(_cells("recipe-study-test.yaml", tmp_path)[f"{strategy}-new-default"]) == ROUND_1
    winner = f"{strategy}-focal-1+cosine"
    chosen = _cells("recipe-study-round2-test.yaml", tmp_path)[winner]
    assert _studied(_cells("recipe-study-round2.yaml", tmp_path)[winner]) == _studied(chosen)
    plain = build_config(strategy=strategy, dataset="demo", max_steps=200).resolved()
    # the study ran the demo suite's 8 objects per image; `samtune fit` takes max_instances' 16
    assert {**_studied(chosen), "max_instances": 16} == _studied(plain)
    assert _studied(chosen) == ROUND_2 and _studied(plain) != {**ROUND_1, "max_instances": 16}


def test_the_study_chose_what_the_test_spec_confirms(tmp_path):
    """The winner row of each val study is the test spec's new-default row."""
    test = _cells("recipe-study-test.yaml", tmp_path)
    for name, strategy in (("recipe-study.yaml", "decoder"), ("recipe-study-lora.yaml", "lora")):
        winner = _cells(name, tmp_path)["focal-0+no-jitter+constant"]
        assert _studied(winner) == _studied(test[f"{strategy}-new-default"])


def test_a_trained_cell_can_be_scored_on_another_split(tmp_path):
    """The test split is not a training setting: choose on val, then score the same run on test."""
    cells = _cells("recipe-study.yaml", tmp_path)
    recorded = cells["old-default"].to_dict()
    wanted = {**recorded, "test_split": "test"}
    _check_same(tmp_path, recorded, wanted)  # no error
    with pytest.raises(Exception, match="focal_weight"):
        _check_same(tmp_path, recorded, {**wanted, "focal_weight": 0.0})


ROUND_2 = {**ROUND_1, "focal_weight": 1.0, "schedule": "cosine"}
"""What round 2 chose: the defaults."""
LATER_SPECS = {"recipe-study-round2.yaml": ROUND_1, "recipe-study-long.yaml": ROUND_1,
               "recipe-study-round2-test.yaml": ROUND_1, "recipe-study-vit-b.yaml": ROUND_2}  # fmt: skip


@pytest.mark.parametrize("name", LATER_SPECS)
def test_later_specs_change_one_setting_from_their_base(name, tmp_path, monkeypatch):
    """Rounds after the first pin round 1's choice (the ViT-B spec: the defaults; demo suite: 8
    objects per image) and change, in each row, only what the row's own `train:` names."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the ViT-B spec names a hub id: no fetch
    spec = load_spec(SPECS / name)
    seen = set()
    for cell in spec.cells():
        config = fit_config(spec, cell, tmp_path)
        changed = {k: v for k, v in cell.strategy.train.items() if k != "max_steps"}
        assert config.max_steps == cell.strategy.train.get("max_steps", spec.train["max_steps"])
        split = "test" if name.endswith("test.yaml") else "val"
        assert config.test_split == split and config.val_split is None, cell.strategy.label
        assert _studied(config) == {**LATER_SPECS[name], **changed}, cell.strategy.label
        seen.add(cell.strategy.label)
    assert len(seen) == len(spec.strategies) and spec.seeds == (0, 1, 2)
