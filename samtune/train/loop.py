"""The training loop on Hugging Face Accelerate, top to bottom.

``fit`` resolves the config, then ``train`` does, in order: build the accelerator, load the
model and data, evaluate zero-shot on the test split, apply the strategy, prepare model,
optimizer and data loader, resume if asked, run the epochs (validation, best checkpoint, step
checkpoints, early stopping), save the adapter, evaluate the fine-tuned model and write the
zero-shot versus fine-tuned table.

One forward call of the prepared module per optimizer micro-step does everything that needs
gradients (image encoder when it trains, prompt encoder, mask decoder, and every round of
simulated corrective clicks), so DistributedDataParallel sees exactly one forward per backward.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, RunError
from ..fast import compile_model, use_flex_attention
from ..io import atomic_write
from . import losses
from .cache import EmbeddingCache, cache_key, image_digest
from .checkpoint import (
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .config import FitConfig, build_config, save_yaml


@dataclass
class FitResult:
    """What a run produced.

    ``output_dir`` is the run folder; ``adapter_dir`` holds ``adapter.safetensors`` of the final
    model, ``best_dir`` that of the best validation step (``None`` without validation).
    ``history`` lists every validation (step, epoch, metrics); ``comparison`` holds the
    zero-shot and fine-tuned test metrics per protocol and ``table`` their markdown table.
    """

    output_dir: Path
    adapter_dir: Path
    best_dir: Path | None
    best_metric: float | None
    best_step: int | None
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)
    table: str = ""
    model: Any = None


# --------------------------------------------------------------------------- public entry


def fit(
    model: Any = None,
    strategy: Any = None,
    dataset: Any = None,
    output_dir: str | Path | None = None,
    *,
    config: str | Path | dict | FitConfig | None = None,
    **options: Any,
) -> FitResult:
    """Fine-tune SAM with a strategy on a dataset; the Python twin of ``samtune fit``.

    Args:
        model: model source (preset, path, hub id) or a ``SamModel``; default
            ``facebook/sam-vit-base`` (``demo`` for ``dataset="demo"``).
        strategy: strategy name (``lora``, ``decoder``, ...) or a ``Strategy`` instance.
        dataset: recipe name (``demo``, ``trashcan``, ...) or a dataset object; a dict
            ``{"train": ds, "val": ds, "test": ds}`` gives the splits directly.
        output_dir: the run folder (default ``runs/<strategy>-<dataset>``).
        config: a YAML file, mapping or :class:`FitConfig`; explicit arguments override it.
        **options: any :class:`FitConfig` field (``epochs``, ``lr``, ``prompt``, ``resume``...).

    Returns:
        :class:`FitResult`.

    Raises:
        ConfigError: an invalid option; RunError: the run failed (NaN loss, out of memory).
    """
    objects: dict[str, Any] = {}
    overrides: dict[str, Any] = dict(options)
    for key, value in (("model", model), ("strategy", strategy), ("dataset", dataset)):
        if value is None or isinstance(value, (str, Path)):
            overrides[key] = str(value) if value is not None else None
        else:
            objects[key] = value
            overrides[key] = _describe_object(key, value)
    overrides["output_dir"] = str(output_dir) if output_dir is not None else None
    cfg = build_config(config, **overrides)
    # build_config reads None as "not given" (the CLI's unset options); an option passed here
    # as None is explicit: None turns val_split/test_split off, other fields get their default.
    nullable = {f.name for f in dataclasses.fields(FitConfig) if "None" in str(f.type)}
    cfg = dataclasses.replace(
        cfg, **{k: None for k, v in options.items() if v is None and k in nullable}
    )
    return train(cfg.resolved(), **objects)


def _describe_object(kind: str, value: Any) -> str:
    if kind == "strategy":
        return getattr(value, "name", type(value).__name__)
    if kind == "model":
        from ..models import model_source

        return model_source(value)
    return getattr(value, "name", None) or "custom"


# --------------------------------------------------------------------------- the module DDP wraps


class SamTrainStep(nn.Module):
    """Everything that needs gradients in one forward: encoder (if training), prompts, decoder.

    ``forward`` returns one ``(pred_masks (M, K, r, r), iou_pred (M, K))`` pair per round:
    one round for box or point prompts, ``1 + rounds`` for interactive training.
    """

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam

    def forward(
        self,
        image_index: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        multimask: bool = False,
        rounds: int = 0,
        seed: int = 0,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Args (M prompts over B images):

        image_index: (M,) which image each prompt belongs to.
        pixel_values: (B, 3, S, S) preprocessed images (the encoder trains), or
        image_embeddings: (B, C, s, s) precomputed embeddings (the encoder is frozen).
        boxes: (M, 4) XYXY in model pixels; points: (M, k, 2) model pixels and
        point_labels: (M, k) (1 positive, 0 negative); targets: (M, r, r) bool low-res masks,
        needed for ``rounds > 0`` (simulated clicks); seed: for click sampling.
        """
        if pixel_values is not None:
            image_embeddings = self.sam.vision_encoder(pixel_values).last_hidden_state
        # index_select, not image_embeddings[image_index]: the backward of advanced indexing
        # (index_put_ with accumulate) adds the prompts' gradients with multithreaded atomics
        # on CPU, in a different order each run; index_select's (index_add_) is ordered.
        embeddings = image_embeddings.index_select(0, image_index)
        prompt = {}
        if boxes is not None:
            prompt["input_boxes"] = boxes[:, None, :]
        if points is not None:
            prompt["input_points"] = points[:, None]
            prompt["input_labels"] = point_labels[:, None]
        out = self.sam(image_embeddings=embeddings, multimask_output=multimask, **prompt)
        results = [(out.pred_masks[:, 0], out.iou_scores[:, 0])]
        if rounds:
            generator = torch.Generator().manual_seed(seed)
            pts, lbl = points, point_labels
            logits = _best_logits(*results[-1])
            for _ in range(rounds):
                click, label = _sample_clicks(logits.detach(), targets, generator)
                # low-res pixel -> model pixel (centre of the low-res cell)
                scale = self.sam.config.vision_config.image_size / logits.shape[-1]
                click_xy = (click.to(logits.dtype) + 0.5) * scale
                pts = torch.cat([pts, click_xy[:, None]], dim=1)
                lbl = torch.cat([lbl, label[:, None].to(lbl.dtype)], dim=1)
                out = self.sam(
                    image_embeddings=embeddings,
                    input_points=pts[:, None],
                    input_labels=lbl[:, None],
                    input_masks=logits.detach()[:, None],
                    multimask_output=False,
                )
                results.append((out.pred_masks[:, 0], out.iou_scores[:, 0]))
                logits = results[-1][0][:, 0]
        return results


def _best_logits(pred_masks: torch.Tensor, iou_pred: torch.Tensor) -> torch.Tensor:
    """(M, K, r, r) -> (M, r, r): the candidate the IoU head rates highest (as at inference)."""
    pick = iou_pred.argmax(dim=1)
    return pred_masks[torch.arange(pred_masks.shape[0]), pick]


def _sample_clicks(
    logits: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per prompt, uniform over the error region (as SAM was trained).

    Returns ``(xy (M, 2) long in low-res pixels, label (M,) 1 for a missed pixel, 0 for a false
    one)``; a prompt without error gets a positive click on its target (or the centre).
    """
    pred = logits > 0
    gt = targets.bool()
    error = (pred ^ gt).flatten(1).float().cpu()
    fallback = gt.flatten(1).float().cpu()
    weights = torch.where(error.sum(1, keepdim=True) > 0, error, fallback)
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
    flat = torch.multinomial(weights, 1, generator=generator)[:, 0].to(logits.device)
    r = logits.shape[-1]
    ys, xs = flat // r, flat % r
    label = gt.flatten(1).gather(1, flat[:, None])[:, 0].long()
    return torch.stack([xs, ys], dim=1), label


class EpochSampler(torch.utils.data.Sampler):
    """A shuffled order that depends only on ``(seed, epoch)``, so a resumed run sees the same."""

    def __init__(self, length: int, seed: int, shuffle: bool = True) -> None:
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


# --------------------------------------------------------------------------- helpers


def _load_splits(cfg: FitConfig, dataset: Any) -> dict[str, Any]:
    if isinstance(dataset, dict):
        return dataset
    if dataset is not None:
        return {cfg.train_split: dataset}
    from ..data import load_dataset

    splits = {}
    for split in dict.fromkeys(s for s in (cfg.train_split, cfg.val_split, cfg.test_split) if s):
        splits[split] = load_dataset(
            cfg.dataset, split, root=cfg.dataset_root, **cfg.dataset_options
        )
    return splits


def _tracker(cfg: FitConfig) -> str | None:
    if cfg.log_with in (None, "none", "no"):
        return None
    if cfg.log_with != "auto":
        return cfg.log_with
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        return "tensorboard"
    return None


def enable_checkpointing(model: nn.Module) -> None:
    """Recompute the image encoder's activations in backward (non-reentrant checkpointing).

    transformers 5.24 renamed ``gradient_checkpointing_enable`` to
    ``activation_checkpointing_enable``; older 5.x releases only have the first.
    """
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is None:
        enable = model.gradient_checkpointing_enable
        kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
    else:
        params = inspect.signature(enable).parameters
        key = next((k for k in params if k.endswith("checkpointing_kwargs")), None)
        kwargs = {key: {"use_reentrant": False}} if key else {}
    enable(**kwargs)


def _make_accelerator(cfg: FitConfig, run_dir: Path):
    from accelerate import Accelerator

    # Under torchrun (or `accelerate launch --multi_gpu`) on a machine without GPUs, Accelerate
    # only sets up a gloo process group when told it runs on the CPU; otherwise every process
    # would train alone on all the data.
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import (
        DataLoaderConfiguration,
        DistributedDataParallelKwargs,
        ProjectConfiguration,
    )

    # Accelerate keeps its settings in process-wide singletons, so a second fit() in the same
    # process (a notebook, a sweep) with another mixed precision or accumulation would be
    # refused. Start each run from fresh settings; the process group (PartialState) stays.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = world > 1 and not torch.cuda.is_available()
    return Accelerator(
        cpu=cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with=_tracker(cfg),
        project_config=ProjectConfiguration(
            project_dir=str(run_dir), logging_dir=str(run_dir / "logs")
        ),
        # On a GPU: pinned batches (the loader's pin_memory) copied without blocking the host.
        dataloader_config=DataLoaderConfiguration(
            non_blocking=torch.cuda.is_available() and not cpu
        ),
        # Box prompts leave point/mask prompt-encoder parameters without gradient.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _single_process_from_multi_launch(accelerator) -> bool:
    """``accelerate launch --num_processes 2`` without GPUs runs one plain process (with
    MASTER_ADDR set but no WORLD_SIZE): the user asked for several and should hear how."""
    return (
        accelerator.num_processes == 1
        and "ACCELERATE_MIXED_PRECISION" in os.environ
        and "MASTER_ADDR" in os.environ
        and "WORLD_SIZE" not in os.environ
    )


def _schedule(cfg: FitConfig, total_steps: int):
    warmup = min(cfg.warmup_steps or 0, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=float))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _Embeddings:
    """Image embeddings for frozen encoders: from the cache when there, else computed once."""

    def __init__(self, sam, dataset, cache: EmbeddingCache | None, preprocess, accelerator):
        from ..models import fingerprint

        self.sam, self.dataset, self.cache, self.accelerator = sam, dataset, cache, accelerator
        self.keys: dict[int, str] = {}
        self.encoder_fp = fingerprint(sam.vision_encoder) if cache is not None else ""
        self.preprocess = preprocess

    def _key(self, index: int) -> str:
        if index not in self.keys:
            image_path = getattr(self.dataset, "image_path", None)
            data = None
            if image_path is not None:
                try:
                    data = Path(image_path(index)).read_bytes()
                except (OSError, TypeError):
                    data = None
            if data is None:
                data = self.dataset[index].image
            self.keys[index] = cache_key(self.encoder_fp, self.preprocess, image_digest(data))
        return self.keys[index]

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor, indices: list[int]) -> torch.Tensor:
        if self.cache is None:
            with self.accelerator.autocast():
                return self.sam.vision_encoder(pixel_values).last_hidden_state.float()
        found = [self.cache.get(self._key(i)) for i in indices]
        missing = [j for j, e in enumerate(found) if e is None]
        if missing:
            with self.accelerator.autocast():
                fresh = self.sam.vision_encoder(pixel_values[missing]).last_hidden_state.float()
            for j, emb in zip(missing, fresh, strict=True):
                self.cache.put(self._key(indices[j]), emb)
                found[j] = emb
        return torch.stack([e.to(pixel_values.device) for e in found])


# --------------------------------------------------------------------------- train


def train(
    cfg: FitConfig, *, model: Any = None, strategy: Any = None, dataset: Any = None
) -> FitResult:
    """Run training for a resolved :class:`FitConfig` (see :func:`fit`)."""
    from accelerate.utils import set_seed

    from ..models import base_fingerprint, load_model, preprocess_config
    from .config import check_inputs

    run_dir = Path(cfg.output_dir)
    cfg.validate()  # a FitConfig changed after it was built is checked again
    # Names, splits, dataset files, strategy options: wrong ones fail here, before any model or
    # data is loaded and before anything is written.
    strategy = check_inputs(cfg, strategy=strategy, dataset=dataset)
    existing = list_checkpoints(run_dir)
    if existing and not cfg.resume:
        raise ConfigError(
            f"{str(run_dir)!r} already holds checkpoints (latest {existing[-1].name}); pass "
            "--resume to continue that run, or choose another --output-dir"
        )
    accelerator = _make_accelerator(cfg, run_dir)
    say = accelerator.print
    if _single_process_from_multi_launch(accelerator):
        say(
            "note: `accelerate launch --num_processes N` started one process: without GPUs it "
            "needs --multi_gpu (then samtune trains on N CPU processes with gloo), or use "
            "`torchrun --nproc_per_node N -m samtune fit ...`"
        )
    set_seed(cfg.seed)
    if cfg.deterministic:  # process-wide, like the seed; see docs/training.md, Reproducibility
        if torch.cuda.is_available():  # cuBLAS reads it when it first starts
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        # Strict: with warn_only, SDPA's memory-efficient backward stays nondeterministic.
        torch.use_deterministic_algorithms(True)

    # ---- model, data
    if model is None:
        model = load_model(cfg.model, seed=cfg.seed)
    base_fingerprint(model)  # remember the base weights before anything changes them
    pre = preprocess_config(model)
    with accelerator.main_process_first():  # one process generates/downloads, the others wait
        splits = _load_splits(cfg, dataset)
    train_ds = splits[cfg.train_split]
    val_ds = splits.get(cfg.val_split) if cfg.val_split else None
    test_ds = splits.get(cfg.test_split) if cfg.test_split else None

    # ---- zero-shot evaluation on the test split, before any change to the model
    protocols = ["box"] + (["point"] if cfg.compare_point else [])
    comparison: dict[str, Any] = {}
    if cfg.compare and test_ds is not None and not cfg.resume:
        comparison["zero_shot"] = _evaluate(model, test_ds, protocols, accelerator, "zero-shot")

    # ---- strategy
    if strategy is None or isinstance(strategy, str):
        from ..strategies import get_strategy

        strategy = get_strategy(strategy or cfg.strategy, **cfg.strategy_options)
    model = strategy.apply(model)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"strategy {cfg.strategy!r} left no parameter trainable")
    n_train = sum(p.numel() for p in trainable)
    say(
        f"strategy {cfg.strategy}: {n_train:,} trainable parameters of "
        f"{sum(p.numel() for p in model.parameters()):,}"
    )
    frozen_encoder = bool(strategy.freezes_image_encoder)
    if cfg.gradient_checkpointing and not frozen_encoder:
        enable_checkpointing(model)
    if cfg.attention == "flex":
        use_flex_attention(model)
    compiled = compile_model(model, cfg.compile)
    if compiled:
        say(f"torch.compile ({cfg.compile}): {', '.join(compiled)}; the first steps compile")

    # ---- embedding cache
    cache = None
    if frozen_encoder and cfg.cache != "off":
        if cfg.augment:
            say("embedding cache off: augmentation changes the images every epoch")
        else:
            cache = EmbeddingCache(
                cfg.cache_dir or run_dir / "cache",
                memory_mb=cfg.cache_memory_mb,
                device=accelerator.device,
            )
    elif cfg.cache == "on":
        say(f"embedding cache off: strategy {cfg.strategy!r} trains the image encoder")

    # ---- data loader
    from ..data import PromptedDataset, collate_prompted

    augment = None
    if cfg.augment:
        from ..data.transforms import AugmentConfig

        augment = AugmentConfig()
    prompted = PromptedDataset(
        train_ds,
        pre,
        prompt="box" if cfg.prompt == "box" else "point",
        max_instances=cfg.max_instances,
        augment=augment,
        jitter=cfg.box_jitter if cfg.prompt == "box" else 0.0,
        seed=cfg.seed,
    )
    sampler = EpochSampler(len(prompted), cfg.seed)
    loader = torch.utils.data.DataLoader(
        prompted,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=collate_prompted,
        num_workers=cfg.num_workers,
        pin_memory=accelerator.device.type == "cuda",
    )

    # ---- optimizer, schedule, prepare
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_module = SamTrainStep(model)
    step_module, optimizer, loader = accelerator.prepare(step_module, optimizer, loader)
    steps_per_epoch = max(1, math.ceil(len(loader) / cfg.grad_accum))
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, total_steps))
    embed = _Embeddings(model, train_ds, cache, pre, accelerator) if frozen_encoder else None

    # ---- resume
    state = TrainerState()
    saved = {"model": step_module, "optimizer": optimizer, "scheduler": scheduler}
    if cfg.resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            say(f"--resume: no checkpoint in {run_dir}, starting from the beginning")
        else:
            state = load_checkpoint(accelerator, ckpt, **saved)
            say(f"resumed from {ckpt.name} (epoch {state.epoch}, step {state.step})")
        prev = run_dir / "metrics.json"
        if prev.is_file():
            comparison = json.loads(prev.read_text()).get("comparison", {}) or comparison
    if _tracker(cfg):
        accelerator.init_trackers(
            "samtune",
            config={
                k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))
            },
        )

    # ---- epochs
    if accelerator.is_main_process:  # only once setup succeeded: a failed setup leaves nothing
        save_yaml(cfg, run_dir / "config.yaml")
    eval_each_epoch = cfg.eval_every is None
    ckpt_each_epoch = cfg.checkpoint_every is None
    show = not cfg.quiet and sys.stderr.isatty() and accelerator.is_local_main_process
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=state.step, disable=not show, desc="fit", unit="step")
    running_iou: float | None = None
    stop = state.step >= total_steps
    best_dir = run_dir / "best"

    def validate() -> None:
        nonlocal stop
        if val_ds is None:
            return
        report = _evaluate_one(model, val_ds, cfg.eval_prompt, accelerator, "validation")
        miou = float(report.metrics["miou"])
        entry = {"step": state.step, "epoch": state.epoch, "metrics": dict(report.metrics)}
        state.history.append(entry)
        improved = state.best_metric is None or miou > state.best_metric
        if improved:
            state.best_metric, state.best_step = miou, state.step
            state.evals_without_improvement = 0
            _save_adapter(model, best_dir, accelerator)
        else:
            state.evals_without_improvement += 1
        accelerator.log({"val/miou": miou}, step=state.step)
        say(f"step {state.step}: validation mIoU {miou:.4f}" + (" (best)" if improved else ""))
        if accelerator.is_main_process:
            _write_metrics(run_dir, state, comparison)
        if cfg.early_stopping and state.evals_without_improvement >= cfg.early_stopping:
            say(f"early stopping: no improvement in {cfg.early_stopping} validations")
            stop = True

    try:
        while not stop and state.epoch < cfg.epochs:
            sampler.set_epoch(state.epoch)
            if hasattr(prompted, "set_epoch"):
                prompted.set_epoch(state.epoch)
            batches = loader
            if state.batch_in_epoch:
                batches = accelerator.skip_first_batches(loader, state.batch_in_epoch)
            # Accelerate's loaders count their own passes and reset the sampler's epoch to that
            # count on every iter(); a resumed run (and the skipping loader) must be told.
            if hasattr(batches, "set_epoch"):
                batches.set_epoch(state.epoch)
            for batch in batches:
                with accelerator.accumulate(step_module):
                    inputs, targets, weight = _inputs(batch, cfg, embed, model, accelerator.device)
                    inputs["seed"] = cfg.seed * 1_000_003 + state.step
                    rounds = step_module(**inputs)
                    outputs = [
                        losses.sam_loss(
                            pred,
                            iou,
                            targets,
                            focal_weight=cfg.focal_weight,
                            dice_weight=cfg.dice_weight,
                            iou_weight=cfg.iou_weight,
                        )
                        for pred, iou in rounds
                    ]
                    loss = weight * sum(o.total for o in outputs) / len(outputs)
                    # One device-to-host copy per step: this process's loss and mean IoU, and
                    # whether every process's loss is finite (a sync per value would stall a
                    # GPU whose step is short).
                    stats = torch.stack([loss.detach().float(), outputs[-1].iou.mean().float()])
                    finite = accelerator.gather(torch.isfinite(stats[:1]).to(accelerator.device))
                    loss_value, iou_now = stats.tolist()
                    if not bool(finite.all()):
                        raise RunError(
                            f"loss became {loss_value} at step {state.step + 1} (epoch "
                            f"{state.epoch}); training stopped. Last good checkpoint: "
                            f"{_last_ckpt_text(run_dir)}. Lower --lr, use "
                            "--mixed-precision no or bf16, or check the data"
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.max_grad_norm:
                        accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
                    optimizer.step()
                    if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad()
                state.batch_in_epoch += 1
                running_iou = iou_now if running_iou is None else 0.9 * running_iou + 0.1 * iou_now
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", iou=f"{running_iou:.3f}")
                accelerator.log(
                    {
                        "train/loss": loss_value,
                        "train/iou": iou_now,
                        "lr": scheduler.get_last_lr()[0],
                    },
                    step=state.step,
                )
                if cfg.eval_every and state.step % cfg.eval_every == 0:
                    validate()
                if state.step >= total_steps:
                    stop = True
                if cfg.checkpoint_every and (state.step % cfg.checkpoint_every == 0 or stop):
                    save_checkpoint(accelerator, run_dir, state, keep=cfg.keep_checkpoints, **saved)
                if stop:
                    break
            if state.batch_in_epoch >= len(loader):  # the epoch is complete
                state.epoch += 1
                state.batch_in_epoch = 0
                if eval_each_epoch:
                    validate()
                if ckpt_each_epoch:
                    save_checkpoint(accelerator, run_dir, state, keep=cfg.keep_checkpoints, **saved)
            elif stop and ckpt_each_epoch:  # max_steps or early stopping mid-epoch
                save_checkpoint(accelerator, run_dir, state, keep=cfg.keep_checkpoints, **saved)
    except RuntimeError as exc:
        if isinstance(exc, RunError) or not _is_oom(exc):
            raise
        raise RunError(
            f"out of memory at step {state.step + 1}: lower --batch-size or max_instances, "
            "turn on gradient_checkpointing, or use a lighter strategy (lora, decoder)"
        ) from exc
    finally:
        bar.close()

    # ---- final adapter, best, comparison
    accelerator.wait_for_everyone()
    if (
        eval_each_epoch is False
        and val_ds is not None
        and (not state.history or state.history[-1]["step"] != state.step)
    ):
        validate()
    adapter_dir = run_dir / "adapter"
    _save_adapter(model, adapter_dir, accelerator)
    model.eval()
    table = ""
    if cfg.compare and test_ds is not None:
        comparison["fine_tuned"] = _evaluate(model, test_ds, protocols, accelerator, "fine-tuned")
        if "zero_shot" in comparison:
            table = _comparison_table(comparison, protocols)
            say(table)
    if accelerator.is_main_process:
        _write_metrics(run_dir, state, comparison, table)
        if table:
            with atomic_write(run_dir / "results.md") as tmp:
                tmp.write_text(
                    f"# {cfg.strategy} on {cfg.dataset}\n\nModel `{cfg.model}`, {state.step} "
                    f"steps, test split `{cfg.test_split}`.\n\n{table}\n"
                )
    accelerator.end_training()
    return FitResult(
        output_dir=run_dir,
        adapter_dir=adapter_dir,
        best_dir=best_dir if state.best_step is not None else None,
        best_metric=state.best_metric,
        best_step=state.best_step,
        steps=state.step,
        history=state.history,
        comparison=_plain(comparison),
        table=table,
        model=model,
    )


def _plain(comparison: dict) -> dict:
    out = {}
    for k, v in comparison.items():
        out[k] = {p: (dict(r.metrics) if hasattr(r, "metrics") else r) for p, r in v.items()}
    return out


def _last_ckpt_text(run_dir: Path) -> str:
    last = latest_checkpoint(run_dir)
    return str(last) if last else "none yet"


def _inputs(batch: dict, cfg: FitConfig, embed, model, device) -> tuple[dict, torch.Tensor, float]:
    """Collated batch -> keyword arguments of :class:`SamTrainStep`, (M, r, r) targets, weight."""
    vision = model.config.vision_config
    low = 4 * (vision.image_size // vision.patch_size)  # the decoder upsamples the grid 4x
    pixels = batch["pixel_values"]  # stacked by collate_prompted (pinned on a GPU machine)
    pixel_values = (pixels if torch.is_tensor(pixels) else torch.stack(list(pixels))).to(device)
    counts = [len(m) for m in batch["masks"]]
    image_index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    targets = torch.cat(
        [
            g.masks_to_model(m, size=low)
            for g, m in zip(batch["geometry"], batch["masks"], strict=True)
        ]
    ).to(device)
    if not counts or sum(counts) == 0:
        # No instance on this process: one dummy prompt with zero weight keeps every process
        # doing the same forward/backward (DDP needs that).
        batch = dict(batch)
        batch["boxes"] = [torch.tensor([[0.0, 0.0, 1.0, 1.0]])]
        batch["points"] = [torch.tensor([[[0.5, 0.5]]])]
        batch["point_labels"] = [torch.ones(1, 1, dtype=torch.long)]
        image_index = torch.zeros(1, dtype=torch.long)
        targets = torch.zeros(1, low, low, dtype=torch.bool, device=device)
        weight = 0.0
    else:
        weight = 1.0
    inputs: dict[str, Any] = {"image_index": image_index.to(device)}
    if embed is not None:
        inputs["image_embeddings"] = embed(pixel_values, [int(i) for i in batch["index"]])
    else:
        inputs["pixel_values"] = pixel_values
    if cfg.prompt == "box":
        inputs["boxes"] = torch.cat([torch.as_tensor(b) for b in batch["boxes"]]).float().to(device)
    else:
        inputs["points"] = (
            torch.cat([torch.as_tensor(p) for p in batch["points"]]).float().to(device)
        )
        inputs["point_labels"] = (
            torch.cat([torch.as_tensor(lab) for lab in batch["point_labels"]]).long().to(device)
        )
        inputs["multimask"] = True
        if cfg.prompt == "interactive":
            inputs["rounds"] = cfg.interactive_rounds
            inputs["targets"] = targets
    return inputs, targets.bool(), weight


def _evaluate_one(model, dataset, prompt: str, accelerator, name: str):
    from ..evaluate import evaluate

    return evaluate(
        model, dataset, prompt=prompt, accelerator=accelerator, progress=False, name=name
    )


def _evaluate(model, dataset, protocols: list[str], accelerator, name: str) -> dict:
    was_training = model.training
    reports = {p: _evaluate_one(model, dataset, p, accelerator, name) for p in protocols}
    model.train(was_training)
    return reports


def _comparison_table(comparison: dict, protocols: list[str]) -> str:
    reports = all(hasattr(comparison[k][p], "metrics") for k in comparison for p in protocols)
    if reports:
        from ..evaluate import format_comparison

        return "\n\n".join(
            f"**{p} prompts**\n\n"
            + format_comparison(
                {"zero-shot": comparison["zero_shot"][p], "fine-tuned": comparison["fine_tuned"][p]}
            )
            for p in protocols
        )
    lines = ["| protocol | zero-shot mIoU | fine-tuned mIoU | change |", "|---|---|---|---|"]
    plain = _plain(comparison)
    for p in protocols:
        a = float(plain["zero_shot"][p]["miou"])
        b = float(plain["fine_tuned"][p]["miou"])
        lines.append(f"| {p} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    return "\n".join(lines)


def _write_metrics(run_dir: Path, state: TrainerState, comparison: dict, table: str = "") -> None:
    _write_json(
        run_dir / "metrics.json",
        {
            "validation": state.history,
            "best": {"step": state.best_step, "miou": state.best_metric},
            "steps": state.step,
            "comparison": _plain(comparison),
            "table": table,
        },
    )


def _save_adapter(model, directory: Path, accelerator) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        from ..adapters import save_adapter

        save_adapter(model, directory)
    accelerator.wait_for_everyone()


__all__ = ["EpochSampler", "FitResult", "SamTrainStep", "fit", "train"]
