"""Exporting a tuned model to the formats other tools read: a merged transformers folder, Meta's
original checkpoint, a peft folder, a hub-ready folder, ONNX (see :func:`export_adapter`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..adapters import adapter_metadata, merge_adapter, require_strategy, save_adapter
from ..errors import (
    InputError,
    UnknownNameError,
)
from ..io import (
    atomic_dir,
    check_not_input,
    output_lock,
)
from ..models.convert import NO_ORIGINAL_FORMAT, save_original_checkpoint
from ..models.family import SAM, SAM_HQ, family_of
from ..models.identity import model_source, preprocess_config, samtune_info
from .card import model_card
from .onnx import export_onnx

EXPORT_FORMATS = (
    "hf",
    "original",
    "segment-anything",
    "peft",
    "hub",
    "onnx",
    "x-anylabeling",
    "cvat",
)
SAM_ONLY_FORMATS = ("segment-anything", "onnx", "x-anylabeling", "cvat")


def export_adapter(
    model: torch.nn.Module,
    output: str | os.PathLike,
    format: str = "hf",
    *,
    metrics: str | os.PathLike | None = None,
    overwrite: bool = False,
    protect: list[str | os.PathLike] | tuple = (),
    quantize: str | None = None,
    profile: str | None = None,
) -> Path:
    """Write a tuned model in another format.

    Args:
        model: a tuned ``SamModel`` (from :func:`load_adapter` or a strategy's ``apply``).
        output: folder (``hf``, ``peft``, ``hub``, ``onnx``) or file (``original``,
            ``segment-anything``).
        format: ``hf`` (merged model folder, loads with the family's ``from_pretrained``),
            ``original`` (merged, in the family's original format: Meta ``.pth``, SAM-HQ
            ``.pth`` or SAM 2 ``.pt``; :func:`samtune.models.save_original_checkpoint`),
            ``segment-anything`` (merged Meta ``.pth``, SAM only), ``peft`` (peft directory, for
            peft-based strategies such as ``lora``), ``hub`` (adapter + config + model card).
        metrics: for ``hub``, a JSON (flat ``{name: value}`` or ``{"metrics": {...}}``) or
            Markdown file whose content becomes the card's evaluation section.
        overwrite: replace an output that samtune wrote earlier (a folder whose manifest
            lists everything in it, a ``.pth`` whose sidecar matches it). Nothing samtune did
            not write is ever removed; the current folder and its parents never are.
        protect: paths that must survive (the adapter and base being exported): an output
            folder that holds one of them is refused.
        quantize: for ``onnx`` (encoder + decoder + ``samtune_onnx.json``, see
            :mod:`samtune.export.onnx`): ``None``, ``"fp16"`` or ``"int8"`` for the encoder.
        profile: for ``x-anylabeling`` (encoder + decoder ONNX with an annotation tool's
            conventions, X-AnyLabeling's model YAML, a README; :mod:`samtune.export.tools`):
            ``x-anylabeling`` (default), ``samexporter`` or ``osam``. ``cvat`` writes a CVAT
            serverless (nuclio) interactor folder (:mod:`samtune.export.cvat`).

    Raises:
        UnknownNameError: an unknown format.
        InputError: a format the strategy cannot produce (``peft`` for non-peft strategies,
            merged formats for ``adapter``), or an output that exists and may not be replaced.
    """
    strategy = require_strategy(model)
    output = Path(output)
    _check_export(model, format, quantize, profile)
    protect = [*protect, *([model_source(model)] if Path(model_source(model)).exists() else [])]
    if format in ("original", "segment-anything"):  # folders: atomic_dir protects them
        # an input of the command (the adapter, its base model, the metrics) is never an output
        check_not_input(output, protect, advice="choose another output path")
    with output_lock(output, beside=True, command="export"):
        _write_export(
            model, strategy, output, format, metrics, overwrite, protect, quantize, profile
        )
    return output


def _write_export(model, strategy, output: Path, format: str, metrics, overwrite: bool,
                  protect: list, quantize: str | None, profile: str | None) -> None:  # fmt: skip
    """The files of one export format (see :func:`export_adapter`)."""
    if format == "x-anylabeling":
        from .tools import export_tool_onnx

        export_tool_onnx(
            model, output, profile=profile or "x-anylabeling", overwrite=overwrite, protect=protect
        )
    elif format == "cvat":
        from .cvat import export_cvat

        export_cvat(model, output, overwrite=overwrite, protect=protect)
    elif format == "hf":
        merged = merge_adapter(model)
        with atomic_dir(output, overwrite=overwrite, protect=protect) as tmp:
            save_hf_folder(merged, tmp)
    elif format in ("original", "segment-anything"):
        save_original_checkpoint(merge_adapter(model), output, overwrite=overwrite)
    elif format == "onnx":
        export_onnx(model, output, quantize=quantize, overwrite=overwrite, protect=protect)
    elif format == "peft":
        if not hasattr(strategy, "save_peft_directory"):
            raise InputError(
                f"strategy {strategy.name!r} does not produce peft layers, so it cannot be "
                "written as a peft directory; use format 'hf' (merged model) or the adapter file"
            )
        with atomic_dir(output, overwrite=overwrite, protect=protect) as tmp:
            strategy.save_peft_directory(model, tmp)
    else:
        model_card(model, metrics)  # a bad metrics file fails before anything is written
        with atomic_dir(output, overwrite=overwrite, protect=protect) as tmp:
            save_adapter(model, tmp)
            meta = adapter_metadata(model)
            config = {**meta, "strategy_config": json.loads(meta["strategy_config"])}
            (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
            (tmp / "README.md").write_text(model_card(model, metrics))


def _check_export(
    model: torch.nn.Module, format: str, quantize: str | None, profile: str | None = None
) -> None:
    """Refuse an unknown format or profile, ``quantize`` outside onnx, ``profile`` outside
    x-anylabeling, and SAM-only formats for other families."""
    if format not in EXPORT_FORMATS:
        raise UnknownNameError(
            f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}"
        )
    if quantize is not None and format != "onnx":
        raise InputError(f"quantize applies to the onnx format only, not {format!r}")
    if profile is not None:
        if format != "x-anylabeling":
            raise InputError(f"--profile applies to the x-anylabeling format only, not {format!r}")
        from .tools import get_profile

        get_profile(profile)
    family = family_of(model)
    if format == "original" and family.name in NO_ORIGINAL_FORMAT:  # before any merging
        raise InputError(
            f"format 'original': samtune has no converter to "
            f"{NO_ORIGINAL_FORMAT[family.name]}'s original checkpoint format; this model is "
            f"{family.name} ({type(model).__name__}): export it as 'hf' (a merged "
            f"{type(model).__name__} folder) or keep the adapter file"
        )
    if format in SAM_ONLY_FORMATS and family is not SAM:
        raise InputError(
            f"format {format!r} holds SAM (SamModel) only; this model is {family.name} "
            f"({type(model).__name__}): export it as 'original' (its own original format), "
            f"'hf' (a merged {type(model).__name__} folder) or keep the adapter file"
        )


def save_hf_folder(model: torch.nn.Module, folder: str | os.PathLike) -> Path:
    """``model.save_pretrained(folder)`` plus the processor config of its preprocessing
    (``processor_config.json`` in transformers 5), so the family's processor
    (``SamProcessor``, ``SamHQProcessor``, ``Sam2Processor``; ``Sam3TrackerProcessor`` for
    SAM 3's tracker, ``Sam2Processor`` for EdgeTAM as transformers maps it) loads from the folder and a
    reload keeps it."""
    from transformers import (
        Sam2ImageProcessor,
        Sam2Processor,
        SamHQProcessor,
        SamImageProcessor,
        SamProcessor,
    )

    folder = Path(folder)
    pre = preprocess_config(model)
    mean = [m / 255.0 for m in pre.mean]
    std = [s / 255.0 for s in pre.std]
    side = {"height": pre.image_size, "width": pre.image_size}
    if family_of(model).has_text:  # SAM 3: its processor holds the tokenizer of its phrases
        processor = _text_processor(model, side, mean, std)
    elif family_of(model).name == "sam3-tracker":  # what AutoProcessor gives sam3_tracker
        from transformers import Sam3ImageProcessor, Sam3TrackerProcessor

        processor = Sam3TrackerProcessor(
            image_processor=Sam3ImageProcessor(size=side, image_mean=mean, image_std=std)
        )
    elif pre.square:  # SAM 2 and EdgeTAM: stretched to the square, no padding
        processor = Sam2Processor(
            image_processor=Sam2ImageProcessor(size=side, image_mean=mean, image_std=std)
        )
    else:
        image_processor = SamImageProcessor(
            size={"longest_edge": pre.image_size}, pad_size=side, image_mean=mean, image_std=std
        )
        processor_class = SamHQProcessor if family_of(model) is SAM_HQ else SamProcessor
        processor = processor_class(image_processor=image_processor)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _text_processor(model: torch.nn.Module, side: dict, mean: list, std: list):
    """A ``Sam3Processor`` (image processor and the model's tokenizer), or only the image
    processor for a model that came without a tokenizer."""
    from transformers import Sam3ImageProcessor, Sam3Processor

    image_processor = Sam3ImageProcessor(size=side, image_mean=mean, image_std=std)
    tokenizer = samtune_info(model).tokenizer
    if tokenizer is None:
        return image_processor
    return Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)
