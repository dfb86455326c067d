"""The options of an evaluation: one dataclass, settable from YAML, the CLI and Python.

:class:`EvalConfig` is to ``samtune eval`` and :func:`samtune.evaluation.run_evaluation` what
:class:`~samtune.train.config.FitConfig` is to ``samtune fit``: the same merge (defaults < YAML
file < options given, :func:`~samtune.train.config.merge_options`), the same checks, and each
field's ``metadata["help"]`` is the command line's help text. Light: no torch until an
evaluation runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..io import read_yaml_mapping
from ..options import Options, check_device, check_prompt_map, check_range, check_seed


@dataclass
class PassOptions(Options):
    """The options of one evaluation pass, besides the model, the data and the protocol: what
    :func:`samtune.evaluate` takes as keywords. Their checks live here once; :class:`EvalConfig`
    holds the same fields (with their help texts) and checks them through this class."""

    noun = "evaluate option"

    prompt_batch: int = 32
    jitter: float = 0.0
    seed: int = 0
    max_images: int | None = None
    worst: int = 0
    box_source: str = "mask"

    def validate(self) -> None:
        """Types, then values (ConfigError naming the option)."""
        super().validate()
        check_range("prompt_batch", self.prompt_batch, minimum=1)
        check_range("jitter", self.jitter, minimum=0)
        check_seed("seed", self.seed)
        check_range("max_images", self.max_images, minimum=1)
        check_range("worst", self.worst, minimum=0)
        from ..prompting import BOX_SOURCES

        if self.box_source not in BOX_SOURCES:
            raise ConfigError(
                f"box_source must be one of {', '.join(BOX_SOURCES)}; found {self.box_source!r}"
            )

    @classmethod
    def of(cls, options: Any) -> PassOptions:
        """The pass options held by ``options`` (an :class:`EvalConfig`), checked."""
        return cls(**{name: getattr(options, name) for name in cls.__dataclass_fields__})


@dataclass
class EvalConfig(Options):
    """Every option of an evaluation (``samtune eval``, ``run_evaluation``, an eval YAML file).

    ``points_per_side``, ``pred_iou_thresh`` and ``stability_score_thresh`` apply to the
    ``auto`` protocol (with ``prompt_batch`` as its ``points_per_batch``; the generator's other
    options keep :class:`~samtune.segment.automatic_config.AutoMaskConfig`'s defaults).

    The YAML file's keys are these names, with dashes or underscores (``prompt-batch``), and
    ``json`` for ``json_output``.
    """

    noun = "eval option"
    path_fields = ("adapter", "root", "images", "annotations", "output")

    model: str = field(
        default="demo", metadata={"help": "Base model: preset, local folder or .pth, hub id."}
    )
    adapter: list[str] | None = field(
        default=None, metadata={"help": "Adapter folder or hub id (repeat for several)."}
    )
    compare: bool = field(
        default=False,
        metadata={"help": "Also evaluate the base model zero-shot; print all side by side."},
    )
    dataset: str = field(
        default="demo",
        metadata={"help": "trashcan, trashcan-material, zerowaste, taco, demo, coco."},
    )
    split: str = field(default="val", metadata={"help": "train, val or test."})
    root: str | None = field(
        default=None, metadata={"help": "Dataset folder (default: the recipe's)."}
    )
    images: str | None = field(
        default=None,
        metadata={"help": "coco, label-studio:..., cvat:..., labelme:...: image folder."},
    )
    annotations: str | None = field(default=None, metadata={"help": "coco: annotation JSON."})
    prompt: str = field(
        default="box",
        metadata={
            "help": "Protocol: box, point, clicks:N, auto (no prompt) or text (SAM 3: every "
            "category name)."
        },
    )
    prompt_map: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "text: NAME=PHRASE, the phrase a category is asked by (over the dataset's "
            "built-in map, over the name); repeat for several.",
            "expected": "a mapping of category name to phrase",
        },
    )
    jitter: float = field(
        default=0.0, metadata={"help": "Box noise (fraction of box side), box only."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for box jitter."})
    box_source: str = field(
        default="mask",
        metadata={
            "help": "box: prompt with the mask's extent (mask) or the annotation's COCO bbox "
            "(annotation, as lightning-sam)."
        },
    )
    prompt_batch: int = field(default=32, metadata={"help": "Prompts per decoder call."})
    points_per_side: int = field(
        default=32, metadata={"help": "auto: grid points along each side of the image."}
    )
    pred_iou_thresh: float = field(
        default=0.88, metadata={"help": "auto: keep masks whose predicted IoU is above this."}
    )
    stability_score_thresh: float = field(
        default=0.95, metadata={"help": "auto: keep masks whose stability is above this."}
    )
    max_images: int | None = field(
        default=None, metadata={"help": "Evaluate the first N images only."}
    )
    output: str | None = field(
        default=None, metadata={"help": "Folder for metrics.json, report.md, plots."}
    )
    plots: bool = field(default=True, metadata={"help": "Write PNG plots (with --output)."})
    worst: int = field(
        default=8, metadata={"help": "Overlays of the N worst predictions (with --output)."}
    )
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1 ... (default: Accelerate's)."}
    )
    json_output: bool = field(default=False, metadata={"help": "Print metrics as JSON."})
    quiet: bool = field(default=False, metadata={"help": "No progress bar."})

    def validate(self) -> None:
        """Check every field's type, then the numbers' ranges (ConfigError naming the field).

        The protocol, adapters and dataset are checked by ``run_evaluation`` before anything
        loads.
        """
        super().validate()
        PassOptions.of(self)
        check_range("points_per_side", self.points_per_side, minimum=1)
        self.prompt_map = check_prompt_map(self.prompt_map)
        if self.prompt_map and self.prompt.strip().lower() != "text":
            raise ConfigError(
                f"prompt_map gives the phrases of --prompt text; this evaluation's prompt is "
                f"{self.prompt!r}: drop prompt_map, or evaluate with --prompt text"
            )
        if self.device is not None:
            check_device("device", self.device)

    @classmethod
    def read_file(cls, path: str | os.PathLike) -> dict[str, Any]:
        """Read an eval YAML file: option names with dashes or underscores, ``json`` too."""
        names = list(cls.__dataclass_fields__)
        out = {}
        for key, value in read_yaml_mapping(path, "option: value").items():
            name = str(key).replace("-", "_")
            name = "json_output" if name == "json" else name
            if name not in names:
                raise ConfigError(
                    f"unknown option {key!r} in {os.fspath(path)!r}; valid options: "
                    f"{', '.join(k.replace('_', '-') for k in names)}"
                )
            out[name] = value
        return out


__all__ = ["EvalConfig", "PassOptions"]
