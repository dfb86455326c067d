"""``samtune fit``: fine-tune SAM with a strategy on a dataset (Accelerate, one CPU to many GPUs).

Parses the options and prints the result; :func:`samtune.fit` does the rest. Help texts and
defaults are :class:`~samtune.train.config.FitConfig`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import Fields, given

FIT = Fields("samtune.train.config:FitConfig")


def fit(
    ctx: typer.Context,
    strategy: Annotated[str | None, FIT.option("strategy", "--strategy", "-s")] = None,
    dataset: Annotated[str | None, FIT.option("dataset", "--dataset", "-d")] = None,
    model: Annotated[str | None, FIT.option("model", "--model", "-m")] = None,
    images: Annotated[Path | None, FIT.option("images", "--images")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML file of options (a run's config.yaml)."),
    ] = None,
    output_dir: Annotated[Path | None, FIT.option("output_dir", "--output-dir", "-o")] = None,
    recipe: Annotated[str | None, FIT.option("recipe", "--recipe")] = None,
    epochs: Annotated[int | None, FIT.option("epochs")] = None,
    max_steps: Annotated[int | None, FIT.option("max_steps")] = None,
    batch_size: Annotated[int | None, FIT.option("batch_size")] = None,
    lr: Annotated[float | None, FIT.option("lr")] = None,
    prompt: Annotated[str | None, FIT.option("prompt")] = None,
    point_sampling: Annotated[str | None, FIT.option("point_sampling")] = None,
    box_source: Annotated[str | None, FIT.option("box_source")] = None,
    mixed_precision: Annotated[
        str | None, FIT.option("mixed_precision", "--mixed-precision")
    ] = None,
    grad_accum: Annotated[int | None, FIT.option("grad_accum")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        FIT.option(
            "gradient_checkpointing", "--gradient-checkpointing/--no-gradient-checkpointing"
        ),
    ] = None,
    cache: Annotated[str | None, FIT.option("cache")] = None,
    attention: Annotated[str | None, FIT.option("attention")] = None,
    compile: Annotated[str | None, FIT.option("compile", "--compile")] = None,
    eval_every: Annotated[int | None, FIT.option("eval_every")] = None,
    checkpoint_every: Annotated[int | None, FIT.option("checkpoint_every")] = None,
    early_stopping: Annotated[int | None, FIT.option("early_stopping")] = None,
    seed: Annotated[int | None, FIT.option("seed")] = None,
    resume: Annotated[bool, FIT.option("resume", "--resume")] = False,
    quiet: Annotated[bool, FIT.option("quiet", "--quiet", "-q")] = False,
    prompt_map: Annotated[list[str] | None, FIT.option("prompt_map", "--prompt-map")] = None,
    strategy_option: Annotated[
        list[str] | None, FIT.option("strategy_options", "--strategy-option", "-S")
    ] = None,
) -> None:
    """Fine-tune SAM; writes config.yaml, adapter/, best/, checkpoints/, metrics.json, results.md.

    Every option can also be set in the YAML given with --config; the command line wins.

    Examples:

        samtune fit --strategy lora --dataset demo

        samtune fit --strategy lora --dataset trashcan --epochs 20 --mixed-precision bf16

        samtune fit --config runs/lora-trashcan/config.yaml --resume

        samtune fit --strategy lora --dataset cvat:export/annotations.xml --images export/images
        samtune fit --strategy decoder --dataset trashcan --recipe lightning-sam --epochs 10

        accelerate launch --num_processes 2 -m samtune fit --strategy decoder --dataset trashcan
    """
    from ..options import parse_key_values
    from ..train import fit as run_fit
    from ._options import parse_phrases

    options = given(ctx)
    options.pop("config", None)
    if "strategy_option" in options:
        options["strategy_options"] = parse_key_values(options.pop("strategy_option"))
    if "prompt_map" in options:
        options["prompt_map"] = parse_phrases(options["prompt_map"])
    result = run_fit(config=config, **options)
    typer.echo(f"run folder: {result.output_dir}")
    if result.best_metric is not None:
        typer.echo(f"best validation mIoU {result.best_metric:.4f} at step {result.best_step}")


def register(app: typer.Typer) -> None:
    app.command(context_settings=FIT.settings())(fit)
