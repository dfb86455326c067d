"""Training checkpoints: written atomically, found again for ``--resume``, read without running code.

A checkpoint is a folder ``<run>/checkpoints/step-000050/`` holding:

=========================  ===============================================================
``model.safetensors``      the trainable parameters (what changes in training), by name
``optimizer.pt``           the optimizer's state dict (tensors and plain numbers)
``scaler.pt``              the gradient scaler's state (fp16 mixed precision only)
``rng-<rank>.pt``          each process's random states (Python, NumPy, torch CPU and CUDA)
``resume.json``            format marker, scheduler state, Accelerate's step counter
``trainer_state.json``     step, epoch, position in the epoch, best validation score
=========================  ===============================================================

Nothing here is unpickled: tensors come from safetensors or ``torch.load(weights_only=True)``
(which refuses any object but tensors and plain containers), the rest is JSON. A folder from a
stranger, or one doctored to run code on ``--resume``, is refused with a
:class:`~samtune.errors.CheckpointError` before anything is applied; Accelerate's own
``save_state`` format is not used because its ``load_state`` unpickles registered objects with
``weights_only=False``.

A checkpoint is assembled in a hidden folder ``.step-000050.tmp`` that every process writes
into, and renamed into place in one step once all processes are done: a folder named
``step-*`` is always complete, and a run killed while writing leaves only a hidden folder that
is ignored (and cleared by the next save).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..io import (
    atomic_write,
    disk_full_error,
    dump_json,
    parse_json,
    read_json_object,
    read_text,
    write_safetensors,
)

STATE_FILE = "trainer_state.json"
RESUME_FILE = "resume.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCALER_FILE = "scaler.pt"
FORMAT = "samtune.checkpoint"
FORMAT_VERSION = 2
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
        return dump_json(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        return cls(**parse_json(text, "trainer state", CheckpointError))


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
    """The trainer state of ``checkpoint``.

    Raises:
        CheckpointError: the state file is missing, not JSON, or not a trainer state.
    """
    path = Path(checkpoint) / STATE_FILE
    try:
        state = TrainerState.from_json(read_text(path, what="checkpoint state"))
        if not all(isinstance(getattr(state, k), int) for k in ("step", "epoch", "batch_in_epoch")):
            raise TypeError("step, epoch and batch_in_epoch must be integers")
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is unreadable: {exc}") from None
    return state


# --------------------------------------------------------------------------- save


def _unwrap(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def _trainable(accelerator, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in _unwrap(accelerator, model).named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(states: dict[str, Any]) -> None:
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    accelerator,
    run_dir: str | Path,
    state: TrainerState,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    keep: int = 2,
) -> Path:
    """Write a checkpoint of ``model``'s trainable tensors, the optimizer, schedule and RNGs.

    All processes call it. Returns the final folder. Older step checkpoints beyond ``keep`` are
    removed afterwards.
    """
    final = checkpoint_dir(run_dir, state.step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        if tmp.exists():  # left by a run killed while saving
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        _write_files(accelerator, tmp, model, optimizer, scheduler)
    except (OSError, RuntimeError, ValueError) as exc:
        error = disk_full_error(final, exc)
        if error is None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written is left
        raise error from None
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


def _write_files(accelerator, tmp: Path, model, optimizer, scheduler) -> None:
    """This process's files of a checkpoint (the main process writes all but its own RNGs)."""
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    if not accelerator.is_main_process:
        return
    tensors = {n: p.detach().cpu().contiguous() for n, p in _trainable(accelerator, model).items()}
    write_safetensors(tensors, tmp / MODEL_FILE)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    if accelerator.scaler is not None:
        torch.save(accelerator.scaler.state_dict(), tmp / SCALER_FILE)
    resume = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "num_processes": accelerator.num_processes,
        "accelerator_step": accelerator.step,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    (tmp / RESUME_FILE).write_text(dump_json(resume, indent=2) + "\n")


# --------------------------------------------------------------------------- load


def _torch_load(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers, never arbitrary code."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"checkpoint file {str(path)!r} holds objects samtune will not unpickle (only "
            f"tensors and plain values are loaded; {first}); it was not written by samtune or "
            "was altered: resume from another checkpoint or start a new run"
        ) from None
    except Exception as exc:  # zip/EOF/unknown errors of torch's reader: a corrupt file
        raise CheckpointError(
            f"checkpoint file {str(path)!r} is corrupt or truncated ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); resume from another checkpoint"
        ) from None


def _read_resume(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / RESUME_FILE
    if not path.is_file():
        legacy = sorted(p.name for p in checkpoint.glob("*.pkl"))
        raise CheckpointError(
            f"checkpoint {str(checkpoint)!r} has no {RESUME_FILE}"
            + (
                f" but Accelerate pickles ({', '.join(legacy)}): it was written by an older "
                "samtune whose checkpoints cannot be loaded without running code"
                if legacy
                else ": it is incomplete or not a samtune checkpoint"
            )
            + "; start a new run (the adapter of the old one is still usable)"
        )
    data = read_json_object(path, CheckpointError)
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a samtune checkpoint marker")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format {data.get('format_version')!r}; this samtune "
            f"reads format {FORMAT_VERSION}"
        )
    return data


def _load_trainable(accelerator, model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing")
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint file {str(path)!r} is not a readable safetensors file ({exc})"
        ) from None
    params = _trainable(accelerator, model)
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {str(path.parent)!r} does not match this run's trainable parameters "
            f"(missing {missing[:3]}, extra {extra[:3]}): it was written with another "
            "model or strategy; resume with the run's own config.yaml"
        )
    with torch.no_grad():
        for name, param in params.items():
            value = tensors[name]
            if value.shape != param.shape:
                raise CheckpointError(
                    f"checkpoint tensor {name!r} has shape {tuple(value.shape)}, the model's "
                    f"is {tuple(param.shape)}: written for another model"
                )
            if not torch.isfinite(value).all():
                raise CheckpointError(f"checkpoint tensor {name!r} holds NaN or infinity")
            param.copy_(value)


def load_checkpoint(
    accelerator,
    checkpoint: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> TrainerState:
    """Restore ``model``'s trainable tensors, optimizer, schedule and RNGs; return the state.

    Every file is read and checked before anything is applied, so a refused checkpoint leaves
    the run as it was.

    Raises:
        CheckpointError: a missing, corrupt, foreign or doctored file (the message names it).
    """
    checkpoint = Path(checkpoint)
    state = read_state(checkpoint)
    resume = _read_resume(checkpoint)
    opt_state = _torch_load(checkpoint / OPTIMIZER_FILE) if optimizer is not None else None
    scaler_path = checkpoint / SCALER_FILE
    scaler_state = (
        _torch_load(scaler_path)
        if accelerator.scaler is not None and scaler_path.is_file()
        else None
    )
    rng_path = checkpoint / f"rng-{accelerator.process_index}.pt"
    rng = _torch_load(rng_path) if rng_path.is_file() else None
    if rng is not None and not (isinstance(rng, dict) and {"python", "numpy", "torch"} <= set(rng)):
        raise CheckpointError(f"checkpoint file {str(rng_path)!r} is not a random-state record")
    if scheduler is not None and not isinstance(resume.get("scheduler"), dict):
        raise CheckpointError(f"{str(checkpoint / RESUME_FILE)!r} lacks the scheduler state")

    _load_trainable(accelerator, model, checkpoint / MODEL_FILE)
    try:
        if optimizer is not None:
            optimizer.load_state_dict(opt_state)
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        if scaler_state is not None:
            accelerator.scaler.load_state_dict(scaler_state)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint {str(checkpoint)!r} does not fit this run's optimizer or schedule "
            f"({type(exc).__name__}: {exc}); resume with the run's own config.yaml"
        ) from None
    accelerator.step = int(resume.get("accelerator_step", 0))
    if rng is None:
        warnings.warn(
            f"{str(checkpoint)!r} has no random state for process {accelerator.process_index} "
            f"(written by {resume.get('num_processes')} processes): the resumed run continues, "
            "but will not repeat the uninterrupted run exactly",
            stacklevel=2,
        )
    else:
        try:
            _set_rng_state(rng)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(
                f"checkpoint file {str(rng_path)!r} is not a valid random state ({exc})"
            ) from None
    return state
