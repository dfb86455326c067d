"""End-to-end training runs on the tiny model: files written, NaN handling, CLI errors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from samtune.cli import app
from samtune.errors import RunError
from samtune.train import fit, losses
from samtune.train.config import build_config


@pytest.fixture(scope="module")
def splits():
    from samtune.data import load_dataset

    counts = {"train": 4, "val": 2, "test": 2}
    return {s: load_dataset("demo", s, counts=counts) for s in ("train", "val", "test")}


@pytest.fixture
def decoder():
    from samtune.strategies.decoder import DecoderStrategy

    return DecoderStrategy()


def test_fit_writes_the_run_folder(tmp_path, splits, decoder):
    run = tmp_path / "run"
    result = fit("tiny", decoder, splits, run, epochs=2, batch_size=2, quiet=True, log_with=None)
    assert result.steps == 4
    for name in ("config.yaml", "metrics.json", "results.md", "adapter/adapter.safetensors"):
        assert (run / name).is_file(), name
    assert [c.name for c in sorted((run / "checkpoints").iterdir())] == [
        "step-000002",
        "step-000004",
    ]
    assert len(result.history) == 2 and result.best_dir is not None
    assert "zero-shot" in result.table and "fine-tuned" in result.table
    # the written config reproduces the run's options
    again = build_config(run / "config.yaml")
    assert again.epochs == 2 and again.batch_size == 2 and again.output_dir == str(run)
    hidden = [p.name for p in run.rglob("*") if p.name.startswith(".")]
    assert hidden == [".samtune-outputs.json"]  # samtune's record of what it wrote; no partials


def test_max_steps_sets_the_length_over_epochs(tmp_path, splits, decoder):
    """max_steps overrides epochs (transformers' Trainer does the same): 5 steps of 2-step
    epochs are 3 epochs, the last cut short; fewer steps than the epochs hold stop early."""
    from samtune.train.loop import run_length

    cfg = build_config(strategy="decoder", dataset="demo", epochs=1, max_steps=5).resolved()
    assert run_length(cfg, 2) == (5, 3)
    cfg = build_config(strategy="decoder", dataset="demo", epochs=4).resolved()
    assert run_length(cfg, 2) == (8, 4)
    result = fit("tiny", decoder, splits, tmp_path / "run", epochs=1, max_steps=5, batch_size=2,
                 val_split=None, test_split=None, quiet=True, log_with=None)  # fmt: skip
    assert result.steps == 5
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert steps[-1] == "step-000005"  # epochs end at steps 2 and 4; the run at 5


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
    tmp_path, splits, decoder, monkeypatch
):
    calls = {"n": 0}
    real = losses.sam_loss

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            out.total = out.total * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(losses, "sam_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(RunError, match=r"loss became nan at step 3 .*step-000002"):
        fit("tiny", decoder, splits, run, epochs=2, batch_size=2, quiet=True, log_with=None,
            compare=False, checkpoint_every=1)  # fmt: skip
    assert (run / "checkpoints" / "step-000002" / "trainer_state.json").is_file()


def test_cli_rejects_bad_options_with_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["fit", "--prompt", "scribble", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "prompt must be one of box, point, interactive" in result.output
    result = CliRunner().invoke(app, ["fit", "--strategy-option", "r8", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "key=value" in result.output


def test_frozen_encoder_reads_embeddings_from_the_cache(tmp_path, splits, decoder):
    from samtune.train import Callback

    class Count(Callback):
        def __init__(self):
            self.encoded = []

        def on_encode(self, run, encoded, cached):
            self.encoded.append(encoded)

    count = Count()
    run = tmp_path / "run"
    fit("tiny", decoder, splits, run, epochs=3, batch_size=2, quiet=True, log_with=None,
        compare=False, callbacks=[count])  # fmt: skip
    # epoch 1 encodes each of the 4 images once; epochs 2 and 3 only read
    assert count.encoded == [2, 2, 0, 0, 0, 0]
    assert len(list((run / "cache").rglob("*.safetensors"))) == 4


def test_augmentation_turns_the_cache_off_with_a_message(tmp_path, splits, decoder, capsys):
    run = tmp_path / "run"
    fit("tiny", decoder, splits, run, epochs=1, batch_size=2, quiet=True, log_with=None,
        compare=False, augment=True)  # fmt: skip
    assert "embedding cache off: augmentation changes the images" in capsys.readouterr().out
    assert not (run / "cache").exists()


def test_python_fit_honours_explicit_none_for_validation_and_test(tmp_path, splits, decoder):
    result = fit("tiny", decoder, splits, tmp_path / "run", epochs=1, batch_size=2, quiet=True,
                 log_with=None, val_split=None, test_split=None, prompt=None)  # fmt: skip
    assert result.history == [] and result.best_dir is None  # no validation ran
    assert result.comparison == {} and result.table == ""  # no test-split comparison
    saved = build_config(tmp_path / "run" / "config.yaml")
    assert saved.val_split is None and saved.test_split is None and saved.prompt == "box"
