"""``cache: auto`` turns the embedding cache on only where it can pay: a second pass at SAM's
1024 px input, a third at small inputs (the demo's and tiny's 128 px)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from samtune.train import Callback, fit
from samtune.train.config import build_config
from samtune.train.loop import _embedding_cache, auto_cache_passes


class Count(Callback):
    def __init__(self) -> None:
        self.encoded: list[int] = []
        self.cached: list[int] = []

    def on_encode(self, run, encoded, cached) -> None:
        self.encoded.append(encoded)
        self.cached.append(cached)


@pytest.fixture(scope="module")
def splits():
    from samtune.data import load_dataset

    return {"train": load_dataset("demo", "train", counts={"train": 2, "val": 1, "test": 1})}


def test_one_epoch_runs_without_the_cache(tmp_path, splits):
    count = Count()
    run = tmp_path / "run"
    fit("tiny", "decoder", splits, run, epochs=1, batch_size=1, quiet=True, log_with=None,
        compare=False, val_split=None, test_split=None, callbacks=[count])  # fmt: skip
    assert count.encoded == [1, 1] and count.cached == [0, 0]
    assert not (run / "cache").exists()  # nothing stored that nothing would read


def _cache(tmp_path, passes: int, image_size: int = 1024, **options):
    cfg = build_config(output_dir=str(tmp_path), **options).resolved()
    accelerator = SimpleNamespace(device=torch.device("cpu"), print=print)
    return _embedding_cache(cfg, True, accelerator, passes, image_size)


def test_auto_needs_a_second_pass_and_on_or_off_are_obeyed(tmp_path):
    assert _cache(tmp_path, 1) is None
    assert _cache(tmp_path, 2) is not None
    assert _cache(tmp_path, 1, cache="on") is not None  # asked for: kept (a later run reuses it)
    assert _cache(tmp_path, 4, cache="off") is None


def test_auto_at_a_small_input_needs_a_third_pass(tmp_path):
    """At 128 px the cached run is ahead only from epoch 3 (docs/performance.md)."""
    assert _cache(tmp_path, 2, image_size=128) is None
    assert _cache(tmp_path, 3, image_size=128) is not None
    assert _cache(tmp_path, 2, image_size=128, cache="on") is not None
    assert auto_cache_passes(1024) == 2 and auto_cache_passes(128) == 3


def test_two_epochs_of_a_small_model_run_without_the_cache(tmp_path, splits):
    count = Count()
    run = tmp_path / "run"
    fit("tiny", "decoder", splits, run, epochs=2, batch_size=1, quiet=True, log_with=None,
        compare=False, val_split=None, test_split=None, callbacks=[count])  # fmt: skip
    assert count.encoded == [1, 1, 1, 1] and count.cached == [0, 0, 0, 0]
    assert not (run / "cache").exists()
