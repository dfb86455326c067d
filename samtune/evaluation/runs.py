"""An evaluation from an :class:`EvalConfig`: the base model and its adapters on a dataset.

What ``samtune eval`` runs (the command parses options and prints what this returns):
check the options, load the dataset, evaluate the base model zero-shot and/or each adapter
with one protocol, and write the output folder.

Output layout (:func:`write_outputs`): one model writes ``metrics.json``, ``report.md``,
``records.jsonl`` and plots into the folder; several write one sub-folder each
(``0-<base>``, ``1-<adapter>``, ...) plus ``comparison.md``, ``comparison.json`` and combined
plots.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..adapters import load_tuned, read_adapter
from ..data import load_dataset
from ..data.phrases import dataset_phrases
from ..data.recipes import check_dataset
from ..data.tool_exports import tool_export_name
from ..errors import CheckpointError, ConfigError, MissingFileError
from ..io import atomic_write, claim_output, is_main_process, read_json_object
from ..models.family import SAM, Family, family_named, family_of, family_of_model_type
from ..models.loading import check_model_source, load_model
from ..models.presets import PRESETS, preset_family
from ..segment.automatic_config import AutoMaskConfig
from . import plots as P
from .config import EvalConfig
from .protocols import evaluate, parse_protocol
from .report import EvalReport, format_comparison, reports_to_json


def run_evaluation(
    config: EvalConfig, *, accelerator: Any = None, inputs: list | tuple = ()
) -> dict[str, EvalReport]:
    """Evaluate ``config.model`` and/or its adapters; write ``config.output`` if set.

    Without adapters the base model is evaluated; with adapters each tuned model is (the base
    model zero-shot first too with ``compare``). Names, files and the dataset are checked
    before any model loads.

    Args:
        config: the options (see :class:`EvalConfig`; build one from a YAML file and given
            options with ``merge_options(EvalConfig, file, given)``).
        accelerator: an ``accelerate.Accelerator`` to shard images over (default: a new one,
            on the CPU for ``device="cpu"``).
        inputs: files read besides those ``config`` names (the ``-c`` file): never written.

    Returns:
        ``{label: EvalReport}`` in display order, on every process (the output folder is
        written by the main process). Labels: the model source (one model), ``<source>
        (zero-shot)``, and each adapter's folder name (made unique).

    Raises:
        ConfigError, UnknownNameError, MissingFileError: a bad protocol, adapter or dataset.
        InputError: ``config.output`` holds files samtune did not write there with ``eval``,
            or one of the inputs; "folder in use" (see :func:`samtune.io.claim_output`).
    """
    protocol = parse_protocol(config.prompt)
    for name in AUTO_OPTIONS:
        if protocol.kind != "auto" and getattr(config, name) != config.field_default(name):
            raise ConfigError(f"{name} applies to the auto protocol only, not {protocol.name!r}")
    if config.box_source != "mask" and protocol.kind != "box":
        raise ConfigError(
            f"box_source applies to the box protocol only, not {protocol.name!r}; leave it 'mask'"
        )
    check_model_source(config.model)
    if protocol.kind == "text" or config.model in PRESETS:
        _check_family_fits(config.model, protocol)
    adapters = list(config.adapter or [])
    for a in adapters:
        if (a.startswith((".", "/", "~")) or Path(a).suffix) and not Path(a).expanduser().exists():
            raise MissingFileError(f"adapter {a!r} does not exist; give a folder written by fit")
    if config.compare and not adapters:
        raise ConfigError("--compare needs at least one --adapter to compare with the base model")
    options = {}
    if tool_export_name(config.dataset) is not None or config.dataset.startswith(
        "label-studio:"
    ):  # cvat:PATH, labelme:DIR, label-studio:EXPORT.json...
        options = {} if config.images is None else {"images": config.images}
        if config.annotations is not None:
            raise ConfigError(f"--annotations applies to --dataset coco, not {config.dataset!r}")
    elif config.images is not None or config.annotations is not None:
        if config.dataset != "coco":
            raise ConfigError(
                f"--images and --annotations apply to --dataset coco only, not {config.dataset!r}"
            )
        options = {"images": config.images, "annotations": config.annotations}
    check_dataset(config.dataset, [config.split], config.root, **options)
    runs = list(_runs(config.model, adapters, config.compare))
    with _claim(config, [label for label, _ in runs], inputs):
        data = load_dataset(config.dataset, config.split, config.root, **options)
        if accelerator is None:
            from accelerate import Accelerator

            accelerator = Accelerator(cpu=config.device == "cpu")
        phrases = None
        if protocol.kind == "text":  # what prompt: text trains with (checked before any load)
            phrases = dataset_phrases(data, config.prompt_map, recipe=config.dataset)
        reports = _evaluate_all(config, runs, data, protocol, accelerator, phrases)
        if config.output is not None and accelerator.is_main_process:
            write_outputs(reports, config.output, data, plots=config.plots)
    return reports


def _source_family(source: str) -> Family | None:
    """The family a model source names without loading it: a preset's, or the
    ``config.json`` of a folder; ``None`` where that takes loading (a hub id, a checkpoint)."""
    if source in PRESETS:
        return family_named(preset_family(source))
    config_file = Path(source).expanduser() / "config.json"
    if not config_file.is_file():
        return None
    model_type = read_json_object(config_file, CheckpointError).get("model_type")
    return family_of_model_type(model_type, f"folder {source!r}")


def _check_family_fits(source: str, protocol) -> None:
    """ConfigError, before anything is loaded or written, when the protocol and the model's
    family do not go together: ``text`` needs a SAM 3, a SAM 3 evaluates only with ``text``.
    (A hub model is checked once loaded, by :func:`evaluate`.)"""
    family = _source_family(source)
    if family is None or family.has_text == (protocol.kind == "text"):
        return
    if protocol.kind == "text":
        raise ConfigError(
            f"--prompt text needs a model with a text encoder (SAM 3, family sam3); "
            f"{source!r} is {family.name}. Use box, point, clicks:N or auto with it, or "
            "evaluate a SAM 3 model (facebook/sam3, tiny-sam3)"
        )
    raise ConfigError(
        f"{source!r} is a SAM 3 model, prompted by name: evaluate it with --prompt text, not "
        f"{protocol.name!r}"
    )


def _claim(config: EvalConfig, labels: list[str], inputs) -> Any:
    """``config.output`` under the ownership rule, locked by the main process (or nothing)."""
    if config.output is None:
        return contextlib.nullcontext()
    return claim_output(config.output, command="eval", names=output_names(config, labels),
                        inputs=[*inputs, *_input_paths(config)],
                        lock=is_main_process())  # fmt: skip


def _evaluate_all(
    config: EvalConfig, runs: list, data, protocol, accelerator, phrases: dict | None
) -> dict:
    target = config.device if config.device is not None else accelerator.device
    auto = _auto_config(config) if protocol.kind == "auto" else None
    reports = {}
    for label, adapter in runs:
        sam = _load(config.model, adapter).to(target)
        reports[label] = evaluate(
            sam,
            data,
            protocol,
            accelerator=accelerator,
            prompt_batch=config.prompt_batch,
            jitter=config.jitter,
            seed=config.seed,
            max_images=config.max_images,
            worst=config.worst if config.output is not None else 0,
            progress=False if config.quiet else None,
            name=label,
            auto=auto,
            box_source=config.box_source,
            phrases=phrases,
        )
        reports[label].model["adapter"] = adapter
        del sam
    return reports


_REPORT_FILES = ("metrics.json", "report.md", "records.jsonl")
_PLOTS = ("per_class_iou.png", "iou_histogram.png")


def _folder_name(index: int, label: str) -> str:
    return f"{index}-{Path(label.split(' ')[0]).name}"


def output_names(config: EvalConfig, labels: list[str]) -> list[str]:
    """The entries :func:`write_outputs` may write into ``config.output`` for these runs."""
    kind = parse_protocol(config.prompt).kind
    files = list(_REPORT_FILES)
    if kind in ("auto", "text"):
        files += ["coco_results.json", "coco_ground_truth.json"]
    elif config.plots:
        files += [*_PLOTS, *(["click_curve.png"] if kind == "clicks" else [])]
        files += ["worst"] if config.worst else []
    if len(labels) == 1:
        return files
    plots = list(_PLOTS) if config.plots and kind not in ("auto", "text") else []
    folders = [_folder_name(i, label) for i, label in enumerate(labels)]
    return [*folders, "comparison.md", "comparison.json", *plots]


def _input_paths(config: EvalConfig) -> list[Path]:
    """The local files and folders the evaluation reads."""
    given = [config.model, *(config.adapter or []), config.root, config.images, config.annotations]
    return [Path(v) for v in given if v is not None and str(v) and Path(v).exists()]


AUTO_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh")
"""The :class:`EvalConfig` options of the ``auto`` protocol's mask generator."""


def _auto_config(config: EvalConfig) -> AutoMaskConfig:
    """The mask generator's options of an ``auto`` evaluation."""
    return AutoMaskConfig(
        points_per_side=config.points_per_side,
        points_per_batch=config.prompt_batch,
        pred_iou_thresh=config.pred_iou_thresh,
        stability_score_thresh=config.stability_score_thresh,
    )


def _runs(model: str, adapters: list[str], compare: bool) -> Iterator[tuple[str, str | None]]:
    """(label, adapter or None for the base model) in display order; labels are unique."""
    used: set[str] = set()
    if compare or not adapters:
        label = f"{model} (zero-shot)" if adapters else model
        used.add(label)
        yield label, None
    for adapter in adapters:
        base = Path(adapter).name or adapter
        label, i = base, 2
        while label in used:
            label, i = f"{base}-{i}", i + 1
        used.add(label)
        yield label, adapter


def _load(model: str, adapter: str | None):
    """The base model (on the CPU), tuned with ``adapter`` if given. An adapter of another
    SAM family than ``model`` (a SAM 2 adapter beside a SAM base) is loaded onto the base it
    records, so SAM, SAM-HQ and SAM 2 adapters can share one comparison."""
    base = load_model(model, device="cpu")
    if adapter is None:
        return base
    recorded = read_adapter(adapter).metadata.get("base_family", SAM.name)
    if recorded != family_of(base).name:
        return load_tuned(adapter)
    return load_tuned(adapter, base)


def write_outputs(
    reports: Mapping[str, EvalReport],
    output: str | os.PathLike,
    dataset: Any = None,
    *,
    plots: bool = True,
) -> None:
    """Write ``reports`` into ``output`` (layout: see the module docstring).

    ``dataset`` (the one evaluated) draws the worst-prediction overlays; ``plots=False``
    writes no PNG.
    """
    output = Path(output)
    single = len(reports) == 1
    for i, (label, report) in enumerate(reports.items()):
        folder = output if single else output / _folder_name(i, label)
        report.save(folder)
        if plots and report.records:  # auto has no per-instance IoU to plot
            P.plot_per_class(report, folder / "per_class_iou.png")
            P.plot_iou_histogram(report, folder / "iou_histogram.png")
            if report.protocol.startswith("clicks"):
                P.plot_click_curve(report, folder / "click_curve.png")
            if report.worst and dataset is not None:
                P.save_worst_overlays(report, dataset, folder / "worst")
    if not single:
        with atomic_write(output / "comparison.md") as tmp:
            tmp.write_text(format_comparison(reports))
        with atomic_write(output / "comparison.json") as tmp:
            tmp.write_text(reports_to_json(reports))
        if plots and all(r.records for r in reports.values()):
            P.plot_per_class(reports, output / "per_class_iou.png")
            P.plot_iou_histogram(reports, output / "iou_histogram.png")


__all__ = ["run_evaluation", "write_outputs"]
