"""Every built-in strategy, trained briefly on the demo data, lifts validation mIoU.

Two starting points, each scored zero-shot by an independent call of
``samtune.evaluation.protocols.evaluate`` on the same validation images:

- the random ``tiny`` preset (Meta-style initialisation, see ``models.sam_from_config``),
  trained from scratch; the loss is dice only (``focal_weight=0``), because from random
  weights SAM's 20:1 focal term first drives every mask to empty;
- the bundled, pretrained ``demo`` model, adapted with the default loss.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from samtune.data import load_dataset
from samtune.evaluation import evaluate
from samtune.models.loading import load_model
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
def tiny_zero_shot_miou(demo_splits):
    return evaluate(load_model("tiny"), demo_splits["val"], "box", progress=False).metrics["miou"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_IN)
def test_strategy_trains_the_tiny_model_from_scratch(
    name, demo_splits, tiny_zero_shot_miou, tmp_path
):
    result = fit("tiny", name, demo_splits, tmp_path / name, max_steps=300, epochs=50,
                 batch_size=4, lr=1e-3, focal_weight=0.0, eval_every=300, quiet=True,
                 log_with=None, compare=False)  # fmt: skip
    assert tiny_zero_shot_miou < 0.1  # random weights: near-empty overlap to begin with
    assert result.best_metric >= tiny_zero_shot_miou + 0.15, (
        f"{name}: validation mIoU {result.best_metric:.4f}, zero-shot {tiny_zero_shot_miou:.4f}"
    )


@pytest.fixture(scope="module")
def zero_shot_miou(demo_splits):
    return evaluate(load_model("demo"), demo_splits["val"], "box", progress=False).metrics["miou"]


def test_every_built_in_strategy_is_covered():
    assert {"full", "decoder", "lora", "adapter", "peft"} <= set(BUILT_IN)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_IN)
def test_strategy_raises_validation_miou(name, demo_splits, zero_shot_miou, tmp_path):
    run = tmp_path / name
    result = fit("demo", name, demo_splits, run, epochs=3, batch_size=2, lr=3e-4,
                 warmup_steps=1, quiet=True, log_with=None, compare=False)  # fmt: skip
    assert result.steps == 3 * COUNTS["train"] // 2
    assert len(result.history) == 3
    # every validation counts each instance of the split once
    n_val = sum(int((~s.iscrowd).sum()) for s in demo_splits["val"])
    assert all(h["metrics"]["num_instances"] == n_val for h in result.history)
    assert result.best_metric >= zero_shot_miou + 0.05, (
        f"{name}: best validation mIoU {result.best_metric:.4f}, zero-shot {zero_shot_miou:.4f}"
    )
    tensors = load_file(run / "adapter" / "adapter.safetensors")
    assert tensors and all(t.isfinite().all() for t in tensors.values())
