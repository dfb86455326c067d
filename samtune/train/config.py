"""The training configuration, and how samtune reads, merges and checks options.

:class:`FitConfig` holds every option of a training run, settable from YAML, the CLI and
``samtune.fit``; :class:`samtune.evaluate.EvalConfig` is its twin for evaluation. Both are
:class:`Options`: normalised and type-checked on construction (:func:`check_type`,
:func:`check_range`, :func:`check_seed` are the checks every option goes through), and each
field's ``metadata["help"]`` is its one help text (the CLI shows it).

Precedence, the same for both (:func:`merge_options`): options given explicitly (CLI options
the user typed, ``fit(**options)``) override the YAML file given with ``config=``, which
overrides the defaults here. "Not given" is :data:`NOT_GIVEN`, not ``None``: ``None`` is a
value where a field allows it (``val_split=None`` turns validation off). The resolved config
is written to the run folder as ``config.yaml`` and can be passed back with ``--config`` to
reproduce the run.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigError, quote_untrusted

PROMPTS = ("box", "point", "interactive")
MIXED_PRECISION = ("no", "fp16", "bf16")
SCHEDULES = ("cosine", "constant")
POINT_SAMPLING = ("center", "random")
CACHE_MODES = ("auto", "on", "off")

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
DEFAULT_MODEL = "facebook/sam-vit-base"


class _NotGiven(enum.Enum):
    NOT_GIVEN = "NOT_GIVEN"

    def __repr__(self) -> str:
        return "NOT_GIVEN"


# An option the caller did not give (the file's value, else the default, applies): distinct
# from None, which is a value.
NOT_GIVEN = _NotGiven.NOT_GIVEN


class Options:
    """What samtune's option dataclasses share (:class:`FitConfig`, ``EvalConfig``).

    On construction every field is normalised (paths become text, YAML's ``off`` the word
    again, a single value for a list field a list of one) and :meth:`validate` checks every
    field's type against its annotation; subclasses add the checks of values. A field's help
    text is its ``metadata["help"]``.
    """

    # what the options are called in messages: "unknown training option(s) ..."
    noun = "option"
    # fields that name files or folders: a path is accepted and stored as text
    path_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _normalize(type(self), f.name, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Check every field's type (ConfigError naming the field, what it expects, the value)."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            check_type(f.name, getattr(self, f.name), hints[f.name])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[OptionsT], data: Mapping[str, Any]) -> OptionsT:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known), key=str)
        if unknown:
            raise ConfigError(
                f"unknown {cls.noun}(s) {', '.join(map(str, unknown))}; known options: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def read_file(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The options in a YAML file (a mapping of field names), as :meth:`from_dict` takes."""
        from ..io import read_yaml_mapping

        return read_yaml_mapping(path, f"{cls.noun}s")

    @classmethod
    def field_help(cls, name: str) -> str:
        """The help text of option ``name`` (its field's ``metadata["help"]``)."""
        return cls.__dataclass_fields__[name].metadata.get("help", "")

    @classmethod
    def field_default(cls, name: str) -> Any:
        """The default of option ``name``."""
        f = cls.__dataclass_fields__[name]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default


OptionsT = TypeVar("OptionsT", bound="Options")


@dataclass
class FitConfig(Options):
    """Every option of a training run (``samtune fit``, ``samtune.fit``, ``config.yaml``)."""

    noun = "training option"
    path_fields = ("output_dir", "dataset_root", "cache_dir")

    strategy: str = field(
        default="lora",
        metadata={"help": "Strategy: lora, decoder, adapter, full... (see `samtune strategies`)."},
    )
    dataset: str = field(
        default="demo",
        metadata={"help": "Dataset recipe (demo, trashcan, zerowaste, taco...) or coco."},
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
    train_split: str = "train"
    val_split: str | None = field(default="val", metadata={"help": "Validation split; null: none."})
    test_split: str | None = field(
        default="test", metadata={"help": "Split for the zero-shot vs fine-tuned table."}
    )
    epochs: int | None = field(
        default=None, metadata={"help": "Number of epochs (default 10; demo 4)."}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps."}
    )
    batch_size: int | None = field(default=None, metadata={"help": "Images per step per process."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    lr: float | None = field(
        default=None, metadata={"help": "Peak learning rate (default 1e-4; demo 3e-4)."}
    )
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    schedule: str = field(default="cosine", metadata={"help": "cosine or constant after warmup."})
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
        default="box", metadata={"help": "Training prompts: box, point or interactive."}
    )
    point_sampling: str = field(
        default="center",
        metadata={
            "help": "Point prompts at the object's centre, or random: uniform inside it, as "
            "automatic segmentation's grid points fall."
        },
    )
    interactive_rounds: int = field(default=3, metadata={"help": "Corrective-click rounds."})
    box_jitter: float = field(default=0.1, metadata={"help": "Box noise (fraction of box size)."})
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
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    cache: str = field(
        default="auto",
        metadata={"help": "Embedding cache for frozen encoders: auto, on or off."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Default: <output_dir>/cache."})
    cache_memory_mb: int = field(default=1024, metadata={"help": "In-memory cache budget."})
    augment: bool = field(default=False, metadata={"help": "Image augmentation (disables cache)."})
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
        choose("cache", CACHE_MODES)
        from ..fast import ATTENTION_CHOICES, COMPILE_MODES  # torch: only once a config is made

        choose("attention", ATTENTION_CHOICES)
        choose("compile", COMPILE_MODES)
        positive = ["epochs", "max_steps", "batch_size", "grad_accum", "eval_every",
                    "checkpoint_every", "early_stopping", "max_instances", "interactive_rounds",
                    "keep_checkpoints"]  # fmt: skip
        for name in positive:
            check_range(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "num_workers", "cache_memory_mb"):
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
# YAML 1.1 reads the bare words on/off/no as booleans: give these fields the word back.
_YAML_WORDS: dict[str, dict[bool, str]] = {
    "cache": {True: "on", False: "off"},
    "mixed_precision": {False: "no"},
    "compile": {False: "no"},
    "log_with": {False: "no"},
}
# A number YAML 1.1 reads as text (``1e-4`` needs a dot to be a float there).
_NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _normalize(cls: type[Options], name: str, value: Any) -> Any:
    """Undo what YAML and pathlib do to values whose meaning is plain."""
    if isinstance(value, bool) and value in _YAML_WORDS.get(name, {}):
        return _YAML_WORDS[name][value]
    kinds = _union_args(_hints(cls)[name])[0]
    if any(typing.get_origin(k) is list for k in kinds):
        if isinstance(value, (str, os.PathLike)):
            value = [value]  # one value for a list of them
        if name in cls.path_fields and isinstance(value, (list, tuple)):
            return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    if name in cls.path_fields and isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()) and float in kinds:
        return float(value)
    return value


def _union_args(hint: Any) -> tuple[list[Any], bool]:
    """(the non-None types of ``hint``, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
    else:
        args = (hint,)
    return [a for a in args if a is not type(None)], type(None) in args


def _matches(value: Any, kind: Any) -> bool:
    origin = typing.get_origin(kind) or kind
    if kind is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, k) for k in typing.get_args(kind))
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is str:
        return isinstance(value, str)
    if isinstance(origin, type) and issubclass(origin, os.PathLike) or kind is Path:
        return isinstance(value, (str, os.PathLike))
    if origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        inner = typing.get_args(kind)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, inner[0]) for v in value)
    return isinstance(value, origin) if isinstance(origin, type) else True


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind) or kind
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             dict: "a mapping (key: value)"}  # fmt: skip
    if origin in names:
        return names[origin]
    if origin in (list, tuple):
        inner = (typing.get_args(kind) or (Any,))[0]
        return "a list" if inner is Any else f"{_describe(inner)} or a list of them"
    if kind is Path or isinstance(origin, type) and issubclass(origin, os.PathLike):
        return "a path"
    return getattr(kind, "__name__", str(kind))


def check_type(name: str, value: Any, hint: Any) -> None:
    """ConfigError naming ``name``, the type ``hint`` expects and ``value``, if they differ.

    ``hint`` is a type annotation (``int``, ``float | None``, ``list[str]``, ``Path``...);
    ``True`` is not an integer and text is not a number. A ``list[X]`` also takes one ``X``.
    """
    kinds, nullable = _union_args(hint)
    if value is None and nullable:
        return
    for kind in kinds:
        if _matches(value, kind):
            return
        if typing.get_origin(kind) in (list, tuple) and _matches(
            value, (typing.get_args(kind) or (Any,))[0]
        ):
            return
    expected = " or ".join(_describe(k) for k in kinds) + (" or null" if nullable else "")
    raise ConfigError(
        f"{name} must be {expected}; found {type(value).__name__} {quote_untrusted(value)}"
    )


def check_range(
    name: str, value: Any, *, minimum: float, strict: bool = False, integer: bool | None = None
) -> None:
    """ConfigError unless ``value`` (None passes) is finite and >= ``minimum`` (> if ``strict``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"{name} must be a number; found {type(value).__name__} {quote_untrusted(value)}"
        )
    if integer and not isinstance(value, int):
        raise ConfigError(
            f"{name} must be an integer; found {type(value).__name__} {quote_untrusted(value)}"
        )
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number {bound}; found {quote_untrusted(value)}")
    if value < minimum or (strict and value == minimum):
        if isinstance(value, int) and minimum == 1 and not strict:
            bound = "a positive integer (>= 1)"
        raise ConfigError(f"{name} must be {bound}; found {quote_untrusted(value)}")


def check_seed(name: str, value: Any) -> None:
    """A random seed: an integer in 0 .. 2**32 - 1 (what NumPy accepts)."""
    check_range(name, value, minimum=0, integer=True)
    if value is not None and value >= 2**32:
        raise ConfigError(f"{name} must be < 2**32 (4294967296); found {quote_untrusted(value)}")


DEVICE_TYPES = ("cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The devices samtune can run a model on here: ``cpu``, each CUDA GPU, ``mps``."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(name: str, value: Any) -> Any:
    """``value`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) as a ``torch.device`` that can run
    a model on this machine. ``meta`` (no data), unknown names and devices this machine
    lacks are refused, with the devices that are available.

    Raises:
        ConfigError: naming ``name``, the value and the available devices.
    """
    import torch

    available = available_devices()
    use = f"use one of: {', '.join(available)} (the devices of this machine)"
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{name} {quote_untrusted(value)} is not a device; {use}") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"{name} {str(value)!r} cannot run a model; {use}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{name} {str(value)!r}: no CUDA GPU is available; {use}")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"{name} {str(value)!r}: there are only {torch.cuda.device_count()} CUDA GPU(s); {use}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{name} {str(value)!r}: MPS is not available; {use}")
    return device


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
        check_dataset(cfg.dataset, splits, cfg.dataset_root, **cfg.dataset_options)
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


def merge_options(
    cls: type[OptionsT],
    config: str | os.PathLike | Mapping[str, Any] | OptionsT | None = None,
    given: Mapping[str, Any] | None = None,
) -> OptionsT:
    """The one way samtune merges options: defaults < ``config`` < ``given``.

    Args:
        cls: the options dataclass (:class:`FitConfig`, ``EvalConfig``).
        config: a YAML file (read with ``cls.read_file``), a mapping, an instance of ``cls``,
            or None (defaults only).
        given: the options set explicitly (what the user typed on the command line, a
            function's keyword arguments). :data:`NOT_GIVEN` values are skipped; ``None`` is
            a value where the field allows it (``val_split=None``: no validation), elsewhere
            it is the same as not given. A mapping (``strategy_options``) updates the
            config's mapping key by key.

    Raises:
        ConfigError: an unknown option, or a wrong type or value (naming the option).
        MissingFileError: ``config`` names no file.
    """
    if isinstance(config, cls):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        base = cls.read_file(config)
    elif config is None:
        base = {}
    else:
        raise ConfigError(
            f"config must be a YAML file, a mapping or a {cls.__name__}; found "
            f"{type(config).__name__}"
        )
    hints = _hints(cls)
    for key, value in (given or {}).items():
        if value is NOT_GIVEN or value is None and key in hints and not _union_args(hints[key])[1]:
            continue
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            value = {**base[key], **value}
        base[key] = value
    return cls.from_dict(base)


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


def parse_key_values(items: list[str] | None) -> dict[str, Any]:
    """``["r=8", "alpha=16.0", "targets=[qkv]"]`` -> ``{"r": 8, "alpha": 16.0, ...}`` (YAML values)."""
    import yaml

    from ..io import parse_yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value (e.g. r=8); found {quote_untrusted(item)}")
        try:
            out[key.strip()] = parse_yaml(value, f"the value of {key.strip()!r}")
        except yaml.YAMLError:
            out[key.strip()] = value
    return out
