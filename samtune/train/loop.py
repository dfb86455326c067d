"""The training loop on Hugging Face Accelerate, top to bottom.

``fit`` resolves the config, then ``train`` runs three parts:

* ``_setup``: check the inputs, build the accelerator, load the model and data, evaluate
  zero-shot on the test split, apply the strategy, prepare model, optimizer and data loader
  (:class:`Run` holds them), resume if asked, write ``config.yaml``;
* the epochs (``_train_epoch``): per batch one ``_train_step`` in Accelerate's ``accumulate``
  idiom (forward, loss, backward, step, schedule, zero_grad; the pieces live in
  :mod:`samtune.train.step`), then ``_after_step`` (logs, validation with the best adapter,
  step checkpoints, early stopping);
* ``_finish``: save the adapter, evaluate the fine-tuned model, write the comparison table.

:class:`~samtune.train.callbacks.Callback` hooks are the seams for benches, tests and users.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import save_adapter
from ..data import PromptedDataset, collate_prompted, load_dataset
from ..data.phrases import dataset_phrases
from ..data.transforms import augment_config
from ..errors import ConfigError, InputError, RunError, SamtuneError, quote_untrusted
from ..evaluation import EvalReport, evaluate, format_comparison
from ..io import (
    RUN_MARKER,
    atomic_write,
    claim_output,
    dump_json,
    is_main_process,
    read_json_object,
)
from ..models.identity import base_fingerprint, model_source, preprocess_config
from ..models.loading import load_model
from ..models.speedups import compile_model, use_flex_attention
from .cache import EmbeddingCache
from .callbacks import Callback, CallbackList
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import (
    RESUME_FILE,
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .config import FitConfig, build_config, check_inputs, dataset_options, save_yaml
from .recompute import enable_checkpointing
from .sam3_options import TEXT_PROMPTS, sam3_loss_config
from .sam3_step import (
    Sam3TextStep,
    TextPromptDataset,
    collate_text,
    has_text_encoder,
    load_tokenizer,
    mask_side,
    sam3_preprocess,
    text_step_loss,
)
from .step import FrozenEncoderEmbeddings, SamTrainStep, batch_inputs, training_loss


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
    callbacks: list[Callback] | None = None,
    tokenize: Callable | None = None,
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
        callbacks: :class:`~samtune.train.callbacks.Callback` objects told of epochs, steps,
            validations and checkpoints.
        tokenize: for ``prompt="text"``, ``tokenize(phrases) -> (input_ids, attention_mask)``;
            default: the tokenizer saved with the model.
        **options: any :class:`FitConfig` field (``epochs``, ``lr``, ``prompt``, ``resume``...).

    Returns:
        :class:`FitResult`.

    Raises:
        ConfigError: an invalid option; RunError: the run failed (NaN loss, out of memory).
    """
    objects: dict[str, Any] = {}
    given: dict[str, Any] = dict(options)  # None is a value here: val_split=None, no validation
    named = {"model": model, "strategy": strategy, "dataset": dataset, "output_dir": output_dir}
    for key, value in named.items():
        if value is None:
            continue  # not given: the config's value, else the default
        if key != "output_dir" and not isinstance(value, (str, Path)):
            objects[key] = value
            value = _describe_object(key, value)
        given[key] = str(value)
    inputs = [config] if isinstance(config, (str, Path)) else []
    cfg = build_config(config, **given).resolved()
    return train(cfg, callbacks=callbacks, inputs=inputs, tokenize=tokenize, **objects)


def _describe_object(kind: str, value: Any) -> str:
    if kind == "strategy":
        return getattr(value, "name", type(value).__name__)
    if kind == "model":
        return model_source(value)
    return getattr(value, "name", None) or "custom"


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
    splits = {}
    for split in dict.fromkeys(s for s in (cfg.train_split, cfg.val_split, cfg.test_split) if s):
        splits[split] = load_dataset(
            cfg.dataset, split, root=cfg.dataset_root, **dataset_options(cfg)
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
        if cfg.schedule == "step":  # lightning-sam's: divided by decay_factor at each decay step
            return 1.0 / cfg.decay_factor ** sum(step >= s for s in cfg.decay_steps)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(dump_json(data, indent=2, default=float))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------- a run


@dataclass
class Run:
    """A training run in progress: what setup built, where it stands, and whether to stop.

    Callbacks receive it; ``state`` is the :class:`TrainerState` that checkpoints save.
    """

    cfg: FitConfig
    accelerator: Any
    model: nn.Module  # the SamModel with the strategy applied
    step_module: nn.Module  # SamTrainStep, prepared (DDP-wrapped on several processes)
    optimizer: Any
    scheduler: Any
    loader: Any
    prompted: Any  # the prompted training dataset (its instance sampling follows the epoch)
    sampler: EpochSampler
    embed: FrozenEncoderEmbeddings | None
    splits: dict[str, Any]
    callbacks: CallbackList
    total_steps: int
    epochs: int = 1  # passes over the training split: run_length
    state: TrainerState = field(default_factory=TrainerState)
    comparison: dict[str, Any] = field(default_factory=dict)
    stop: bool = False
    running_iou: float | None = None
    text_loss: Any = None  # Sam3LossConfig, for prompt: text

    @property
    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def protocols(self) -> list[str]:
        return compare_protocols(self.cfg)

    def split(self, name: str | None) -> Any:
        return self.splits.get(name) if name else None

    def say(self, text: str) -> None:
        self.accelerator.print(text)


# --------------------------------------------------------------------------- train


def train(
    cfg: FitConfig,
    *,
    model: Any = None,
    strategy: Any = None,
    dataset: Any = None,
    callbacks: list[Callback] | None = None,
    inputs: list[str | Path] | tuple = (),
    tokenize: Callable | None = None,
) -> FitResult:
    """Run training for a resolved :class:`FitConfig` (see :func:`fit`): setup, epochs, finish.

    ``inputs`` are files the run reads besides those ``cfg`` names (the ``-c`` config file):
    they are never written (see :func:`samtune.io.check_output`).
    """
    strategy, previous = _check(cfg, strategy, dataset)
    with _claim_run_folder(cfg, [*inputs, *_input_paths(cfg)]):
        run = _setup(cfg, model, strategy, dataset, CallbackList(callbacks or []), previous,
                     tokenize)  # fmt: skip
        run.callbacks.on_train_begin(run)
        show = not cfg.quiet and sys.stderr.isatty() and run.accelerator.is_local_main_process
        from tqdm.auto import tqdm

        with tqdm(total=run.total_steps, initial=run.state.step, disable=not show, desc="fit",
                  unit="step") as bar:  # fmt: skip
            run.stop = run.state.step >= run.total_steps
            while not run.stop and run.state.epoch < run.epochs:
                _guard_oom(run, _train_epoch, bar)
        result = _finish(run)
        run.callbacks.on_train_end(run, result)
    return result


RUN_ENTRIES = ("config.yaml", "metrics.json", "results.md", "adapter", "best", "checkpoints")
"""What ``fit`` writes into its run folder (plus ``logs`` with a tracker and ``cache``)."""


def _run_entries(cfg: FitConfig) -> list[str]:
    names = list(RUN_ENTRIES)
    if _tracker(cfg):
        names.append("logs")
    if cfg.cache_dir is None and cfg.cache != "off":
        names.append("cache")
    return names


def _input_paths(cfg: FitConfig) -> list[Path]:
    """The local files and folders the run reads: the model, the dataset's files."""
    export = cfg.dataset.partition(":")[2]  # cvat:PATH, labelme:DIR...
    given = [cfg.model, cfg.dataset_root, export, *dataset_options(cfg).values()]
    return [Path(v) for v in given if isinstance(v, (str, Path)) and str(v) and Path(v).exists()]


def _claim_run_folder(cfg: FitConfig, inputs: list):
    """The run folder under samtune's ownership rule, locked by the main process."""
    folder = Path(cfg.output_dir)
    if cfg.resume:
        _adopt_earlier_run(folder)
    return claim_output(folder, command="fit", names=_run_entries(cfg), inputs=inputs,
                        option="--output-dir", lock=is_main_process())  # fmt: skip


def _adopt_earlier_run(folder: Path) -> None:
    """A run folder of a samtune that kept no :data:`~samtune.io.RUN_MARKER`, recognised by its
    checkpoints (samtune's format), is recorded as fit's so that ``--resume`` continues it."""
    checkpoints = list_checkpoints(folder)
    if not checkpoints or (folder / RUN_MARKER).exists():
        return
    for ckpt in checkpoints:
        try:
            if read_json_object(ckpt / RESUME_FILE).get("format") != CHECKPOINT_FORMAT:
                return
        except SamtuneError:
            return
    entries = {name: "fit" for name in RUN_ENTRIES if (folder / name).exists()}
    with atomic_write(folder / RUN_MARKER) as tmp:
        tmp.write_text(dump_json({"written_by": "samtune", "entries": entries}, indent=1))


def _check(cfg: FitConfig, strategy, dataset) -> tuple[Any, dict[str, Any]]:
    """Names, splits, dataset files, strategy options and the run folder's checkpoints and
    metrics: wrong ones fail here, before any model or data is loaded and before anything is
    written. Returns the strategy and, with ``--resume``, the run's earlier comparison."""
    cfg.validate()  # a FitConfig changed after it was built is checked again
    strategy = check_inputs(cfg, strategy=strategy, dataset=dataset)
    previous = _previous_comparison(Path(cfg.output_dir)) if cfg.resume else {}
    existing = list_checkpoints(cfg.output_dir)
    if existing and not cfg.resume:
        raise ConfigError(
            f"{cfg.output_dir!r} already holds checkpoints (latest {existing[-1].name}); pass "
            "--resume to continue that run, or choose another --output-dir"
        )
    return strategy, previous


def _setup(
    cfg: FitConfig,
    model,
    strategy,
    dataset,
    callbacks: CallbackList,
    previous: dict[str, Any],
    tokenize: Callable | None = None,
) -> Run:
    """Everything before the first step; writes config.yaml only once all of it succeeded."""
    accelerator = _make_accelerator(cfg, Path(cfg.output_dir))
    _seed(cfg, accelerator)
    model, splits, phrases = _model_and_data(cfg, model, dataset, accelerator)
    comparison: dict[str, Any] = previous
    test_ds = splits.get(cfg.test_split) if cfg.test_split else None
    # A strategy that cannot apply to this model (a family it does not support, blocks the
    # encoder lacks) is refused by a dry run on the meta device, not after minutes of
    # zero-shot evaluation.
    strategy.trainable_shapes(model)
    if cfg.compare and test_ds is not None and not cfg.resume:  # before the model changes
        comparison["zero_shot"] = _evaluate(model, test_ds, compare_protocols(cfg), accelerator,
                                            "zero-shot", cfg)  # fmt: skip
    model = _apply_strategy(cfg, model, strategy, accelerator)
    if cfg.prompt in TEXT_PROMPTS:
        run = _prepare_text(cfg, model, splits, phrases, accelerator, callbacks, tokenize)
    else:
        run = _prepare(cfg, model, splits, accelerator, callbacks)
    run.comparison = comparison
    if cfg.resume:
        _resume(run)
    if _tracker(cfg):
        plain = {k: v for k, v in cfg.to_dict().items() if isinstance(v, int | float | str | bool)}
        accelerator.init_trackers("samtune", config=plain)
    if accelerator.is_main_process:
        save_yaml(cfg, run.run_dir / "config.yaml")
    return run


def _seed(cfg: FitConfig, accelerator) -> None:
    from accelerate.utils import set_seed

    if _single_process_from_multi_launch(accelerator):
        accelerator.print(
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


def _model_and_data(
    cfg: FitConfig, model, dataset, accelerator
) -> tuple[nn.Module, dict, dict[int, str] | None]:
    """The model and the splits; for ``prompt: text`` also each category's phrase, checked
    before the model loads (a wrong prompt map should not wait for a download)."""
    text = cfg.prompt in TEXT_PROMPTS
    splits, phrases = None, None
    if text:
        splits = _main_first(accelerator, _load_splits, cfg, dataset)
        phrases = _text_phrases(cfg, splits[cfg.train_split])
    if model is None:
        model = load_model(cfg.model, seed=cfg.seed)
    if text and not has_text_encoder(model):
        raise ConfigError(
            f"prompt {cfg.prompt} asks the model for each category by name, and "
            f"{type(model).__name__} ({model_source(model)}) has no text encoder: use a SAM 3 "
            "model (--model facebook/sam3), or --prompt box"
        )
    base_fingerprint(model)  # remember the base weights before anything changes them
    if splits is None:
        splits = _main_first(accelerator, _load_splits, cfg, dataset)
    return model, splits, phrases


def _main_first(accelerator, work, *args):
    with accelerator.main_process_first():  # one process generates/downloads, the others wait
        return work(*args)


def _text_phrases(cfg: FitConfig, dataset: Any) -> dict[int, str]:
    """``{category id: phrase}`` of ``dataset`` (a split) as this run asks it: prompt map >
    the recipe's map > name. Training and the zero-shot/fine-tuned evaluation use the same."""
    return dataset_phrases(dataset, cfg.prompt_map, recipe=cfg.dataset)


def _apply_strategy(cfg: FitConfig, model, strategy, accelerator) -> nn.Module:
    """The strategy, then what makes the trainable model fast (checkpointing, attention, compile)."""
    model = strategy.apply(model)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"strategy {cfg.strategy!r} left no parameter trainable")
    accelerator.print(
        f"strategy {cfg.strategy}: {sum(p.numel() for p in trainable):,} trainable parameters "
        f"of {sum(p.numel() for p in model.parameters()):,}"
    )
    if cfg.gradient_checkpointing and not strategy.freezes_image_encoder:
        enable_checkpointing(model)
    if cfg.attention == "flex":
        use_flex_attention(model)
    compiled = compile_model(model, cfg.compile)
    if compiled:
        accelerator.print(
            f"torch.compile ({cfg.compile}): {', '.join(compiled)}; the first steps compile"
        )
    return model


def auto_cache_passes(image_size: int) -> int:
    """From how many passes over the training images ``cache: auto`` turns the cache on.

    The cache is written in the first epoch (which it makes slower) and read from the second
    on. At SAM's 1024 px input the encoder is most of a step and the second pass pays for the
    first (ViT-B: 0.96x, then 0.05x); at the demo's 128 px (1/16 of the tokens) epoch 1 costs
    1.28x and a cached epoch still 0.81x, so the cached run is ahead only from the third
    (docs/performance.md, "When the embedding cache pays"). 512 px splits the two measured sizes.
    """
    return 2 if image_size >= 512 else 3


def _embedding_cache(
    cfg: FitConfig, frozen_encoder: bool, accelerator, passes: int = 2, image_size: int = 1024
) -> EmbeddingCache | None:
    """The cache, or None: ``passes`` is how many times the run sees each training image,
    ``image_size`` the side of the model's input (:func:`auto_cache_passes`)."""
    if not frozen_encoder:
        if cfg.cache == "on":
            accelerator.print(
                f"embedding cache off: strategy {cfg.strategy!r} trains the image encoder"
            )
        return None
    if cfg.cache == "off":
        return None
    if cfg.augment:
        accelerator.print("embedding cache off: augmentation changes the images every epoch")
        return None
    if cfg.cache == "auto" and passes < auto_cache_passes(image_size):
        return None  # too few passes: storing costs more than reading back saves
    directory = cfg.cache_dir or Path(cfg.output_dir) / "cache"
    return EmbeddingCache(directory, memory_mb=cfg.cache_memory_mb, device=accelerator.device)


def run_length(cfg: FitConfig, batches: int) -> tuple[int, int]:
    """(optimizer steps, epochs) of a run whose epoch has ``batches`` batches (``grad_accum``
    of them make a step): ``max_steps`` when set (it overrides ``epochs``, as in transformers'
    ``Trainer``; the last epoch may end early), else ``epochs`` whole epochs."""
    epoch_steps = max(1, math.ceil(batches / cfg.grad_accum))
    total = cfg.max_steps or epoch_steps * cfg.epochs
    return total, math.ceil(total / epoch_steps)


def _prepare(cfg: FitConfig, model, splits: dict, accelerator, callbacks: CallbackList) -> Run:
    """Data loader, optimizer and schedule, prepared by Accelerate; the frozen encoder's source."""
    pre = preprocess_config(model)
    train_ds = splits[cfg.train_split]
    prompted = PromptedDataset(train_ds, pre, prompt="box" if cfg.prompt == "box" else "point",
                               max_instances=cfg.max_instances,
                               augment=augment_config(cfg.augment),
                               jitter=cfg.box_jitter if cfg.prompt == "box" else 0.0,
                               seed=cfg.seed, point_mode=cfg.point_sampling,
                               box_source=cfg.box_source)  # fmt: skip
    sampler = EpochSampler(len(prompted), cfg.seed)
    loader = torch.utils.data.DataLoader(prompted, batch_size=cfg.batch_size, sampler=sampler,
                                         collate_fn=collate_prompted, num_workers=cfg.num_workers,
                                         pin_memory=accelerator.device.type == "cuda")  # fmt: skip
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_module, optimizer, loader = accelerator.prepare(SamTrainStep(model), optimizer, loader)
    total_steps, epochs = run_length(cfg, len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, total_steps))
    frozen = bool(model.samtune_info.strategy.freezes_image_encoder)
    run = Run(cfg, accelerator, model, step_module, optimizer, scheduler, loader, prompted,
              sampler, None, splits, callbacks, total_steps, epochs=epochs)  # fmt: skip
    if frozen:
        cache = _embedding_cache(cfg, frozen, accelerator, epochs, pre.image_size)
        run.embed = FrozenEncoderEmbeddings(
            model, train_ds, cache, pre, accelerator,
            on_encode=lambda encoded, cached: callbacks.on_encode(run, encoded, cached),
        )  # fmt: skip
    else:
        _embedding_cache(cfg, frozen, accelerator)  # says why the cache is off, if asked for
    return run


def _prepare_text(
    cfg: FitConfig, model, splits: dict, phrases: dict[int, str], accelerator,
    callbacks: CallbackList, tokenize: Callable | None,
) -> Run:  # fmt: skip
    """:func:`_prepare` for ``prompt: text``: every category of the dataset asked by name."""
    train_ds = splits[cfg.train_split]
    step = Sam3TextStep(model, list(phrases.values()), tokenize or load_tokenizer(model))
    prompted = TextPromptDataset(train_ds, sam3_preprocess(model), list(phrases),
                                 mask_side(model), exemplar=cfg.prompt == "text+exemplar",
                                 seed=cfg.seed, negatives=cfg.text_negatives)  # fmt: skip
    sampler = EpochSampler(len(prompted), cfg.seed)
    loader = torch.utils.data.DataLoader(prompted, batch_size=cfg.batch_size, sampler=sampler,
                                         collate_fn=collate_text, num_workers=cfg.num_workers,
                                         pin_memory=accelerator.device.type == "cuda")  # fmt: skip
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_module, optimizer, loader = accelerator.prepare(step, optimizer, loader)
    total_steps, epochs = run_length(cfg, len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, total_steps))
    accelerator.print(f"prompt {cfg.prompt}: {len(phrases)} phrases per image: "
                      + ", ".join(quote_untrusted(p, 40) for p in phrases.values()))  # fmt: skip
    return Run(cfg, accelerator, model, step_module, optimizer, scheduler, loader, prompted,
               sampler, None, splits, callbacks, total_steps, epochs=epochs,
               text_loss=sam3_loss_config(cfg.sam3_loss))  # fmt: skip


def _checkpointed(run: Run) -> dict[str, Any]:
    return {"model": run.step_module, "optimizer": run.optimizer, "scheduler": run.scheduler}


def _resume(run: Run) -> None:
    ckpt = latest_checkpoint(run.run_dir)
    if ckpt is None:
        run.say(f"--resume: no checkpoint in {run.run_dir}, starting from the beginning")
    else:
        run.state = load_checkpoint(run.accelerator, ckpt, **_checkpointed(run))
        run.say(f"resumed from {ckpt.name} (epoch {run.state.epoch}, step {run.state.step})")


def _previous_comparison(run_dir: Path) -> dict[str, Any]:
    """The zero-shot/fine-tuned comparison in a resumed run's ``metrics.json`` ({} if none).

    Read before any model loads, so a damaged file stops ``--resume`` at once.

    Raises:
        InputError: the file is not JSON, or its ``comparison`` is not an object.
    """
    prev = run_dir / "metrics.json"
    if not prev.exists():
        return {}
    data = read_json_object(prev, what="the run folder's metrics file")
    comparison = data.get("comparison") or {}
    if not isinstance(comparison, dict):
        raise InputError(
            f"{str(prev)!r}: 'comparison' must be a JSON object; found "
            f"{type(comparison).__name__}. Move the file away to resume without it"
        )
    return comparison


# --------------------------------------------------------------------------- epochs, steps


def _train_epoch(run: Run, bar) -> None:
    """One epoch (or what is left of it after a resume), then the epoch's end."""
    state, cfg = run.state, run.cfg
    run.sampler.set_epoch(state.epoch)
    if hasattr(run.prompted, "set_epoch"):
        run.prompted.set_epoch(state.epoch)
    batches = run.loader
    if state.batch_in_epoch:
        batches = run.accelerator.skip_first_batches(run.loader, state.batch_in_epoch)
    # Accelerate's loaders count their own passes and reset the sampler's epoch to that count
    # on every iter(); a resumed run (and the skipping loader) must be told.
    if hasattr(batches, "set_epoch"):
        batches.set_epoch(state.epoch)
    run.callbacks.on_epoch_begin(run)
    for batch in batches:
        loss, iou = _train_step(run, batch)
        state.batch_in_epoch += 1
        run.running_iou = iou if run.running_iou is None else 0.9 * run.running_iou + 0.1 * iou
        if run.accelerator.sync_gradients:
            _after_step(run, bar, loss, iou)
            if run.stop:
                break
    if state.batch_in_epoch >= len(run.loader):  # the epoch is complete
        state.epoch += 1
        state.batch_in_epoch = 0
        if cfg.eval_every is None:
            _validate(run)
        if cfg.checkpoint_every is None:
            _checkpoint(run)
        run.callbacks.on_epoch_end(run)
    elif run.stop and cfg.checkpoint_every is None:  # max_steps or early stopping mid-epoch
        _checkpoint(run)


def _train_step(run: Run, batch: dict) -> tuple[float, float]:
    """One micro-step in Accelerate's accumulate idiom; returns (loss, mean predicted IoU)."""
    acc, cfg = run.accelerator, run.cfg
    with acc.accumulate(run.step_module):
        if run.text_loss is not None:  # SAM 3 by name: forward and loss
            loss, iou = _text_forward_loss(run, batch)
        else:
            inputs, targets, weight = batch_inputs(batch, cfg, run.embed, run.model, acc.device)
            inputs["seed"] = cfg.seed * 1_000_003 + run.state.step
            rounds = run.step_module(**inputs)  # forward
            loss, iou = training_loss(rounds, targets, weight, cfg)  # loss
        values = _finite_or_stop(run, loss, iou)
        acc.backward(loss)  # backward
        if acc.sync_gradients and cfg.max_grad_norm:
            acc.clip_grad_norm_(run.trainable, cfg.max_grad_norm)
        run.optimizer.step()  # step
        if acc.sync_gradients and not acc.optimizer_step_was_skipped:
            run.scheduler.step()  # schedule
        run.optimizer.zero_grad()  # zero_grad
    return values


def _text_forward_loss(run: Run, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward of :class:`~samtune.train.sam3_step.Sam3TextStep` and the SAM 3 loss."""
    device = run.accelerator.device
    keys = ("image_index", "phrase_index", "input_boxes", "input_boxes_labels")
    prompts = {k: batch[k].to(device) for k in keys if k in batch}
    outputs = run.step_module(batch["pixel_values"].to(device), **prompts)  # forward
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
    loss, iou, _ = text_step_loss(outputs, targets, run.text_loss)  # loss
    return loss, iou


def _finite_or_stop(run: Run, loss: torch.Tensor, iou: torch.Tensor) -> tuple[float, float]:
    """One device-to-host copy per step: this process's loss and mean IoU, and whether every
    process's loss is finite (a sync per value would stall a GPU whose step is short)."""
    acc = run.accelerator
    stats = torch.stack([loss.detach().float(), iou.float()])
    finite = acc.gather(torch.isfinite(stats[:1]).to(acc.device))
    loss_value, iou_value = stats.tolist()
    if not bool(finite.all()):
        raise RunError(
            f"loss became {loss_value} at step {run.state.step + 1} (epoch {run.state.epoch}); "
            f"training stopped. Last good checkpoint: {_last_ckpt_text(run.run_dir)}. Lower "
            "--lr, use --mixed-precision no or bf16, or check the data"
        )
    return loss_value, iou_value


def _guard_oom(run: Run, work, *args):
    try:
        return work(run, *args)
    except RuntimeError as exc:
        if isinstance(exc, RunError) or not _is_oom(exc):
            raise
        raise RunError(
            f"out of memory at step {run.state.step + 1}: lower --batch-size or max_instances, "
            "turn on gradient_checkpointing, or use a lighter strategy (lora, decoder)"
        ) from exc


def _after_step(run: Run, bar, loss: float, iou: float) -> None:
    """After an optimizer step: progress, logs, validation, stop, checkpoint (in that order)."""
    state, cfg = run.state, run.cfg
    state.step += 1
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.4f}", iou=f"{run.running_iou:.3f}")
    lr = run.scheduler.get_last_lr()[0]
    run.accelerator.log({"train/loss": loss, "train/iou": iou, "lr": lr}, step=state.step)
    run.callbacks.on_step_end(run, loss, iou)
    if cfg.eval_every and state.step % cfg.eval_every == 0:
        _validate(run)
    if state.step >= run.total_steps:
        run.stop = True
    if cfg.checkpoint_every and (state.step % cfg.checkpoint_every == 0 or run.stop):
        _checkpoint(run)


def _checkpoint(run: Run) -> None:
    path = save_checkpoint(run.accelerator, run.run_dir, run.state,
                           keep=run.cfg.keep_checkpoints, **_checkpointed(run))  # fmt: skip
    run.callbacks.on_checkpoint(run, path)


def _validate(run: Run) -> None:
    """Validate, keep the best adapter, log, and stop early when it stopped improving."""
    val_ds, state, cfg = run.split(run.cfg.val_split), run.state, run.cfg
    if val_ds is None or cfg.prompt in TEXT_PROMPTS:
        return
    report = _evaluate_one(run.model, val_ds, cfg.eval_prompt, run.accelerator, "validation", cfg)
    miou = float(report.metrics["miou"])
    state.history.append(
        {"step": state.step, "epoch": state.epoch, "metrics": dict(report.metrics)}
    )
    improved = state.best_metric is None or miou > state.best_metric
    if improved:
        state.best_metric, state.best_step = miou, state.step
        state.evals_without_improvement = 0
        _save_adapter(run.model, run.run_dir / "best", run.accelerator)
    else:
        state.evals_without_improvement += 1
    run.accelerator.log({"val/miou": miou}, step=state.step)
    run.say(f"step {state.step}: validation mIoU {miou:.4f}" + (" (best)" if improved else ""))
    if run.accelerator.is_main_process:
        _write_metrics(run.run_dir, state, run.comparison)
    run.callbacks.on_validation(run, dict(report.metrics))
    if cfg.early_stopping and state.evals_without_improvement >= cfg.early_stopping:
        run.say(f"early stopping: no improvement in {cfg.early_stopping} validations")
        run.stop = True


# --------------------------------------------------------------------------- finish


def _finish(run: Run) -> FitResult:
    """The last validation if due, the final adapter, the fine-tuned evaluation and the table."""
    acc, cfg, state = run.accelerator, run.cfg, run.state
    acc.wait_for_everyone()
    validated_now = state.history and state.history[-1]["step"] == state.step
    if cfg.eval_every is not None and run.split(cfg.val_split) is not None and not validated_now:
        _validate(run)
    adapter_dir = run.run_dir / "adapter"
    _save_adapter(run.model, adapter_dir, acc)
    run.model.eval()
    table = ""
    test_ds = run.split(cfg.test_split)
    if cfg.compare and test_ds is not None:
        run.comparison["fine_tuned"] = _evaluate(run.model, test_ds, run.protocols, acc,
                                                 "fine-tuned", cfg)  # fmt: skip
        if "zero_shot" in run.comparison:
            table = _comparison_table(run.comparison, run.protocols)
            run.say(table)
    if acc.is_main_process:
        _write_metrics(run.run_dir, state, run.comparison, table)
        if table:
            with atomic_write(run.run_dir / "results.md") as tmp:
                tmp.write_text(
                    f"# {cfg.strategy} on {cfg.dataset}\n\nModel `{cfg.model}`, {state.step} "
                    f"steps, test split `{cfg.test_split}`.\n\n{table}\n"
                )
    acc.end_training()
    best = run.run_dir / "best" if state.best_step is not None else None
    return FitResult(output_dir=run.run_dir, adapter_dir=adapter_dir, best_dir=best,
                     best_metric=state.best_metric, best_step=state.best_step, steps=state.step,
                     history=state.history, comparison=_plain(run.comparison), table=table,
                     model=run.model)  # fmt: skip


def _plain(comparison: dict) -> dict:
    out = {}
    for k, v in comparison.items():
        out[k] = {p: (dict(r.metrics) if hasattr(r, "metrics") else r) for p, r in v.items()}
    return out


def _last_ckpt_text(run_dir: Path) -> str:
    last = latest_checkpoint(run_dir)
    return str(last) if last else "none yet"


def compare_protocols(cfg: FitConfig) -> list[str]:
    """The protocols of the zero-shot/fine-tuned table: ``text`` (class-aware AP, semantic
    mIoU, cgF1) for a model trained by name, else ``box`` (and ``point`` if asked)."""
    if cfg.prompt in TEXT_PROMPTS:
        return ["text"]
    return ["box"] + (["point"] if cfg.compare_point else [])


def _evaluate_one(model, dataset, prompt: str, accelerator, name: str, cfg: FitConfig):
    return evaluate(
        model, dataset, prompt=prompt, accelerator=accelerator, progress=False, name=name,
        box_source=cfg.box_source if prompt == "box" else "mask",  # the others take no box
        phrases=_text_phrases(cfg, dataset) if prompt == "text" else None,
    )  # fmt: skip


def _evaluate(model, dataset, protocols: list[str], accelerator, name: str, cfg: FitConfig) -> dict:
    was_training = model.training
    reports = {p: _evaluate_one(model, dataset, p, accelerator, name, cfg) for p in protocols}
    model.train(was_training)
    return reports


def _comparison_table(comparison: dict, protocols: list[str]) -> str:
    """One :func:`format_comparison` table per protocol. A resumed run reads the zero-shot
    results back from ``metrics.json`` as metric dicts: rebuilt into reports, they give the
    table an uninterrupted run gives."""

    def report(result, protocol: str) -> EvalReport:
        if isinstance(result, EvalReport):
            return result
        return EvalReport.from_dict({"protocol": protocol, "metrics": result})

    return "\n\n".join(
        f"**{p} prompts**\n\n"
        + format_comparison(
            {
                "zero-shot": report(comparison["zero_shot"][p], p),
                "fine-tuned": report(comparison["fine_tuned"][p], p),
            }
        )
        for p in protocols
    )


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
        save_adapter(model, directory)
    accelerator.wait_for_everyone()


__all__ = ["EpochSampler", "FitResult", "Run", "fit", "train"]
