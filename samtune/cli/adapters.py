"""``samtune merge`` and ``samtune export``: turn an adapter into a model others can load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_ADAPTER = typer.Argument(help="Adapter folder (holding adapter.safetensors), file, or hub id.")
_BASE = typer.Option(
    "--base",
    help="Base model (preset, path or hub id). Default: the base recorded in the adapter.",
)


def _inputs(*paths) -> list[Path]:
    """The command's inputs that exist locally: an output may never replace them."""
    return [Path(p) for p in paths if p is not None and Path(p).exists()]


def merge(
    adapter: Annotated[str, _ADAPTER],
    output: Annotated[Path, typer.Argument(help="Output folder for the merged SamModel.")],
    base: Annotated[str | None, _BASE] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an OUTPUT that samtune wrote earlier.")
    ] = False,
) -> None:
    """Merge an adapter into its base and write a plain Hugging Face SamModel folder.

    The folder loads with `transformers.SamModel.from_pretrained`, no samtune needed.
    Bottleneck adapters (strategy `adapter`) cannot be merged (they are nonlinear).

    Examples:

        samtune merge runs/lora-demo ./sam-merged

        samtune merge runs/lora-demo ./sam-merged --base facebook/sam-vit-base
    """
    from ..adapters import load_tuned
    from ..export.formats import export_adapter

    export_adapter(
        load_tuned(adapter, base), output, "hf", overwrite=overwrite, protect=_inputs(adapter, base)
    )
    typer.echo(f"wrote {output}")


def export(
    adapter: Annotated[str, _ADAPTER],
    output: Annotated[
        Path, typer.Argument(help="Output folder, or a file for original / segment-anything.")
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="hf, original, segment-anything, peft, hub, onnx, x-anylabeling or cvat.",
        ),
    ] = "hub",
    base: Annotated[str | None, _BASE] = None,
    metrics: Annotated[
        Path | None,
        typer.Option("--metrics", help="hub: metrics JSON or Markdown for the model card."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an OUTPUT that samtune wrote earlier.")
    ] = False,
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize",
            help="onnx: quantize the image encoder, fp16 or int8 (dynamic); default fp32.",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="x-anylabeling: the tool conventions, x-anylabeling (default; also "
            "samexporter), samexporter (NCHW 1024 encoder) or osam.",
        ),
    ] = None,
) -> None:
    """Export a tuned model: merged HF folder, Meta .pth, peft directory, hub folder, or ONNX.

    Formats: `hf` (merged model folder), `original` (merged, in the family's original
    format: Meta .pth, SAM-HQ .pth or SAM 2 .pt), `segment-anything` (merged Meta .pth for
    segment_anything's Sam; SAM only), `peft` (adapter_config.json + adapter_model.safetensors for
    peft.PeftModel.from_pretrained; peft-based strategies such as lora), `hub` (adapter,
    adapter_config.json and a README.md model card, ready for `huggingface-cli upload`),
    `onnx` (encoder.onnx, decoder.onnx and samtune_onnx.json for onnxruntime; needs
    `pip install "samtune[onnx]"`), `x-anylabeling` (encoder/decoder ONNX with an annotation
    tool's conventions plus X-AnyLabeling's model YAML; `--profile samexporter` or `osam` for
    those tools), `cvat` (a CVAT serverless interactor function folder for nuclio).

    Examples:

        samtune export runs/lora-demo ./sam_tuned.pth --format segment-anything

        samtune export runs/lora-demo ./lora-peft --format peft

        samtune export runs/lora-demo ./hub-upload --format hub --metrics runs/lora-demo/eval.json

        samtune export runs/lora-demo ./sam-onnx --format onnx --quantize int8

        samtune export runs/lora-demo ./sam-xany --format x-anylabeling

        samtune export runs/lora-demo ./sam-cvat --format cvat
    """
    from ..adapters import load_tuned
    from ..export.formats import export_adapter

    export_adapter(
        load_tuned(adapter, base),
        output,
        format,
        metrics=metrics,
        overwrite=overwrite,
        protect=_inputs(adapter, base, metrics),
        quantize=quantize,
        profile=profile,
    )
    typer.echo(f"wrote {output}")
    if format == "onnx":
        from ..export.onnx import summary

        typer.echo(summary(output))
    elif format == "x-anylabeling":
        from ..export.tools import summary as tool_summary

        typer.echo(tool_summary(output))


def register(app: typer.Typer) -> None:
    app.command()(merge)
    app.command()(export)
