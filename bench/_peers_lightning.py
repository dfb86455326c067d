"""The lightning-sam runner of ``bench/peers.py``: luca-medeiros/lightning-sam's code as
published, imported from a checkout (``--lightning-sam PATH``), never edited.

What the bench sets, through lightning-sam's own mechanisms:

- its config (``lightning_sam/config.py``'s ``cfg``, a ``Box``): ``num_devices`` 1, the batch
  size, ``num_workers`` 0, ``num_epochs`` 2 (its loop runs epochs ``1 .. num_epochs - 1``:
  one pass), ``eval_interval`` past the run (its loop validates from epoch 2 on), the output
  folder, the dataset paths (the demo's COCO json and image folders) and the model: ``type``
  ``samtune_demo``, ``checkpoint`` the demo in Meta's format;
- the model: ``segment_anything.sam_model_registry`` gets a ``samtune_demo`` entry that
  builds Meta's ``Sam`` with the demo's architecture and loads the checkpoint (its
  ``Model.setup`` looks the type up there; vit_b/l/h cannot hold the demo's small ViT);
- the number of steps: its ``load_datasets`` builds the same ``COCODataset`` /
  ``ResizeAndPad`` / ``collate_fn`` loader, here with a ``RandomSampler`` of ``steps x batch``
  draws in place of ``shuffle=True``, so its one epoch is exactly ``steps`` steps;
- ``main()``'s body (``Fabric``, ``Model.setup``, ``configure_opt``, ``fabric.setup``,
  ``train_sam``) is run line by line with the CPU as accelerator, the run's seed in place of
  its fixed 1337, and no TensorBoard logger (``train_sam`` logs nothing to it); its final
  ``validate`` (which saves a checkpoint) is skipped: the bench scores the trained
  ``model.model`` itself.

Everything else is lightning-sam's: its loss (20 x focal + dice + IoU MSE, as written), its
optimizer (Adam, lr 8e-4, weight decay 1e-4), its schedule (linear warmup over 250 steps),
its prompts (each annotation's COCO bbox) and its preprocessing (``ResizeAndPad``: images in
0-1, centred padding, no mean/std normalisation, as published).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from _peers_common import (
    RunRecord,
    StepClock,
    coco_split,
    meta_sam,
    read_meta_checkpoint,
    samtune_state_from_meta,
    save_weights,
)

MODEL_TYPE = "samtune_demo"
TRAIN_IMAGES = 200
REQUIRED = ("lightning", "segmentation_models_pytorch", "box", "cv2", "segment_anything")


def check_checkout(path: Path) -> str | None:
    """None when ``path`` is a lightning-sam checkout, else what is wrong (one line)."""
    if not (path / "lightning_sam" / "train.py").is_file():
        return (
            f"--lightning-sam {str(path)!r} is not a checkout of luca-medeiros/lightning-sam "
            "(expected lightning_sam/train.py inside); clone it and pass its folder"
        )
    return None


def missing_modules() -> list[str]:
    import importlib.util

    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def _register_demo(config_path: Path) -> None:
    """Add ``samtune_demo`` to segment_anything's model registry (what ``Model.setup`` reads)."""
    from segment_anything import sam_model_registry

    import samtune

    config = samtune.load_model("demo").config

    def build(checkpoint: str | None = None):
        return meta_sam(config, read_meta_checkpoint(Path(checkpoint)) if checkpoint else None)

    sam_model_registry[MODEL_TYPE] = build


def _configure(cfg, checkpoint: Path, batch_size: int, out_dir: Path) -> None:
    train_root, train_json = coco_split("train")
    val_root, val_json = coco_split("val")
    cfg.num_devices = 1
    cfg.batch_size = batch_size
    cfg.num_workers = 0
    cfg.num_epochs = 2
    cfg.eval_interval = 10**9
    cfg.out_dir = str(out_dir)
    cfg.model.type = MODEL_TYPE
    cfg.model.checkpoint = str(checkpoint)
    cfg.dataset.train.root_dir, cfg.dataset.train.annotation_file = train_root, train_json
    cfg.dataset.val.root_dir, cfg.dataset.val.annotation_file = val_root, val_json


def run(
    checkout: Path, checkpoint: Path, seed: int, steps: int, batch_size: int, work: Path
) -> RunRecord:
    """Train lightning-sam's ``Model`` (mask decoder) for ``steps`` steps; the run's record."""
    sys.path.insert(0, str(checkout / "lightning_sam"))  # its modules import each other so
    import lightning as L
    from config import cfg
    from dataset import COCODataset, ResizeAndPad, collate_fn
    from model import Model
    from torch.utils.data import DataLoader, RandomSampler
    from train import configure_opt, train_sam

    _register_demo(checkpoint)
    _configure(cfg, checkpoint, batch_size, work / "out")
    fabric = L.Fabric(accelerator="cpu", devices=cfg.num_devices, strategy="auto")
    fabric.launch()
    fabric.seed_everything(seed)
    with fabric.device:
        model = Model(cfg)
        model.setup()
    train = COCODataset(
        root_dir=cfg.dataset.train.root_dir,
        annotation_file=cfg.dataset.train.annotation_file,
        transform=ResizeAndPad(model.model.image_encoder.img_size),
    )
    sampler = RandomSampler(train, num_samples=steps * cfg.batch_size)
    loader = DataLoader(train, batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, collate_fn=collate_fn)  # fmt: skip
    loader = fabric._setup_dataloader(loader)
    optimizer, scheduler = configure_opt(cfg, model)
    clock = StepClock()
    clock.hook(optimizer)
    sam = model.model
    model, optimizer = fabric.setup(model, optimizer)
    clock.start()
    train_sam(cfg, fabric, model, optimizer, scheduler, loader, None)
    weights = save_weights(samtune_state_from_meta(sam.state_dict()), work / "weights.safetensors")
    steps_per_epoch = math.ceil(len(train) / batch_size)
    return RunRecord(
        runner="",
        seed=seed,
        steps=steps,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        weights=weights,
        notes={"train_images": len(train), "torch_threads": torch.get_num_threads()},
        **clock.summary(steps_per_epoch),
    )
