"""``samtune eval``: IoU of a model (and adapters) on a dataset with the box/point/click protocols."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError, MissingFileError

# option name -> python parameter; the YAML keys --config accepts (dashes or underscores)
CONFIG_KEYS = (
    "model",
    "adapter",
    "compare",
    "dataset",
    "split",
    "root",
    "images",
    "annotations",
    "prompt",
    "jitter",
    "seed",
    "prompt_batch",
    "max_images",
    "output",
    "plots",
    "worst",
    "device",
    "json_output",
    "quiet",
)


def read_config(path: Path) -> dict:
    """Read an eval YAML config: a mapping of option names (``prompt-batch`` or ``prompt_batch``)."""
    from ..io import read_yaml_mapping

    data = read_yaml_mapping(path, "option: value")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = "json_output" if name == "json" else name
        if name not in CONFIG_KEYS:
            raise ConfigError(
                f"unknown option {key!r} in {str(path)!r}; valid options: "
                f"{', '.join(k.replace('_', '-') for k in CONFIG_KEYS)}"
            )
        out[name] = value
    return out


# Python types the options take where they differ from the command line's (lists of paths).
_TYPES = {"adapter": list[str | Path] | None}


def check_options(values: dict) -> None:
    """Check the type of every option (from ``--config`` or Python) and the range of numbers.

    Raises:
        ConfigError: naming the option, what it expects and what it found.
    """
    import typing

    from ..train.config import check_range, check_seed, check_type

    hints = {**typing.get_type_hints(eval_command), **_TYPES}
    for key, value in values.items():
        if key in CONFIG_KEYS:
            check_type(key, value, hints[key])
    check_range("jitter", values.get("jitter"), minimum=0)
    check_seed("seed", values.get("seed"))
    check_range("prompt_batch", values.get("prompt_batch"), minimum=1)
    check_range("max_images", values.get("max_images"), minimum=1)
    check_range("worst", values.get("worst"), minimum=0)


def eval_command(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Base model: preset, local folder or .pth, hub id.")
    ] = "demo",
    adapter: Annotated[
        list[str] | None,
        typer.Option("--adapter", "-a", help="Adapter folder or hub id (repeat for several)."),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare", help="Also evaluate the base model zero-shot; print all side by side."
        ),
    ] = False,
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", "-d", help="trashcan, trashcan-material, zerowaste, taco, demo, coco."
        ),
    ] = "demo",
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "val",
    root: Annotated[
        Path | None, typer.Option("--root", help="Dataset folder (default: the recipe's).")
    ] = None,
    images: Annotated[Path | None, typer.Option("--images", help="coco: image folder.")] = None,
    annotations: Annotated[
        Path | None, typer.Option("--annotations", help="coco: annotation JSON.")
    ] = None,
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="Protocol: box, point or clicks:N.")
    ] = "box",
    jitter: Annotated[
        float, typer.Option("--jitter", help="Box noise (fraction of box side), box only.")
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for box jitter.")] = 0,
    prompt_batch: Annotated[
        int, typer.Option("--prompt-batch", help="Prompts per decoder call.")
    ] = 32,
    max_images: Annotated[
        int | None, typer.Option("--max-images", help="Evaluate the first N images only.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder for metrics.json, report.md, plots."),
    ] = None,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write PNG plots (with --output).")
    ] = True,
    worst: Annotated[
        int, typer.Option("--worst", help="Overlays of the N worst predictions (with --output).")
    ] = 8,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: Accelerate's).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML file of these options; flags override it."),
    ] = None,
) -> None:
    """Evaluate a SAM model (and adapters) on a dataset: instance mIoU and friends.

    Every ground-truth instance is prompted (box, centre point, or N corrective clicks); masks
    are scored at the original resolution. Several processes: `accelerate launch -m samtune.cli
    eval ...` (same numbers as one process).

    Examples:

        samtune eval --model demo --dataset demo --prompt box

        samtune eval -m facebook/sam-vit-base -d zerowaste --split test --prompt point -o runs/zs

        samtune eval -m demo --adapter runs/lora --adapter runs/decoder --compare -o runs/cmp

        samtune eval --config eval.yaml --prompt clicks:5
    """
    values = {k: v for k, v in locals().items() if k in CONFIG_KEYS}
    if config is not None:
        for key, value in read_config(config).items():
            source = ctx.get_parameter_source(key)  # typer may vendor click: compare names
            if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
                values[key] = value
    run_eval(**values)


def _label(adapter: str, used: set[str]) -> str:
    base = Path(adapter).name or str(adapter)
    label, i = base, 2
    while label in used:
        label, i = f"{base}-{i}", i + 1
    used.add(label)
    return label


def run_eval(
    *,
    model: str,
    adapter: list[str] | None,
    compare: bool,
    dataset: str,
    split: str,
    root,
    images,
    annotations,
    prompt: str,
    jitter: float,
    seed: int,
    prompt_batch: int,
    max_images: int | None,
    output,
    plots: bool,
    worst: int,
    device: str | None,
    json_output: bool,
    quiet: bool,
) -> dict:
    """The body of ``samtune eval`` (also usable from Python); returns ``{label: EvalReport}``."""
    from ..data import load_dataset
    from ..data.recipes import check_dataset
    from ..evaluate import evaluate, format_comparison, parse_protocol
    from ..models import load_model

    # Fail on a bad option, protocol, dataset or split before loading anything.
    check_options({k: v for k, v in locals().items() if k in CONFIG_KEYS})
    protocol = parse_protocol(prompt)
    adapters = [str(a) for a in (adapter or [])]
    if isinstance(adapter, str):
        adapters = [adapter]
    for a in adapters:
        if (a.startswith((".", "/", "~")) or Path(a).suffix) and not Path(a).expanduser().exists():
            raise MissingFileError(f"adapter {a!r} does not exist; give a folder written by fit")
    if compare and not adapters:
        raise ConfigError("--compare needs at least one --adapter to compare with the base model")

    options = {}
    if images is not None or annotations is not None:
        if dataset != "coco":
            raise ConfigError(
                f"--images and --annotations apply to --dataset coco only, not {dataset!r}"
            )
        options = {"images": images, "annotations": annotations}
    check_dataset(dataset, [split], root, **options)
    data = load_dataset(dataset, split, root, **options)

    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device == "cpu")
    target = device if device is not None else accelerator.device

    def build(adapter_dir: str | None):
        base = load_model(model, device="cpu")
        if adapter_dir is None:
            return base.to(target)
        from ..adapters import load_adapter

        return load_adapter(base, adapter_dir).to(target)

    used: set[str] = set()
    runs: list[tuple[str, str | None]] = []
    if compare or not adapters:
        runs.append((f"{model} (zero-shot)" if adapters else model, None))
        used.add(runs[0][0])
    runs += [(_label(a, used), a) for a in adapters]

    reports = {}
    for label, adapter_dir in runs:
        sam = build(adapter_dir)
        reports[label] = evaluate(
            sam,
            data,
            protocol,
            accelerator=accelerator,
            prompt_batch=prompt_batch,
            jitter=jitter,
            seed=seed,
            max_images=max_images,
            worst=worst if output is not None else 0,
            progress=False if quiet else None,
            name=label,
        )
        reports[label].model["adapter"] = adapter_dir
        del sam

    if not accelerator.is_main_process:
        return reports
    if output is not None:
        _write_outputs(Path(output), reports, data, plots)
    if json_output:
        typer.echo(json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=2, default=str))
    elif len(reports) > 1:
        typer.echo(format_comparison(reports))
    else:
        typer.echo(next(iter(reports.values())).to_markdown())
    if output is not None and not json_output:
        typer.echo(f"wrote {output}")
    return reports


def _write_outputs(output: Path, reports: dict, data, plots: bool) -> None:
    from ..evaluate import format_comparison
    from ..evaluate import plots as P
    from ..io import atomic_write

    single = len(reports) == 1
    for i, (label, report) in enumerate(reports.items()):
        folder = output if single else output / f"{i}-{Path(label.split(' ')[0]).name}"
        report.save(folder)
        if plots:
            P.plot_per_class(report, folder / "per_class_iou.png")
            P.plot_iou_histogram(report, folder / "iou_histogram.png")
            if report.protocol.startswith("clicks"):
                P.plot_click_curve(report, folder / "click_curve.png")
            if report.worst:
                P.save_worst_overlays(report, data, folder / "worst")
    if not single:
        with atomic_write(output / "comparison.md") as tmp:
            tmp.write_text(format_comparison(reports))
        with atomic_write(output / "comparison.json") as tmp:
            tmp.write_text(
                json.dumps({k: r.to_dict() for k, r in reports.items()}, indent=2, default=str)
            )
        if plots:
            P.plot_per_class(reports, output / "per_class_iou.png")
            P.plot_iou_histogram(reports, output / "iou_histogram.png")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
