"""``samtune serve``: the tuned model inside an annotation tool (a Label Studio ML backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import AdapterOption, ModelOption

serve_app = typer.Typer(
    help="Serve a model to an annotation tool (Label Studio ML backend).", no_args_is_help=True
)


@serve_app.command("label-studio")
def label_studio(
    model: ModelOption = "demo",
    adapter: AdapterOption = None,
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder of the project's images (matched by file name)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")
    ] = 9090,
    multimask: Annotated[
        bool, typer.Option("--multimask", help="One click: 3 candidates, keep the IoU head's best.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = "cpu",
) -> None:
    """A Label Studio ML backend: keypoint and rectangle prompts in, brush masks out.

    In Label Studio: Settings, Model, Connect Model, URL http://HOST:PORT, with "Interactive
    preannotations" on. The labelling config needs BrushLabels and KeyPointLabels and/or
    RectangleLabels with smart="true" (docs/annotation-tools.md). Stop it with Ctrl+C.

    Examples:

        samtune serve label-studio --model demo --images ~/ls-media

        samtune serve label-studio -m facebook/sam-vit-base --adapter runs/lora/adapter --images imgs/
    """
    from ..errors import MissingFileError
    from ..segment.prompted import load_for_inference
    from ..serve import LabelStudioBackend, make_server

    if images is not None and not images.is_dir():
        raise MissingFileError(f"--images {str(images)!r} is not a folder")
    sam = load_for_inference(model, adapter, device)
    version = f"samtune-{Path(adapter).name if adapter else model}"
    server = make_server(LabelStudioBackend(sam, images, model_version=version,
                                            multimask=multimask), host, port)  # fmt: skip
    host_shown, port_shown = server.server_address[:2]
    typer.echo(f"Label Studio ML backend ({version}) at http://{host_shown}:{port_shown}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
