"""SAM-HQ and SAM 2 train like SAM: every built-in strategy lifts the validation mIoU of the
tiny presets on the demo set, and `samtune fit` ends with the zero-shot vs fine-tuned table.

The fast tier runs every built-in strategy on every family's tiny preset for two steps (the
adapter is written, finite, trained, and loads back to the same model); the lift runs are slow.

As in ``test_train_strategies.py`` for ``tiny``: random presets (initialised as the original
code does), trained from scratch with the dice loss only, scored zero-shot by an independent
call of ``samtune.evaluation.protocols.evaluate`` on the same validation images.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from samtune.adapters import load_tuned
from samtune.cli import app
from samtune.data import load_dataset
from samtune.evaluation import evaluate
from samtune.models.loading import load_model
from samtune.models.sam_ops import decode, encode_images
from samtune.strategies import get_strategy, list_strategies
from samtune.train import fit

BUILT_IN = sorted(
    name for name in list_strategies() if type(get_strategy(name)).__module__.startswith("samtune.")
)
COUNTS = {"train": 40, "val": 12, "test": 2}


@pytest.fixture(scope="module")
def demo_splits():
    return {s: load_dataset("demo", s, counts=COUNTS) for s in ("train", "val")}


@pytest.fixture(scope="module")
def two_images():
    return {"train": load_dataset("demo", "train", counts={"train": 2, "val": 1, "test": 1})}


def _masks(model: torch.nn.Module) -> torch.Tensor:
    """Mask logits of a fixed image and box (128 px: every tiny preset's input size)."""
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return decode(
            model, encode_images(model, pixels), boxes=torch.tensor([[10.0, 12, 90, 100]])
        ).pred_masks


def _fast_or_slow(name: str, preset: str):
    """Every strategy on SAM and lora on each other family in the fast tier; the rest slow."""
    fast = preset == "tiny" or name == "lora"
    return (name, preset) if fast else pytest.param(name, preset, marks=pytest.mark.slow)


@pytest.mark.parametrize(
    ("name", "preset"),
    [_fast_or_slow(n, p) for p in ("tiny", "tiny-hq", "tiny-sam2") for n in BUILT_IN],
)
def test_strategy_fits_two_steps_on_each_family(name, preset, two_images, tmp_path):
    result = fit(preset, name, two_images, tmp_path / "run", max_steps=2, batch_size=1, lr=1e-3,
                 val_split=None, test_split=None, compare=False, quiet=True, log_with=None)  # fmt: skip
    assert result.steps == 2
    tuned = load_file(result.adapter_dir / "adapter.safetensors")
    assert tuned and all(t.isfinite().all() for t in tuned.values())
    fresh = get_strategy(name).apply(load_model(preset))
    untouched = fresh.samtune_info.strategy.trainable_state_dict(fresh)
    assert set(tuned) == set(untouched)
    assert any(not torch.equal(tuned[k], untouched[k]) for k in tuned)  # it did train
    loaded = load_tuned(result.adapter_dir)  # onto the base the adapter records
    assert (_masks(loaded) - _masks(result.model.eval())).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def zero_shot(demo_splits):
    return {
        preset: evaluate(load_model(preset), demo_splits["val"], "box", progress=False).metrics[
            "miou"
        ]
        for preset in ("tiny-hq", "tiny-sam2")
    }


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny-hq", "tiny-sam2"])
@pytest.mark.parametrize("name", BUILT_IN)
def test_strategy_trains_each_family_preset(name, preset, demo_splits, zero_shot, tmp_path):
    # 150 steps: decoder and lora measured +0.09 to +0.15 over zero-shot (+0.05 needed)
    result = fit(preset, name, demo_splits, tmp_path / name, max_steps=150, epochs=50,
                 batch_size=4, lr=1e-3, focal_weight=0.0, eval_every=150, quiet=True,
                 log_with=None, compare=False)  # fmt: skip
    assert zero_shot[preset] < 0.1  # random weights: near-empty overlap to begin with
    assert result.best_metric >= zero_shot[preset] + 0.05, (
        f"{name} on {preset}: validation mIoU {result.best_metric:.4f}, "
        f"zero-shot {zero_shot[preset]:.4f}"
    )


@pytest.mark.slow
def test_fit_on_tiny_sam2_ends_with_the_comparison_table(tmp_path):
    result = CliRunner().invoke(app, ["fit", "--model", "tiny-sam2", "--strategy", "lora",
                                      "--dataset", "demo", "--max-steps", "2",
                                      "-o", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 0, result.output[-2000:]
    assert "| zero-shot |" in result.output and "| fine-tuned |" in result.output
