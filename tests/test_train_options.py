"""Training options that change the step: interactive prompts, bf16 autocast, gradient
checkpointing, gradient accumulation, early stopping (tiny model, a few steps each)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from samtune.models.loading import load_model
from samtune.strategies import get_strategy
from samtune.train import fit


@pytest.fixture(scope="module")
def splits():
    from samtune.data import load_dataset

    counts = {"train": 4, "val": 2, "test": 2}
    return {s: load_dataset("demo", s, counts=counts) for s in ("train", "val", "test")}


def _finite_adapter(run):
    tensors = load_file(run / "adapter" / "adapter.safetensors")
    assert tensors and all(torch.isfinite(t).all() for t in tensors.values())
    return tensors


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("decoder", {"prompt": "interactive", "interactive_rounds": 2}),
        ("decoder", {"prompt": "point"}),
        ("lora", {"mixed_precision": "bf16", "gradient_checkpointing": True}),
        ("full", {"grad_accum": 2, "schedule": "constant"}),
    ],
    ids=["interactive", "point", "lora-bf16-checkpointing", "full-accumulation"],
)
def test_step_variants_train_and_write_a_finite_adapter(tmp_path, splits, strategy, options):
    result = fit(
        "tiny",
        strategy,
        splits,
        tmp_path / "run",
        max_steps=4,
        batch_size=2,
        lr=1e-3,
        quiet=True,
        log_with=None,
        **options,
    )
    from samtune.train.checkpoint import latest_checkpoint, read_state

    assert result.steps == 4
    # 4 images, 2 per batch: 2 batches an epoch; with accumulation 2 of them make one step
    assert read_state(latest_checkpoint(tmp_path / "run")).epoch == 2 * options.get("grad_accum", 1)
    tuned = _finite_adapter(tmp_path / "run")
    fresh = load_model("tiny")
    untouched = (
        get_strategy(strategy).apply(fresh).samtune_info.strategy.trainable_state_dict(fresh)
    )
    assert set(tuned) == set(untouched)
    assert any(not torch.equal(tuned[k], untouched[k]) for k in tuned)  # it did train


def test_early_stopping_ends_the_run(tmp_path, splits):
    result = fit(
        "tiny",
        "decoder",
        splits,
        tmp_path / "run",
        epochs=20,
        batch_size=2,
        lr=1e-12,  # nothing improves, so validation never beats its first value
        early_stopping=2,
        quiet=True,
        log_with=None,
    )
    assert len(result.history) == 3  # the first validation, then two without improvement
    assert result.steps == 6
