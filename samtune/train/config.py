"""The training configuration, and how samtune reads, merges and checks options.

:class:`FitConfig` holds every option of a training run, settable from YAML, the CLI and
``samtune.fit``; :class:`samtune.evaluation.config.EvalConfig` is its twin for evaluation. Both are
:class:`Options`: normalised and type-checked on construction (:func:`check_type`,
:func:`check_range`, :func:`check_seed` are the checks every option goes through), and each
field's ``metadata["help"]`` is its one help text (the CLI shows it).

Precedence, the same for both (:func:`merge_options`): options given explicitly (CLI options
the user typed, ``fit(**options)``) override the YAML file given with ``config=``, which
overrides the defaults here. A training run has one more layer, its recipe
(:mod:`samtune.train.recipes`), between the defaults and the file: defaults < recipe < file <
given; :meth:`FitConfig.from_dict` applies it. "Not given" is :data:`NOT_GIVEN`, not
``None``: ``None`` is a value where a field allows it (``val_split=None`` turns validation
off). The resolved config, recipe name included, is written to the run folder as
``config.yaml`` and can be passed back with ``--config`` to reproduce the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, quote_untrusted
from ..options import Options, check_range, check_seed, merge_options
from .recipes import DEFAULT_RECIPE, get_recipe, recipe_names, with_recipe

PROMPTS = ("box", "point", "interactive", "text", "text+exemplar")
MIXED_PRECISION = ("no", "fp16", "bf16")
SCHEDULES = ("cosine", "constant", "step")
POINT_SAMPLING = ("center", "random")
CACHE_MODES = ("auto", "on", "off")
# augment by name (samtune.data.transforms.AUGMENTATIONS; named here to keep torch out of config)
AUGMENT_NAMES = ("flips", "geometric", "full")

# What `--dataset demo` changes when the user does not say otherwise: small, fast, high lr, so
# that `samtune fit --strategy lora --dataset demo` ends in under two minutes on 2 CPU cores.
DEMO_DEFAULTS: dict[str, Any] = {
    "model": "demo",
    "epochs": 4,
    "lr": 3e-4,
    "warmup_steps": 2,
    "batch_size": 2,
    "max_instances": 8,
}
DEMO_TEXT_DEFAULTS: dict[str, Any] = {"lr": 1e-3}
"""What `--dataset demo --prompt text` changes on top: `demo-sam3` learns names faster at 1e-3
(LoRA, 400 steps: class-aware AP 0.10 -> 1.39 at 1e-3, -> 0.81 at 3e-4; docs/sam3.md)."""
DEFAULT_MODEL = "facebook/sam-vit-base"


@dataclass
class FitConfig(Options):
    """Every option of a training run (``samtune fit``, ``samtune.fit``, ``config.yaml``)."""

    noun = "training option"
    path_fields = ("output_dir", "dataset_root", "cache_dir", "images")

    recipe: str = field(
        default=DEFAULT_RECIPE,
        metadata={
            "help": f"Training recipe: {', '.join(recipe_names())}. Its values apply under the "
            "config file and the options given (docs/training.md#recipes)."
        },
    )
    strategy: str = field(
        default="lora",
        metadata={"help": "Strategy: lora, decoder, adapter, full... (see `samtune strategies`)."},
    )
    dataset: str = field(
        default="demo",
        metadata={
            "help": "Dataset recipe (demo, trashcan, zerowaste, taco...), coco, or a tool's "
            "export: cvat:PATH, labelme:DIR, x-anylabeling:DIR."
        },
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model source; default facebook/sam-vit-base (`demo` for the demo data)."
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Run folder (default runs/STRATEGY-DATASET)."}
    )
    strategy_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Strategy setting key=value (repeatable)."}
    )
    dataset_root: str | None = field(default=None, metadata={"help": "Dataset folder."})
    dataset_options: dict[str, Any] = field(default_factory=dict)
    images: str | None = field(
        default=None,
        metadata={"help": "Image folder of a cvat:/labelme:... export (default: its own) or coco."},
    )
    train_split: str = "train"
    val_split: str | None = field(default="val", metadata={"help": "Validation split; null: none."})
    test_split: str | None = field(
        default="test", metadata={"help": "Split for the zero-shot vs fine-tuned table."}
    )
    epochs: int | None = field(
        default=None, metadata={"help": "Number of epochs (default 10; demo 4)."}
    )
    max_steps: int | None = field(
        default=None,
        metadata={"help": "Run this many optimizer steps (overrides epochs, as in transformers)."},
    )
    batch_size: int | None = field(default=None, metadata={"help": "Images per step per process."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    lr: float | None = field(
        default=None, metadata={"help": "Peak learning rate (default 1e-4; demo 3e-4, by name 1e-3)."}
    )
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    schedule: str = field(
        default="cosine",  # docs/training.md, "Why these defaults" (round 2)
        metadata={"help": "After warmup: cosine, constant, or step (decay_steps, decay_factor)."},
    )
    decay_steps: list[int] = field(
        default_factory=list,
        metadata={"help": "Schedule step: the steps at which the lr is divided by decay_factor."},
    )
    decay_factor: float = field(
        default=10.0, metadata={"help": "Schedule step: what each decay step divides the lr by."}
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Gradient clipping; null: off."}
    )
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute the image encoder's activations in backward (saves memory)."},
    )
    attention: str = field(
        default="sdpa",
        metadata={"help": "Image-encoder attention: sdpa, or flex (bias fused; CUDA, else sdpa)."},
    )
    compile: str = field(
        default="no",
        metadata={"help": "torch.compile SAM's parts: no, default, max-autotune-no-cudagraphs."},
    )
    seed: int = field(default=0, metadata={"help": "Random seed."})
    deterministic: bool = field(
        default=False,
        metadata={
            "help": "torch.use_deterministic_algorithms (GPU reproducibility; slower). CPU "
            "runs are bit-identical without it."
        },
    )
    prompt: str = field(
        default="box",
        metadata={
            "help": "Training prompts: box, point or interactive; SAM 3: text (each category "
            "by name) or text+exemplar (and one of its boxes)."
        },
    )
    prompt_map: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "prompt text: NAME=PHRASE, the phrase category NAME is asked by "
            "(repeatable; default: the recipe's phrase, else the name)."
        },
    )
    text_negatives: int | None = field(
        default=None,
        metadata={
            "help": "prompt text: at most N absent categories asked per image per step "
            "(null: all of them)."
        },
    )
    sam3_loss: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "prompt text: SAM 3 loss settings (weight_mask: 100, ...)."},
    )
    point_sampling: str = field(
        default="center",
        metadata={
            "help": "Point prompts at the object's centre, or random: uniform inside it, as "
            "automatic segmentation's grid points fall."
        },
    )
    interactive_rounds: int = field(default=3, metadata={"help": "Corrective-click rounds."})
    box_jitter: float = field(default=0.0, metadata={"help": "Box noise (fraction of box size)."})
    box_source: str = field(
        default="mask",
        metadata={
            "help": "Box prompts from the mask's extent (mask) or the annotation's COCO bbox "
            "(annotation, as lightning-sam); training, validation and test alike."
        },
    )
    max_instances: int | None = field(
        default=16, metadata={"help": "At most this many instances per image per step."}
    )
    focal_weight: float = 1.0  # docs/training.md, "Why these defaults" (lightning-sam's: 20)
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    cache: str = field(
        default="auto",
        metadata={"help": "Embedding cache for frozen encoders: auto, on or off."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Default: <output_dir>/cache."})
    cache_memory_mb: int = field(default=1024, metadata={"help": "In-memory cache budget."})
    augment: bool | str = field(
        default=False,
        metadata={"help": "Image augmentation (turns the cache off): false, true (= full), "
                          "flips, geometric or full."},
    )  # fmt: skip
    eval_every: int | None = field(
        default=None, metadata={"help": "Validate every N steps (default: each epoch)."}
    )
    eval_prompt: str = field(default="box", metadata={"help": "Validation prompt protocol."})
    early_stopping: int | None = field(
        default=None, metadata={"help": "Stop after N validations without improvement."}
    )
    checkpoint_every: int | None = field(
        default=None, metadata={"help": "Checkpoint every N steps (default: each epoch)."}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "Step checkpoints to keep."})
    resume: bool = field(
        default=False, metadata={"help": "Continue from the run folder's last checkpoint."}
    )
    compare: bool = field(
        default=True, metadata={"help": "Evaluate zero-shot and fine-tuned on the test split."}
    )
    compare_point: bool | None = field(
        default=None, metadata={"help": "Also compare with the point protocol (default: demo)."}
    )
    quiet: bool = field(default=False, metadata={"help": "No progress bar."})
    log_with: str | None = field(
        default="auto", metadata={"help": "Accelerate tracker: auto (tensorboard if installed)."}
    )
    num_workers: int = 0

    def validate(self) -> None:
        """Check every field's type, then its value (ConfigError naming the field)."""
        super().validate()

        def choose(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}; found {quote_untrusted(value)}"
                )

        from ..prompting import VALIDATION_PROMPTS, parse_prompt  # the one prompt grammar

        # Stored in canonical form ("Box" -> "box"), which is what the loop compares against.
        self.prompt = str(parse_prompt(self.prompt, PROMPTS, what="training prompt"))
        self.eval_prompt = str(
            parse_prompt(
                self.eval_prompt, VALIDATION_PROMPTS, name="eval_prompt", what="evaluation protocol"
            )
        )
        choose("point_sampling", POINT_SAMPLING)
        from ..prompting import BOX_SOURCES

        choose("box_source", BOX_SOURCES)
        choose("mixed_precision", MIXED_PRECISION)
        choose("schedule", SCHEDULES)
        self.recipe = get_recipe(self.recipe).name
        self._check_decay_steps()
        choose("cache", CACHE_MODES)
        if isinstance(self.augment, str) and self.augment not in AUGMENT_NAMES:
            raise ConfigError(
                f"augment must be true, false or one of {', '.join(AUGMENT_NAMES)}; found "
                f"{quote_untrusted(self.augment)}"
            )
        from ..models.speedups import (  # torch: only once a config is made
            ATTENTION_CHOICES,
            COMPILE_MODES,
        )

        choose("attention", ATTENTION_CHOICES)
        choose("compile", COMPILE_MODES)
        positive = ["epochs", "max_steps", "batch_size", "grad_accum", "eval_every",
                    "checkpoint_every", "early_stopping", "max_instances", "interactive_rounds",
                    "keep_checkpoints"]  # fmt: skip
        for name in positive:
            check_range(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "num_workers", "cache_memory_mb", "text_negatives"):
            check_range(name, getattr(self, name), minimum=0)
        check_seed("seed", self.seed)
        check_range("lr", self.lr, minimum=0, strict=True)
        for name in ("weight_decay", "max_grad_norm", "box_jitter") + LOSS_WEIGHTS:
            check_range(name, getattr(self, name), minimum=0)
        if not any(getattr(self, name) > 0 for name in LOSS_WEIGHTS):
            raise ConfigError(
                f"at least one of {', '.join(LOSS_WEIGHTS)} must be > 0; found all 0 "
                "(the loss would be 0 and nothing would train)"
            )
        for name in ("strategy", "dataset", "train_split"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{name} must not be empty")
        self._validate_text_options()

    def _validate_text_options(self) -> None:
        """``prompt_map``, ``sam3_loss`` and what ``prompt: text`` cannot do (yet)."""
        from .sam3_options import TEXT_PROMPTS, check_prompt_map, sam3_loss_config

        self.prompt_map = check_prompt_map(self.prompt_map)
        sam3_loss_config(self.sam3_loss)
        if self.prompt in TEXT_PROMPTS and self.augment:
            raise ConfigError(
                f"augment is not available with prompt {self.prompt}; turn augment off"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitConfig:
        """A config from explicit options over the values of the recipe they name."""
        return super().from_dict(with_recipe(data))

    def _check_decay_steps(self) -> None:
        for step in self.decay_steps:
            check_range("decay_steps", step, minimum=1)
        if list(self.decay_steps) != sorted(set(self.decay_steps)):
            raise ConfigError(
                f"decay_steps must be increasing, each once; found {quote_untrusted(self.decay_steps)}"
            )
        check_range("decay_factor", self.decay_factor, minimum=1)

    def resolved(self) -> FitConfig:
        """A copy with every default filled in (the demo defaults for ``dataset='demo'``)."""
        out = dataclasses.replace(self, strategy_options=dict(self.strategy_options))
        general = {
            "model": DEFAULT_MODEL,
            "epochs": 10,
            "lr": 1e-4,
            "warmup_steps": 50,
            "batch_size": 2,
        }
        defaults = {**general, **(DEMO_DEFAULTS if self.dataset == "demo" else {})}
        if self.dataset == "demo" and self.prompt in ("text", "text+exemplar"):
            defaults.update(DEMO_TEXT_DEFAULTS)
        for key, value in defaults.items():
            if getattr(out, key) is None:
                setattr(out, key, value)
        if out.compare_point is None:
            out.compare_point = self.dataset == "demo"
        if out.output_dir is None:
            from ..data.recipes import dataset_label  # label-studio:a/b.json -> label-studio-b

            out.output_dir = str(Path("runs") / f"{out.strategy}-{dataset_label(out.dataset)}")
        out.validate()
        return out


LOSS_WEIGHTS = ("focal_weight", "dice_weight", "iou_weight")


def dataset_options(cfg: FitConfig) -> dict[str, Any]:
    """``cfg.dataset_options`` with ``images`` (``--images``) in it when given."""
    extra = {} if cfg.images is None else {"images": cfg.images}
    return {**cfg.dataset_options, **extra}


def check_inputs(cfg: FitConfig, *, strategy: Any = None, dataset: Any = None) -> Any:
    """Check names and paths before any model or data is loaded; return the strategy to use.

    The dataset recipe, its split names, its files (``dataset_root``) and options, the
    strategy name and options, the tracker and the run folder are checked here, so that a
    wrong one is reported at once (not after a model download). ``strategy``/``dataset``
    objects given to :func:`samtune.fit` are taken as they are.

    Raises:
        UnknownNameError: an unknown dataset, split or strategy.
        MissingFileError: the dataset's files are not where they should be.
        ConfigError: an invalid option.
    """
    if cfg.output_dir is not None:
        out = Path(cfg.output_dir).expanduser()
        if out.exists() and not out.is_dir():
            raise ConfigError(
                f"output_dir {str(out)!r} is a file, not a folder; choose another --output-dir"
            )
    if cfg.log_with is not None:
        from accelerate.utils import LoggerType

        trackers = ("auto", "none", "no", *(t.value for t in LoggerType))
        if cfg.log_with not in trackers:
            raise ConfigError(
                f"log_with must be one of {', '.join(trackers)}; found {quote_untrusted(cfg.log_with)}"
            )
    if dataset is None:
        from ..data.recipes import check_dataset

        splits = [s for s in (cfg.train_split, cfg.val_split, cfg.test_split) if s]
        check_dataset(cfg.dataset, splits, cfg.dataset_root, **dataset_options(cfg))
    elif isinstance(dataset, dict) and cfg.train_split not in dataset:
        raise ConfigError(
            f"train_split {cfg.train_split!r} is not among the splits given "
            f"({', '.join(map(str, dataset)) or 'none'})"
        )
    if strategy is None or isinstance(strategy, str):
        from ..strategies import get_strategy

        strategy = get_strategy(strategy or cfg.strategy, **cfg.strategy_options)
    return strategy


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config YAML (a mapping of FitConfig fields)."""
    return FitConfig.read_file(path)


def build_config(
    config: str | Path | Mapping[str, Any] | FitConfig | None = None, **given: Any
) -> FitConfig:
    """A :class:`FitConfig` from defaults < ``config`` < ``given`` (see :func:`merge_options`).

    ``NOT_GIVEN`` values are skipped; ``None`` is a value where the field allows it
    (``val_split=None``: no validation), elsewhere the same as not given.
    """
    return merge_options(FitConfig, config, given)


def save_yaml(config: FitConfig, path: str | Path) -> None:
    """Write the config as YAML, atomically."""
    import yaml

    from ..io import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
