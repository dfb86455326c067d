"""The micro-sam runners of ``bench/peers.py``: micro_sam's training path (``micro_sam.training``:
``TrainableSAM``, ``ConvertToSamInputs``, ``SamTrainer``, ``default_sam_loader``, PEFT
``PEFT_Sam``) around the demo SAM rebuilt exactly in Meta's format.

``micro_sam.training.train_sam`` takes a ``model_type`` (``vit_t/b/l/h``) and reads the
architecture off the checkpoint, so it cannot hold the demo's small ViT. This runner does
what ``train_sam`` does, step for step (``get_trainable_sam_model``'s PEFT wrapping and
freezing, ``ConvertToSamInputs`` with ``box_distortion_factor`` 0.025, AdamW with
``ReduceLROnPlateau`` (factor 0.9, patience 3), ``SamTrainer`` with ``mixed_precision=True``
(bfloat16 autocast on a CPU, torch_em's choice), ``n_objects_per_batch`` 25, ``SamLogger``,
``fit(iterations=steps)``), with the Meta ``Sam`` built by samtune's converter in place of
``get_sam_model``.

Box prompts only (the issue's "micro-sam, box prompts only"): ``n_sub_iteration`` 1 (no
corrective clicks), ``mask_prob`` 0 (no mask prompts) and ``SamTrainer``'s per-iteration
choice, which alternates a single point (even iterations) and a box (odd), made to pick the
box every time by a subclass overriding ``_get_prompt_and_multimasking_choices``: micro-sam
has no option for it.

Learning rate: ``train_sam``'s default 1e-5 is meant for many epochs of a ViT-B; the bench
passes samtune's demo learning rate (3e-4) so both train at the same rate for the same steps.
Validation (torch_em validates after every epoch; micro-sam needs a loader) runs on one batch
of the demo's val split.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from _peers_common import (
    RunRecord,
    StepClock,
    demo_root,
    meta_sam,
    read_meta_checkpoint,
    samtune_state_from_meta,
    save_weights,
    write_label_images,
)

LR = 3e-4  # samtune's demo learning rate (samtune.train.config.DEMO_DEFAULTS)
LORA_RANK = 8
REQUIRED = ("micro_sam", "torch_em", "segment_anything", "tifffile")


def missing_modules() -> list[str]:
    import importlib.util

    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def prepare_data(folder: Path) -> None:
    """Write the label TIFFs of the train and val splits once (the parent calls this)."""
    for split in ("train", "val"):
        write_label_images(split, folder / split)


def _loader(folder: Path, split: str, batch_size: int, n_samples: int | None, shuffle: bool):
    """micro-sam's ``default_sam_loader`` over a split's images and label TIFFs."""
    from micro_sam.training import default_sam_loader

    labels = sorted((folder / split).glob("*.tif"))
    image_dir = demo_root() / split / "images"
    raws = [str(image_dir / (p.stem + ".png")) for p in labels]
    return default_sam_loader(
        raw_paths=raws,
        raw_key=None,
        label_paths=[str(p) for p in labels],
        label_key=None,
        patch_shape=(128, 128),
        with_segmentation_decoder=False,
        with_channels=True,
        is_train=shuffle,
        n_samples=n_samples,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=0,
    )


def _trainable_sam(checkpoint: Path, strategy: str):
    """``get_trainable_sam_model``'s wrapping of the demo ``Sam``: LoRA via ``PEFT_Sam``
    (rank 8, q and v of every encoder block; the encoder otherwise frozen), or the decoder
    strategy's freezing (image and prompt encoders)."""
    from micro_sam.models.peft_sam import PEFT_Sam
    from micro_sam.training.trainable_sam import TrainableSAM

    import samtune

    sam = meta_sam(samtune.load_model("demo").config, read_meta_checkpoint(checkpoint))
    if strategy == "lora":
        sam = PEFT_Sam(sam, rank=LORA_RANK).sam
    else:
        for name, param in sam.named_parameters():
            if name.startswith(("image_encoder", "prompt_encoder")):
                param.requires_grad = False
    return TrainableSAM(sam)


def run(
    strategy: str, data: Path, checkpoint: Path, seed: int, steps: int, batch_size: int, work: Path
) -> RunRecord:
    """Train micro-sam's ``strategy`` (``decoder`` or ``lora``) for ``steps`` box-only steps."""
    from micro_sam.training import sam_trainer
    from micro_sam.training.training import _get_optimizer_and_scheduler
    from micro_sam.training.util import ConvertToSamInputs

    class BoxOnlySamTrainer(sam_trainer.SamTrainer):
        def _get_prompt_and_multimasking_choices(self, current_iteration):
            return 0, 0, True, False  # no points, a box, one mask

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = _trainable_sam(checkpoint, strategy)
    train_loader = _loader(data, "train", batch_size, None, True)
    val_loader = _loader(data, "val", batch_size, batch_size, False)
    optimizer, scheduler = _get_optimizer_and_scheduler(
        [p for p in model.parameters()], LR, torch.optim.AdamW,
        torch.optim.lr_scheduler.ReduceLROnPlateau, None,
    )  # fmt: skip
    clock = StepClock()
    clock.hook(optimizer)
    trainer = BoxOnlySamTrainer(
        name="bench", save_root=str(work), train_loader=train_loader, val_loader=val_loader,
        model=model, optimizer=optimizer, device=torch.device("cpu"), lr_scheduler=scheduler,
        logger=sam_trainer.SamLogger, log_image_interval=100, mixed_precision=True,
        convert_inputs=ConvertToSamInputs(transform=model.transform, box_distortion_factor=0.025),
        n_objects_per_batch=25, n_sub_iteration=1, compile_model=False, early_stopping=10,
        mask_prob=0.0,
    )  # fmt: skip
    clock.start()
    trainer.fit(iterations=steps, overwrite_training=True)
    weights = save_weights(
        samtune_state_from_meta(model.sam.state_dict()), work / "weights.safetensors"
    )
    steps_per_epoch = len(train_loader)
    return RunRecord(
        runner="",
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        weights=weights,
        notes={"lr": LR, "strategy": strategy, "mixed_precision": "bfloat16 autocast (cpu)"},
        **clock.summary(steps_per_epoch),
    )
