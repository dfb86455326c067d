"""Named seams into a training run: subclass :class:`Callback`, pass ``fit(..., callbacks=[...])``.

Benchmarks time epochs with them, tests count encoder calls with them, and users log or stop
with them, without patching samtune's internals. Every method is a no-op by default; ``run`` is
the :class:`~samtune.train.loop.Run` in progress (its ``state`` says where it stands; setting
``run.stop = True`` ends training after the current step).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


class Callback:
    """Hooks called by :func:`samtune.train.train`, in this order per epoch:
    ``on_epoch_begin``, (``on_encode``, ``on_step_end``, [``on_validation``],
    [``on_checkpoint``]) per optimizer step, ``on_epoch_end``."""

    def on_train_begin(self, run: Any) -> None:
        """Setup is done (model, data, optimizer, resume); the first step comes next."""

    def on_epoch_begin(self, run: Any) -> None:
        """An epoch (``run.state.epoch``) starts, or resumes mid-way."""

    def on_encode(self, run: Any, encoded: int, cached: int) -> None:
        """Frozen encoder: ``encoded`` images went through it, ``cached`` came from the cache."""

    def on_step_end(self, run: Any, loss: float, iou: float) -> None:
        """An optimizer step finished (``run.state.step``); its loss and mean predicted IoU."""

    def on_validation(self, run: Any, metrics: dict[str, Any]) -> None:
        """A validation finished; its metrics (``miou`` ...)."""

    def on_checkpoint(self, run: Any, path: Path) -> None:
        """A checkpoint was written to ``path``."""

    def on_epoch_end(self, run: Any) -> None:
        """An epoch finished (``run.state.epoch`` already counts it)."""

    def on_train_end(self, run: Any, result: Any) -> None:
        """Training, the final adapter and the comparison are done; ``result`` is the
        :class:`~samtune.train.loop.FitResult`."""


class CallbackList(Callback):
    """Calls each callback in turn."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def __getattribute__(self, name: str):
        if name.startswith("on_"):
            hooks = [getattr(c, name) for c in object.__getattribute__(self, "callbacks")]

            def call(*args: Any, **kwargs: Any) -> None:
                for hook in hooks:
                    hook(*args, **kwargs)

            return call
        return object.__getattribute__(self, name)


__all__ = ["Callback", "CallbackList"]
