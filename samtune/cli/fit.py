"""``samtune fit``: fine-tune SAM with a strategy on a dataset (Accelerate, one CPU to many GPUs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def fit(
    strategy: Annotated[
        str | None,
        typer.Option("--strategy", "-s", help="Strategy: lora, decoder, adapter, full..."),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Dataset recipe: demo, trashcan, ...")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model source (default facebook/sam-vit-base; demo for --dataset demo).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML file of options (a run's config.yaml)."),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Run folder (default runs/STRATEGY-DATASET)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many optimizer steps.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step per process.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    prompt: Annotated[
        str | None, typer.Option(help="Training prompts: box, point or interactive.")
    ] = None,
    mixed_precision: Annotated[
        str | None, typer.Option("--mixed-precision", help="no, fp16 or bf16.")
    ] = None,
    grad_accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps.")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            help="Recompute image-encoder activations in backward (saves memory).",
        ),
    ] = None,
    cache: Annotated[
        str | None, typer.Option(help="Embedding cache for frozen encoders: auto, on or off.")
    ] = None,
    attention: Annotated[
        str | None,
        typer.Option(help="Image-encoder attention: sdpa or flex (fused bias, CUDA only)."),
    ] = None,
    compile: Annotated[
        str | None,
        typer.Option(
            "--compile",
            help="torch.compile mode: no, default or max-autotune-no-cudagraphs.",
        ),
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Validate every N steps (default: each epoch).")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps (default: each epoch).")
    ] = None,
    early_stopping: Annotated[
        int | None, typer.Option(help="Stop after N validations without improvement.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    strategy_option: Annotated[
        list[str] | None,
        typer.Option("--strategy-option", "-S", help="Strategy setting key=value (repeatable)."),
    ] = None,
) -> None:
    """Fine-tune SAM; writes config.yaml, adapter/, best/, checkpoints/, metrics.json, results.md.

    Every option can also be set in the YAML given with --config; the command line wins.

    Examples:

        samtune fit --strategy lora --dataset demo

        samtune fit --strategy lora --dataset trashcan --epochs 20 --mixed-precision bf16

        samtune fit --config runs/lora-trashcan/config.yaml --resume

        accelerate launch --num_processes 2 -m samtune fit --strategy decoder --dataset trashcan
    """
    from ..train.config import build_config, parse_key_values
    from ..train.loop import train

    cfg = build_config(
        config,
        strategy=strategy,
        dataset=dataset,
        model=model,
        output_dir=str(output_dir) if output_dir is not None else None,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        prompt=prompt,
        mixed_precision=mixed_precision,
        grad_accum=grad_accum,
        gradient_checkpointing=gradient_checkpointing,
        cache=cache,
        attention=attention,
        compile=compile,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        early_stopping=early_stopping,
        seed=seed,
        resume=resume or None,
        quiet=quiet or None,
        strategy_options=parse_key_values(strategy_option) or None,
    ).resolved()
    result = train(cfg)
    typer.echo(f"run folder: {result.output_dir}")
    if result.best_metric is not None:
        typer.echo(f"best validation mIoU {result.best_metric:.4f} at step {result.best_step}")


def register(app: typer.Typer) -> None:
    app.command()(fit)
