"""Training checkpoints: written atomically, found again for ``--resume``.

A checkpoint is a folder ``<run>/checkpoints/step-000050/`` holding what
``accelerator.save_state`` writes (model, optimizer, scheduler, RNG states of every process)
plus ``trainer_state.json`` (step, epoch, position in the epoch, best validation score). It is
assembled in a hidden folder ``.step-000050.tmp`` that every process writes into, and renamed
into place in one step once all processes are done: a folder named ``step-*`` is always
complete, and a run killed while writing leaves only a hidden folder that is ignored (and
cleared by the next save).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    """Where a run stands. ``batch_in_epoch`` counts batches already consumed in ``epoch``."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        return cls(**json.loads(text))


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def read_state(checkpoint: str | Path) -> TrainerState:
    return TrainerState.from_json((Path(checkpoint) / STATE_FILE).read_text())


def save_checkpoint(accelerator, run_dir: str | Path, state: TrainerState, keep: int = 2) -> Path:
    """Write a checkpoint of everything ``accelerator`` tracks plus ``state``; all processes call it.

    Returns the final folder. Older step checkpoints beyond ``keep`` are removed afterwards.
    """
    final = checkpoint_dir(run_dir, state.step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        if tmp.exists():  # left by a run killed while saving
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_write(tmp / STATE_FILE) as f:
            f.write_text(state.to_json())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, checkpoint: str | Path) -> TrainerState:
    """Restore what ``accelerator`` tracks from ``checkpoint``; returns its trainer state."""
    accelerator.load_state(str(checkpoint))
    return read_state(checkpoint)
