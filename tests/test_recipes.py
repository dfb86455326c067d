"""Named training recipes: their values, where they sit in the merge, what a run records."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from typer.testing import CliRunner

from samtune.cli import app
from samtune.errors import UnknownNameError
from samtune.train.config import FitConfig, build_config
from samtune.train.loop import _schedule
from samtune.train.recipes import RECIPES, get_recipe, recipe_names


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_builds_a_valid_config_of_known_fields(name):
    fields = {f.name for f in dataclasses.fields(FitConfig)}
    assert set(RECIPES[name].values) <= fields - {"recipe"}
    cfg = build_config(recipe=name).resolved()
    assert cfg.recipe == name
    for key, value in RECIPES[name].values.items():
        if value is not None:  # None: the demo's default fills it (max_instances)
            assert getattr(cfg, key) == value, key


def test_default_recipe_is_the_study_s_winner():
    """The defaults chosen by the recipe study (docs/training.md, "Why these defaults", two
    rounds): focal + dice 1:1 plus IoU MSE, boxes without jitter, cosine decay after warmup."""
    assert RECIPES["default"].values == {}
    plain = build_config(strategy="lora", dataset="demo").resolved()
    assert build_config(recipe="default", strategy="lora", dataset="demo").resolved() == plain
    assert (plain.focal_weight, plain.dice_weight, plain.iou_weight) == (1.0, 1.0, 1.0)
    assert (plain.box_jitter, plain.schedule, plain.augment) == (0.0, "cosine", False)
    assert (plain.lr, plain.warmup_steps, plain.batch_size, plain.epochs) == (3e-4, 2, 2, 4)


@pytest.mark.parametrize("recipe", ["lightning-sam", "micro-sam"])
def test_named_recipes_do_not_follow_the_defaults(recipe):
    """Every value a named recipe publishes is pinned: changing samtune's defaults (as the
    study did: focal 20 -> 0 -> 1, box jitter 0.1 -> 0, cosine -> constant -> cosine) must not
    move it."""
    values = RECIPES[recipe].values
    for key in ("focal_weight", "dice_weight", "iou_weight", "box_jitter", "schedule",
                "warmup_steps", "augment", "max_instances"):  # fmt: skip
        assert key in values, key


def test_lightning_sam_values_are_the_published_ones():
    """lightning_sam/config.py and train.py (luca-medeiros/lightning-sam, main, 58335bb)."""
    cfg = build_config(recipe="lightning-sam").resolved()
    assert (cfg.focal_weight, cfg.dice_weight, cfg.iou_weight) == (20.0, 1.0, 1.0)
    assert (cfg.prompt, cfg.box_source, cfg.box_jitter) == ("box", "annotation", 0.0)
    assert (cfg.lr, cfg.weight_decay, cfg.warmup_steps) == (8e-4, 1e-4, 250)
    assert (cfg.schedule, cfg.decay_steps, cfg.decay_factor) == ("step", [60000, 86666], 10.0)
    assert (cfg.batch_size, cfg.epochs, cfg.augment) == (12, 20, False)
    assert build_config(recipe="lightning-sam", dataset="coco").resolved().max_instances is None


def test_step_schedule_divides_at_each_decay_step():
    cfg = build_config(recipe="lightning-sam").resolved()
    factor = _schedule(cfg, total_steps=100_000)
    assert factor(249) == pytest.approx(250 / 251)  # warming up
    assert [factor(s) for s in (250, 59_999)] == [1.0, 1.0]
    assert factor(60_000) == pytest.approx(0.1) and factor(86_665) == pytest.approx(0.1)
    assert factor(86_666) == pytest.approx(0.01) and factor(99_999) == pytest.approx(0.01)


def test_micro_sam_values():
    cfg = build_config(recipe="micro-sam").resolved()
    assert (cfg.focal_weight, cfg.dice_weight, cfg.iou_weight) == (0.0, 1.0, 1.0)
    assert (cfg.prompt, cfg.interactive_rounds, cfg.max_instances) == ("interactive", 7, 25)
    assert (cfg.schedule, cfg.warmup_steps) == ("constant", 0)
    assert cfg.box_jitter == 0.0  # ConvertToSamInputs: no distortion
    assert cfg.augment == "flips"  # torch_em's default 2D augmentation: both flips


def test_precedence_defaults_recipe_file_given(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("recipe: micro-sam\nfocal_weight: 2.0\nwarmup_steps: 5\n")
    cfg = build_config(file, warmup_steps=7)
    assert cfg.recipe == "micro-sam"
    assert cfg.prompt == "interactive"  # from the recipe (the default is box)
    assert cfg.focal_weight == 2.0  # the file beats the recipe
    assert cfg.warmup_steps == 7  # given beats the file
    assert cfg.dice_weight == 1.0 and cfg.seed == 0  # the rest: recipe, then defaults
    # a recipe given on the command line replaces the file's, still under the file's values
    cfg = build_config(file, recipe="Lightning-SAM")
    assert cfg.recipe == "lightning-sam" and cfg.box_source == "annotation"
    assert cfg.focal_weight == 2.0 and cfg.warmup_steps == 5
    # the suite builds cells with FitConfig.from_dict: the recipe applies there too
    assert FitConfig.from_dict({"recipe": "micro-sam"}).focal_weight == 0.0


def test_unknown_recipe_names_the_choices():
    with pytest.raises(UnknownNameError, match="default, lightning-sam, micro-sam"):
        get_recipe("sam2")
    with pytest.raises(UnknownNameError):
        FitConfig(recipe="sam2")


def test_fit_help_lists_the_recipes():
    out = CliRunner().invoke(app, ["fit", "--help"], terminal_width=200).output
    assert "--recipe" in out
    for name in recipe_names():
        assert name in out


def test_run_records_the_recipe_and_its_values(tmp_path):
    from samtune.data import load_dataset
    from samtune.train import fit

    train = load_dataset("demo", "train", counts={"train": 1, "val": 1, "test": 1})
    run = tmp_path / "run"
    fit("tiny", "decoder", {"train": train}, run, recipe="micro-sam", interactive_rounds=1,
        max_steps=1, quiet=True, log_with=None, compare=False, val_split=None,
        test_split=None)  # fmt: skip
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["recipe"] == "micro-sam"
    assert (saved["focal_weight"], saved["prompt"], saved["schedule"]) == (
        0.0,
        "interactive",
        "constant",
    )
    assert saved["interactive_rounds"] == 1  # given: beats the recipe's 7
    again = build_config(run / "config.yaml")
    assert again == build_config(saved)  # the file reproduces the run's options
    assert again.interactive_rounds == 1 and again.focal_weight == 0.0


def test_suite_spec_train_options_take_a_recipe():
    """A suite cell's config: spec train < dataset train < strategy train, over the recipe."""
    from samtune.suite.spec import fit_config, load_spec

    spec = load_spec({
        "models": ["tiny"],
        "strategies": [{"name": "decoder", "train": {"dice_weight": 2.0}}],
        "datasets": ["demo"],
        "train": {"recipe": "micro-sam", "max_steps": 2},
    })  # fmt: skip
    cfg = fit_config(spec, spec.cells()[0], "out")
    assert (cfg.recipe, cfg.focal_weight, cfg.prompt) == ("micro-sam", 0.0, "interactive")
    assert cfg.dice_weight == 2.0  # the strategy's train option beats the recipe
