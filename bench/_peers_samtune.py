"""The samtune runners of ``bench/peers.py``: ``samtune.fit`` on the demo, as a user runs it.

Every option is samtune's default (or the named recipe's) except what the bench fixes for
all runners alike: the model (``demo``), the data (the demo's train split), the number of
optimizer steps, the batch size and the seed. Validation during training and the
zero-shot/fine-tuned comparison are off: the bench scores every runner the same way after.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from _peers_common import DEMO_MODEL, RunRecord, StepClock, save_weights

from samtune.train.callbacks import Callback

TRAIN_IMAGES = 200  # the demo's train split (samtune.data.synthetic.DEFAULT_COUNTS)


class _ClockCallback(Callback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_begin(self, run: Any) -> None:
        self.clock.start()

    def on_step_end(self, run: Any, loss: float, iou: float) -> None:
        self.clock.tick()


def merged_state_dict(model: Any) -> dict:
    """The base model's state dict with any LoRA merged (names and shapes of the demo)."""
    import samtune
    from samtune.adapters import merge_adapter

    merged = merge_adapter(model)  # LoRA folded in; decoder: a plain copy
    base = samtune.load_model(DEMO_MODEL)
    names = set(base.state_dict())
    state = {k: v for k, v in merged.state_dict().items() if k in names}
    missing = names - set(state)
    if missing:
        raise RuntimeError(f"trained model lacks {sorted(missing)[:5]}")
    return state


def run(
    strategy: str, recipe: str, seed: int, steps: int, batch_size: int, work: Path
) -> RunRecord:
    """Train ``strategy`` with ``recipe`` for ``steps`` steps; the record of the run."""
    import samtune

    clock = StepClock()
    steps_per_epoch = math.ceil(TRAIN_IMAGES / batch_size)
    result = samtune.fit(
        model=DEMO_MODEL,
        strategy=strategy,
        dataset="demo",
        output_dir=work / "run",
        recipe=recipe,
        max_steps=steps,
        epochs=math.ceil(steps / steps_per_epoch),
        batch_size=batch_size,
        seed=seed,
        val_split=None,
        compare=False,
        quiet=True,
        log_with="none",
        callbacks=[_ClockCallback(clock)],
    )
    weights = save_weights(merged_state_dict(result.model), work / "weights.safetensors")
    return RunRecord(
        runner="",
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        weights=weights,
        notes={"recipe": recipe, "strategy": strategy},
        **clock.summary(steps_per_epoch),
    )
