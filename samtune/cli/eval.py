"""``samtune eval``: IoU of a model (and adapters) on a dataset with the box/point/click protocols.

Parses the options and prints the reports; :func:`samtune.evaluation.run_evaluation` does the
rest. Help texts and defaults are :class:`~samtune.evaluation.config.EvalConfig`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import Fields, given

EVAL = Fields("samtune.evaluation.config:EvalConfig")


def eval_command(
    ctx: typer.Context,
    model: Annotated[str | None, EVAL.option("model", "--model", "-m")] = None,
    adapter: Annotated[list[str] | None, EVAL.option("adapter", "--adapter", "-a")] = None,
    compare: Annotated[bool, EVAL.option("compare", "--compare")] = False,
    dataset: Annotated[str | None, EVAL.option("dataset", "--dataset", "-d")] = None,
    split: Annotated[str | None, EVAL.option("split", "--split")] = None,
    root: Annotated[Path | None, EVAL.option("root", "--root")] = None,
    images: Annotated[Path | None, EVAL.option("images", "--images")] = None,
    annotations: Annotated[Path | None, EVAL.option("annotations", "--annotations")] = None,
    prompt: Annotated[str | None, EVAL.option("prompt", "--prompt", "-p")] = None,
    prompt_map: Annotated[list[str] | None, EVAL.option("prompt_map", "--prompt-map")] = None,
    jitter: Annotated[float | None, EVAL.option("jitter", "--jitter")] = None,
    box_source: Annotated[str | None, EVAL.option("box_source", "--box-source")] = None,
    seed: Annotated[int | None, EVAL.option("seed", "--seed")] = None,
    prompt_batch: Annotated[int | None, EVAL.option("prompt_batch", "--prompt-batch")] = None,
    points_per_side: Annotated[
        int | None, EVAL.option("points_per_side", "--points-per-side")
    ] = None,
    pred_iou_thresh: Annotated[
        float | None, EVAL.option("pred_iou_thresh", "--pred-iou-thresh")
    ] = None,
    stability_score_thresh: Annotated[
        float | None, EVAL.option("stability_score_thresh", "--stability-score-thresh")
    ] = None,
    max_images: Annotated[int | None, EVAL.option("max_images", "--max-images")] = None,
    output: Annotated[Path | None, EVAL.option("output", "--output", "-o")] = None,
    # an on/off flag's shown default is typer's own, from here (the others' are EvalConfig's)
    plots: Annotated[bool, EVAL.option("plots", "--plots/--no-plots")] = True,
    worst: Annotated[int | None, EVAL.option("worst", "--worst")] = None,
    device: Annotated[str | None, EVAL.option("device", "--device")] = None,
    json_output: Annotated[bool, EVAL.option("json_output", "--json")] = False,
    quiet: Annotated[bool, EVAL.option("quiet", "--quiet", "-q")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML file of these options; flags override it."),
    ] = None,
) -> None:
    """Evaluate a SAM model (and adapters) on a dataset: instance mIoU and friends.

    Every ground-truth instance is prompted (box, centre point, or N corrective clicks); masks
    are scored at the original resolution. With --prompt auto nothing is prompted: every mask
    the automatic generator finds is scored as class-agnostic COCO instance segmentation (AP,
    AR@1/10/100, by area). Several processes: `accelerate launch -m samtune.cli
    eval ...` (same numbers as one process).

    Examples:

        samtune eval --model demo --dataset demo --prompt box

        samtune eval -m facebook/sam-vit-base -d zerowaste --split test --prompt point -o runs/zs

        samtune eval -m demo --adapter runs/lora --adapter runs/decoder --compare -o runs/cmp

        samtune eval --config eval.yaml --prompt clicks:5

        samtune eval -m demo --adapter runs/lora --compare --prompt auto -o runs/auto
    """
    from ..evaluation import EvalConfig, format_reports, reports_to_json, run_evaluation
    from ..options import merge_options
    from ._options import parse_phrases

    options = given(ctx)
    options.pop("config", None)
    if "prompt_map" in options:
        options["prompt_map"] = parse_phrases(options["prompt_map"])
    cfg = merge_options(EvalConfig, config, options)
    reports = run_evaluation(cfg, inputs=[config] if config is not None else [])

    from accelerate import PartialState

    if not PartialState().is_main_process:  # print once
        return
    typer.echo(reports_to_json(reports) if cfg.json_output else format_reports(reports))
    if cfg.output is not None and not cfg.json_output:
        typer.echo(f"wrote {cfg.output}")


def register(app: typer.Typer) -> None:
    app.command("eval", context_settings=EVAL.settings())(eval_command)
