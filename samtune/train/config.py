"""The training configuration: one dataclass, settable from YAML, the CLI and ``samtune.fit``.

Precedence: explicit arguments (CLI options, ``fit(**options)``) override the YAML file given
with ``config=``, which overrides the defaults here. The resolved config is written to the run
folder as ``config.yaml`` and can be passed back with ``--config`` to reproduce the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..fast import ATTENTION_CHOICES, COMPILE_MODES

PROMPTS = ("box", "point", "interactive")
MIXED_PRECISION = ("no", "fp16", "bf16")
SCHEDULES = ("cosine", "constant")
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


@dataclass
class FitConfig:
    """Every option of a training run (``samtune fit``, ``samtune.fit``, ``config.yaml``)."""

    strategy: str = field(default="lora", metadata={"help": "Adaptation strategy name."})
    dataset: str = field(default="demo", metadata={"help": "Dataset recipe or `coco`."})
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model source; default facebook/sam-vit-base (`demo` for the demo data)."
        },
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder."})
    strategy_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Strategy config (key=value)."}
    )
    dataset_root: str | None = field(default=None, metadata={"help": "Dataset folder."})
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: str | None = field(default="val", metadata={"help": "Validation split; null: none."})
    test_split: str | None = field(
        default="test", metadata={"help": "Split for the zero-shot vs fine-tuned table."}
    )
    epochs: int | None = field(default=None, metadata={"help": "Epochs (default 10; demo 4)."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps."})
    batch_size: int | None = field(default=None, metadata={"help": "Images per step per process."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    lr: float | None = field(
        default=None, metadata={"help": "Peak learning rate (1e-4; demo 3e-4)."}
    )
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    schedule: str = field(default="cosine", metadata={"help": "cosine or constant after warmup."})
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "Gradient clipping; null: off."}
    )
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute the image encoder's activations in backward."}
    )
    attention: str = field(
        default="sdpa",
        metadata={"help": "Image-encoder attention: sdpa, or flex (bias fused; CUDA, else sdpa)."},
    )
    compile: str = field(
        default="no",
        metadata={"help": "torch.compile SAM's parts: no, default, max-autotune-no-cudagraphs."},
    )
    seed: int = 0
    prompt: str = field(default="box", metadata={"help": "box, point or interactive."})
    interactive_rounds: int = field(default=3, metadata={"help": "Corrective-click rounds."})
    box_jitter: float = field(default=0.1, metadata={"help": "Box noise (fraction of box size)."})
    max_instances: int | None = field(
        default=16, metadata={"help": "At most this many instances per image per step."}
    )
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    cache: str = field(default="auto", metadata={"help": "Embedding cache: auto, on or off."})
    cache_dir: str | None = field(default=None, metadata={"help": "Default: <output_dir>/cache."})
    cache_memory_mb: int = field(default=1024, metadata={"help": "In-memory cache budget."})
    augment: bool = field(default=False, metadata={"help": "Image augmentation (disables cache)."})
    eval_every: int | None = field(
        default=None, metadata={"help": "Validate every N steps; null: after each epoch."}
    )
    eval_prompt: str = field(default="box", metadata={"help": "Validation prompt protocol."})
    early_stopping: int | None = field(
        default=None, metadata={"help": "Stop after N validations without improvement."}
    )
    checkpoint_every: int | None = field(
        default=None, metadata={"help": "Checkpoint every N steps; null: each epoch."}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "Step checkpoints to keep."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint."})
    compare: bool = field(
        default=True, metadata={"help": "Evaluate zero-shot and fine-tuned on the test split."}
    )
    compare_point: bool | None = field(
        default=None, metadata={"help": "Also compare with the point protocol (default: demo)."}
    )
    quiet: bool = False
    log_with: str | None = field(
        default="auto", metadata={"help": "Accelerate tracker: auto (tensorboard if installed)."}
    )
    num_workers: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def choose(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; found {value!r}")

        choose("prompt", PROMPTS)
        choose("eval_prompt", ("box", "point"))
        choose("mixed_precision", MIXED_PRECISION)
        choose("schedule", SCHEDULES)
        choose("cache", CACHE_MODES)
        choose("attention", ATTENTION_CHOICES)
        choose("compile", COMPILE_MODES)
        positive = ["epochs", "max_steps", "batch_size", "grad_accum", "eval_every",
                    "checkpoint_every", "early_stopping", "max_instances", "interactive_rounds",
                    "keep_checkpoints"]  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer; found {value!r}")
        for name in ("lr", "weight_decay", "max_grad_norm", "box_jitter"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"{name} must be a number >= 0; found {value!r}")
        if self.lr == 0:
            raise ConfigError("lr must be > 0; found 0")
        if not isinstance(self.strategy_options, dict):
            raise ConfigError(
                f"strategy_options must be a mapping; found {type(self.strategy_options).__name__}"
            )

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
            out.output_dir = str(Path("runs") / f"{out.strategy}-{out.dataset}")
        out.validate()
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown training option(s) {', '.join(unknown)}; known options: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**data)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config YAML (a mapping of FitConfig fields)."""
    from ..io import read_yaml_mapping

    return read_yaml_mapping(path, "training options")


def build_config(
    config: str | Path | dict | FitConfig | None = None, **overrides: Any
) -> FitConfig:
    """Merge defaults < YAML file (or mapping) < ``overrides`` (``None`` values are ignored)."""
    if isinstance(config, FitConfig):
        base = config.to_dict()
    elif isinstance(config, dict):
        base = dict(config)
    elif config is not None:
        base = load_yaml(config)
    else:
        base = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "strategy_options" and isinstance(value, dict):
            base["strategy_options"] = {**base.get("strategy_options", {}), **value}
        else:
            base[key] = value
    return FitConfig.from_dict(base)


def save_yaml(config: FitConfig, path: str | Path) -> None:
    """Write the config as YAML, atomically."""
    import yaml

    from ..io import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def parse_key_values(items: list[str] | None) -> dict[str, Any]:
    """``["r=8", "alpha=16.0", "targets=[qkv]"]`` -> ``{"r": 8, "alpha": 16.0, ...}`` (YAML values)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value (e.g. r=8); found {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out
