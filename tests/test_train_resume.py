"""A run SIGKILLed mid-epoch and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from samtune.train.checkpoint import STATE_FILE, latest_checkpoint, read_state

# 8 training images, batch 2: 4 steps per epoch, 2 epochs; checkpoints at steps 3 and 6 (both
# mid-epoch). KILL_AT_LOSS makes the child SIGKILL itself inside the 8th loss computation,
# i.e. in the middle of epoch 2, after the step-6 checkpoint.
SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from samtune.data import load_dataset
    from samtune.train import fit, losses

    kill_at = int(os.environ.get("KILL_AT_LOSS", "0"))
    if kill_at:
        real, calls = losses.sam_loss, [0]
        def sam_loss(*args, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        losses.sam_loss = sam_loss
    counts = {"train": 8, "val": 2, "test": 2}
    splits = {s: load_dataset("demo", s, counts=counts) for s in ("train", "val")}
    fit(os.environ.get("MODEL", "tiny"), "lora", splits, sys.argv[1], epochs=2, batch_size=2, lr=1e-3, warmup_steps=2,
        checkpoint_every=3, keep_checkpoints=5, eval_every=3, quiet=True, log_with=None,
        compare=False, resume=os.environ.get("RESUME") == "1",
        strategy_options=json.loads(os.environ.get("OPTIONS", "{}")))
    """
)


def _run(tmp_path, run_dir, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(run_dir)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "options"),  # one per SAM family; EdgeTAM's LoRA sits on the decoder attention
    [("tiny", "{}"), ("tiny-hq", "{}"), ("tiny-sam2", "{}"), ("tiny-sam3-tracker", "{}"),
     ("tiny-edgetam", '{"decoder_attention": true}')],
)  # fmt: skip
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, model, options):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = _run(tmp_path, straight, MODEL=model, OPTIONS=options)
    assert done.returncode == 0, done.stderr[-3000:]

    crash = _run(tmp_path, killed, KILL_AT_LOSS="8", MODEL=model, OPTIONS=options)
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]
    assert not (killed / "adapter").exists()  # the run never finished
    last = latest_checkpoint(killed)
    state = read_state(last)
    assert (last.name, state.epoch, state.batch_in_epoch) == ("step-000006", 1, 2)
    # nothing a reader would take for complete is partial: every visible checkpoint has its
    # state file, and the only other entries are finished files
    for ckpt in (killed / "checkpoints").iterdir():
        assert ckpt.name.startswith(".") or (ckpt / STATE_FILE).is_file(), ckpt

    resumed = _run(tmp_path, killed, RESUME="1", MODEL=model, OPTIONS=options)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step-000006" in resumed.stdout + resumed.stderr
    assert read_state(latest_checkpoint(killed)).step == 8

    a = load_file(straight / "adapter" / "adapter.safetensors")
    b = load_file(killed / "adapter" / "adapter.safetensors")
    assert a.keys() == b.keys() and any("lora" in k for k in a)
    base = load_file(straight / "checkpoints" / "step-000003" / "model.safetensors")
    moved = False
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)  # bit-exact
    # the runs did train (an unchanged adapter would make the comparison vacuous)
    for key, value in base.items():
        if "lora_B" in key:
            moved |= bool(value.abs().sum() > 0)
    assert moved
    # the validation history survives the kill: the same steps as the uninterrupted run
    assert _validated_steps(killed) == _validated_steps(straight) == [3, 6, 8]


def _validated_steps(run) -> list[int]:
    return [h["step"] for h in json.loads((run / "metrics.json").read_text())["validation"]]
