"""The text files of an annotation-tool export: X-AnyLabeling's model config, the README and
the ``samtune_tools.json`` record (see :mod:`samtune.export.tools`)."""

from __future__ import annotations

from typing import Any

import yaml

from ..models.identity import preprocess_config
from .tools import FORMAT, OPSET, TOOL_SIDE, Profile

XANYLABELING_CANVAS = (684, 1024)  # (H, W): hard-coded in X-AnyLabeling's sam_onnx.py


def xanylabeling_yaml(sam, stem: str, info: dict[str, Any]) -> str:
    """X-AnyLabeling's config for a ``segment_anything`` model (``Load Custom Model``).

    Model paths are file names: X-AnyLabeling looks for them in the current folder first, then
    beside the config; the ``samtune-...`` names make a mix-up with other files unlikely.
    ``input_size``, ``max_width`` and ``max_height`` are required keys that describe what the
    tool feeds the encoder (its 1024-wide canvas); the graph resizes to the model's own size.
    """
    strategy = info.get("strategy") or "base model"
    config = {
        "type": "segment_anything",
        "name": stem,
        "provider": "samtune",
        "display_name": f"Segment Anything (samtune {strategy}, {stem.rsplit('-', 1)[-1]})",
        "encoder_model_path": f"{stem}.encoder.onnx",
        "decoder_model_path": f"{stem}.decoder.onnx",
        "input_size": TOOL_SIDE,
        "max_width": XANYLABELING_CANVAS[1],
        "max_height": XANYLABELING_CANVAS[0] - 2,  # as X-AnyLabeling's own SAM configs
    }
    side = int(sam.config.vision_config.image_size)
    head = (
        f"# X-AnyLabeling model config written by samtune (model image size {side} px;\n"
        "# the encoder resizes the tool's 1024-wide canvas to it). Load it with\n"
        "# Auto Labeling > ...Load Custom Model and pick this file.\n"
    )
    return head + yaml.safe_dump(config, sort_keys=False)


def record(sam, profile: Profile, stem: str, info: dict, version: str) -> dict[str, Any]:
    """``samtune_tools.json`` without the check and file sizes."""
    pre = preprocess_config(sam)
    side = int(sam.config.vision_config.image_size)
    enc_shape: list = (
        ["image_height", "image_width", 3]
        if profile.layout == "hwc"
        else [1, 3, profile.input_side or side, profile.input_side or side]
    )
    return {
        "format": FORMAT,
        "samtune_version": version,
        "profile": profile.name,
        "opset": OPSET,
        "encoder": {
            "file": f"{stem}.encoder.onnx",
            "input": profile.encoder_input,
            "shape": enc_shape,
            "layout": "RGB 0-255, resized and normalised in the graph"
            if profile.layout == "hwc"
            else "normalised with SAM's mean/std, zero-padded at the bottom and right",
            "output": "image_embeddings (1, C, g + 1, g): the last row starts with the "
            "image's (h, w) in the input (trailing black rows/columns are canvas)"
            if profile.layout == "hwc"
            else "image_embeddings (1, C, g, g)",
        },
        "decoder": {
            "file": f"{stem}.decoder.onnx",
            "coordinate_frame": "the encoder input's pixels"
            if profile.layout == "hwc"
            else f"image resized so its long side is {profile.coord_side or side}",
            "padding_point": "the tools add (0, 0) with label -1 to every prompt; the graph "
            "drops it from prompts with a box, as SAM's predictor never adds it there",
        },
        "model_image_size": side,
        "mean": list(pre.mean),
        "std": list(pre.std),
        "model": info,
    }


_LOADS = {
    "x-anylabeling": "X-AnyLabeling (`type: segment_anything`) and samexporter",
    "samexporter": "samexporter (its NCHW 1024 encoder convention) and tools that load "
    "samexporter's default export",
    "osam": "osam, the library labelme runs SAM with (register the model in the process "
    "that runs osam, as below)",
}


def readme(sam, profile: Profile, stem: str) -> str:
    """README.md of the folder: what it holds, which tools load it and how."""
    side = int(sam.config.vision_config.image_size)
    enc, dec = f"{stem}.encoder.onnx", f"{stem}.decoder.onnx"
    text = [
        f"# {stem}: a samtune-tuned SAM for annotation tools ({profile.name} profile)\n",
        f"Loads in: {_LOADS[profile.name]}. Model image size: {side} px.\n",
        f"- `{enc}`: image encoder, input `{profile.encoder_input}`"
        + (
            " (its output carries the image's extent for the decoder: use the two together)."
            if profile.layout == "hwc"
            else "."
        ),
        f"- `{dec}`: prompt encoder + mask decoder (Meta's ONNX decoder inputs and outputs).",
        "- `samtune_tools.json`: conventions, fingerprints and the self-check (mask IoU of "
        "these files, run as the tool runs them, against `samtune.predict`).\n",
        "Every tool adds a padding point (0, 0) with label -1 to each prompt, box prompts "
        "too; SAM's own predictor does not with a box, so the decoder drops it from box "
        "prompts: a box gives the mask `samtune predict` gives.\n",
    ]
    text += _HOWTO[profile.name](stem, enc, dec, side)
    return "\n".join(text) + "\n"


def _howto_xanylabeling(stem: str, enc: str, dec: str, side: int) -> list[str]:
    return [
        "## X-AnyLabeling",
        "",
        f"Auto Labeling (the AI button) > model list > `...Load Custom Model` > pick `{stem}.yaml`.",
        "Keep the three files together; X-AnyLabeling looks for the ONNX files in its current "
        "folder first, then beside the YAML. Then click points (+/-) or draw a rectangle.",
        "",
        "## samexporter",
        "",
        "```bash",
        f"python -m samexporter.inference --encoder_model {enc} --decoder_model {dec} \\",
        "    --image image.jpg --prompt prompt.json --output out.png --sam_variant sam",
        "```",
    ]


def _howto_samexporter(stem: str, enc: str, dec: str, side: int) -> list[str]:
    return _howto_xanylabeling(stem, enc, dec, side)[7:]


def _howto_osam(stem: str, enc: str, dec: str, side: int) -> list[str]:
    return [
        "## osam / labelme",
        "",
        "osam finds models by name in `osam.apis.registered_model_types`, each a class whose",
        "blobs osam keeps in `~/.cache/osam/models/blobs/<sha256>`. Register this one:",
        "",
        "```python",
        "import hashlib, pathlib, shutil",
        "import osam",
        "from osam._models.sam._models import Sam",
        "",
        "here = pathlib.Path('.')  # this folder",
        "def blob(name):",
        "    digest = 'sha256:' + hashlib.sha256((here / name).read_bytes()).hexdigest()",
        "    b = osam.types.Blob(url=(here / name).resolve().as_uri(), hash=digest)",
        "    pathlib.Path(b.path).parent.mkdir(parents=True, exist_ok=True)",
        "    shutil.copy(here / name, b.path)  # in the cache, so osam never downloads it",
        "    return b",
        "",
        "class Tuned(Sam):",
        f"    name = '{stem}:latest'",
        f"    _blobs = {{'encoder': blob('{enc}'), 'decoder': blob('{dec}')}}",
        "",
        "osam.apis.registered_model_types.append(Tuned)",
        f"# osam.apis.generate(osam.types.GenerateRequest(model='{stem}', image=..., prompt=...))",
        "```",
        "",
        f"The encoder input is `x` of shape (1, 3, {side}, {side}): osam reads the model's "
        "image size from it and scales points to it.",
    ]


_HOWTO = {
    "x-anylabeling": _howto_xanylabeling,
    "samexporter": _howto_samexporter,
    "osam": _howto_osam,
}
