"""ONNX for annotation tools: a tuned SAM as X-AnyLabeling, samexporter and osam load it.

:func:`export_tool_onnx` writes (through :func:`samtune.io.atomic_dir`) a folder with

``<stem>.encoder.onnx`` and ``<stem>.decoder.onnx``
    The model's encoder and decoder with the input names, layouts and coordinate frames of one
    *profile* (:data:`PROFILES`), read from the tools' own code:

    ``x-anylabeling`` (default; also loads in samexporter)
        Encoder input ``input_image`` ``(H, W, 3)`` float32 RGB in 0-255, any size: X-AnyLabeling
        (``services/auto_labeling/sam_onnx.py``) feeds its 684 x 1024 canvas with the image
        drawn at the top left (black bars around other aspect ratios), samexporter
        (``sam_onnx.py``) the image resized so its long side is 1024. The graph finds the
        image's extent (trailing all-black rows and columns are canvas), resizes that part to
        the model's own image size S (long side, bilinear, antialiased), normalises with the
        model's mean and std and pads to S x S. Its output ``(1, C, g + 1, g)`` carries the
        extent in an extra row that the decoder reads: use the two files together.
    ``samexporter``
        Encoder input ``input_image`` ``(1, 3, 1024, 1024)``: samexporter's export without
        ``--use-preprocess`` (normalised with SAM's mean/std, padded to 1024); the graph resizes
        to S x S when S is not 1024.
    ``osam``
        Encoder input ``x`` ``(1, 3, S, S)`` (static), normalised and padded by osam
        (``_models/sam/_models.py``), which reads S from this shape.

    The decoder has the inputs and outputs of Meta's ONNX decoder (see
    :mod:`samtune.export.onnx`). ``point_coords`` are in the tool's frame: the encoder input's
    pixels (``x-anylabeling``: rescaled by S / the image's long side there), the 1024 frame
    (``samexporter``) or S (``osam``). ``x-anylabeling`` returns ``masks`` in the input's
    pixels (the image at the top left of ``orig_im_size``), as X-AnyLabeling reads them;
    samexporter reads ``low_res_masks``. ``mask_input`` may have any square size (the
    tools send 256 x 256 zeros) and is resized to the model's low-res size; ``has_mask_input``
    counts as 1 only when positive (osam sends -1 for "no mask").
``<stem>.yaml`` (``x-anylabeling`` only)
    X-AnyLabeling's model config (``type: segment_anything``), for *Load Custom Model*.
``samtune_tools.json``
    Profile, conventions, model fingerprints and the export's self-check.
``README.md``
    Which tools load the folder and how.

All three tools add a padding point ``(0, 0)`` with label -1 to every prompt, a box prompt
too; SAM's own predictor (and :func:`samtune.predict`, and samtune's training) adds it only
without a box. The decoder drops it from box prompts (:func:`drop_box_padding`), so a box
drawn in the tool gives the mask the tuned model was trained to give.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..errors import InputError, UnknownNameError
from ..io import atomic_dir, dump_json
from ..models.identity import preprocess_config
from .onnx import DecoderGraph, _large, _plain_copy, _single_file, _sizes, require_onnx

PROFILES = ("x-anylabeling", "samexporter", "osam")
TOOL_SIDE = 1024  # the long side X-AnyLabeling and samexporter resize to and scale points to
TOOL_MASK_SIDE = 256  # the mask_input side the tools send
SAM_MEAN = (123.675, 116.28, 103.53)  # what samexporter and osam normalise with, hard-coded
SAM_STD = (58.395, 57.12, 57.375)
OPSET = 18  # Resize's antialias attribute
CONFIG_FILE = "samtune_tools.json"
FORMAT = "samtune.tool-onnx"


@dataclass(frozen=True)
class Profile:
    """The conventions of one tool family.

    Attributes:
        name: one of :data:`PROFILES`.
        encoder_input: the encoder's input name.
        layout: ``"hwc"`` (raw RGB 0-255, any size) or ``"nchw"`` (normalised, padded square).
        input_side: the square side of an ``nchw`` input (``None``: the model's S).
        coord_side: the long side of the frame ``point_coords`` are given in (``None``: S).
    """

    name: str
    encoder_input: str
    layout: str
    input_side: int | None
    coord_side: int | None


_PROFILES = {
    "x-anylabeling": Profile("x-anylabeling", "input_image", "hwc", None, TOOL_SIDE),
    "samexporter": Profile("samexporter", "input_image", "nchw", TOOL_SIDE, TOOL_SIDE),
    "osam": Profile("osam", "x", "nchw", None, None),
}


def get_profile(name: str) -> Profile:
    """The :class:`Profile` called ``name``.

    Raises:
        UnknownNameError: not one of :data:`PROFILES`.
    """
    if name not in _PROFILES:
        raise UnknownNameError(
            f"unknown annotation-tool profile {name!r}; choose one of {', '.join(PROFILES)}"
        )
    return _PROFILES[name]


# --------------------------------------------------------------------------- graphs


def _resize_long_side(x: torch.Tensor, side: int) -> torch.Tensor:
    """(1, 3, h, w) -> (1, 3, h', w') with the long side ``side``, sizes computed in the graph
    as ``floor(hw * side / max(hw) + 0.5)`` (SAM's ``ResizeLongestSide``). Antialiasing is
    switched on after export (:func:`_antialias`): the TorchScript exporter has no symbol for it.
    """
    hw = torch._shape_as_tensor(x)[2:].to(torch.float32)
    new = torch.floor(hw * (side / torch.max(hw)) + 0.5).to(torch.int64)
    return F.interpolate(x, size=(new[0], new[1]), mode="bilinear", align_corners=False)


def _content_size(x: torch.Tensor) -> torch.Tensor:
    """(h, w) float of ``x`` (1, 3, H, W) without its trailing all-black rows and columns (at
    least 1 each): the image inside X-AnyLabeling's canvas, which draws it at the top left of a
    684 x 1024 black canvas. An image that is not letterboxed keeps its size (unless its own
    bottom rows or right columns are pure black: those are then treated as padding)."""
    lit = x.abs().amax(dim=(0, 1)) > 0  # (H, W)
    rows = torch.arange(1, x.shape[-2] + 1, dtype=torch.float32)
    cols = torch.arange(1, x.shape[-1] + 1, dtype=torch.float32)
    h = (lit.any(dim=1).to(torch.float32) * rows).amax()
    w = (lit.any(dim=0).to(torch.float32) * cols).amax()
    return torch.clamp(torch.stack([h, w]), min=1.0)


class ToolEncoderGraph(nn.Module):
    """The image encoder behind a tool's input convention (see :class:`Profile`).

    For the ``hwc`` layout the output is ``(1, C, g + 1, g)``: the embeddings, plus one row
    whose first two values are the image's extent (h, w) in the input, found by
    :func:`_content_size`; :class:`ToolDecoderGraph` reads it back. Only the image is resized
    to S (the canvas's black bars become SAM's padding), so a letterboxed image is seen as
    ``samtune.predict`` sees it. The tools pass the encoder's output to the decoder unchanged.
    """

    def __init__(self, sam: nn.Module, profile: Profile):
        super().__init__()
        self.vision_encoder = sam.vision_encoder
        self.layout = profile.layout
        self.side = int(sam.config.vision_config.image_size)
        pre = preprocess_config(sam)
        self.register_buffer("mean", torch.tensor(pre.mean).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        s = self.side
        if self.layout != "hwc":
            x = image  # a square normalised input, resized when it is not S x S
            if image.shape[-1] != s:
                x = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False)
            return self.vision_encoder(x)[0]
        x = image.permute(2, 0, 1)[None]
        extent = _content_size(x)
        size = extent.to(torch.int64)
        x = _resize_long_side(x[..., : size[0], : size[1]], s)
        x = (x - self.mean) / self.std
        x = F.pad(x, (0, s - x.shape[-1], 0, s - x.shape[-2]))
        emb = self.vision_encoder(x)[0]
        channels, grid = emb.shape[1], emb.shape[-1]
        row = F.pad(extent.reshape(1, 1, 1, 2), (0, grid - 2, 0, 0, 0, channels - 1))
        return torch.cat([emb, row.to(emb.dtype)], dim=2)


class ToolDecoderGraph(nn.Module):
    """:class:`~samtune.export.onnx.DecoderGraph` with the tools' coordinate frame, any
    ``mask_input`` size, ``has_mask_input`` read as ``> 0`` and the padding point of box
    prompts dropped (:func:`drop_box_padding`).

    For the ``hwc`` layout ``image_embeddings`` is the encoder's ``(1, C, g + 1, g)`` output:
    points are in the input's pixels, scaled by S / max(extent), and ``masks`` come back in
    the input's pixels (the image at the top left of ``orig_im_size``, the rest -1e4), as
    X-AnyLabeling reads them. ``low_res_masks`` cover the padded S x S square as usual
    (samexporter reads those).
    """

    def __init__(self, sam: nn.Module, profile: Profile):
        super().__init__()
        self.decoder = DecoderGraph(sam)
        side = self.decoder.image_size
        self.coord_scale = side / float(profile.coord_side or side)
        self.low_res = _sizes(sam)["low_res"]
        self.grid = _sizes(sam)["grid"]
        self.extent = profile.layout == "hwc"

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = self.low_res
        mask = F.interpolate(mask_input, size=(r, r), mode="bilinear", align_corners=False)
        has = (has_mask_input > 0).to(mask.dtype)
        if not self.extent:
            coords, labels = drop_box_padding(point_coords * self.coord_scale, point_labels)
            return self.decoder(image_embeddings, coords, labels, mask, has, orig_im_size)
        emb = image_embeddings[:, :, : self.grid]
        extent = image_embeddings[0, 0, self.grid, :2]
        scale = self.decoder.image_size / torch.max(extent)
        coords, labels = drop_box_padding(point_coords * scale, point_labels)
        sparse = self.decoder.embed_points(coords, labels)
        low_res, iou = self.decoder.decode(emb, sparse, self.decoder.embed_mask(mask, has))
        return self._to_input(low_res, extent, scale, orig_im_size), iou, low_res

    def _to_input(self, low_res, extent, scale, orig_im_size) -> torch.Tensor:
        """Low-res logits -> the input's pixels: upsample to S, crop the padding, resize to
        the image's extent, pad (or crop) to ``orig_im_size`` with -1e4."""
        s = self.decoder.image_size
        x = F.interpolate(low_res, size=(s, s), mode="bilinear", align_corners=False)
        resized = torch.floor(extent * scale + 0.5).to(torch.int64)
        x = x[..., : resized[0], : resized[1]]
        size = extent.to(torch.int64)
        x = F.interpolate(x, size=(size[0], size[1]), mode="bilinear", align_corners=False)
        orig = orig_im_size.to(torch.int64)
        x = x[..., : orig[0], : orig[1]]
        pad = torch.clamp(orig - size, min=0)
        return F.pad(x, (0, pad[1], 0, pad[0]), value=-1e4)


def drop_box_padding(
    coords: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the padding points (label -1) the tools append to prompts that have a box.

    SAM adds a padding point only to prompts without a box (Meta's ``SamPredictor``, Hugging
    Face's ``SamPromptEncoder``, so samtune's training and :func:`samtune.predict`); the tools
    add one to every prompt. A column is dropped where every prompt has a box and a -1 there:
    exact for the tools' single prompt, and never wrong for a batch (a column shared with a
    point-only prompt stays).
    """
    has_box = (labels >= 2).any(dim=1, keepdim=True)
    drop = ((labels == -1) & has_box).all(dim=0)
    keep = torch.nonzero(~drop).squeeze(1)
    return coords.index_select(1, keep), labels.index_select(1, keep)


DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
_DECODER_AXES = {
    "point_coords": {0: "num_prompts", 1: "num_points"},
    "point_labels": {0: "num_prompts", 1: "num_points"},
    "mask_input": {0: "num_mask_inputs", 2: "mask_height", 3: "mask_width"},
    "masks": {0: "num_prompts", 2: "height", 3: "width"},
    "iou_predictions": {0: "num_prompts"},
    "low_res_masks": {0: "num_prompts"},
}


def _encoder_example(sam: nn.Module, profile: Profile) -> tuple[torch.Tensor, dict]:
    """A tracing input for the encoder and its dynamic axes."""
    s = int(sam.config.vision_config.image_size)
    if profile.layout == "hwc":  # neither side equal to S or 1024: nothing gets baked in
        return torch.rand(TOOL_SIDE - 301, TOOL_SIDE - 17, 3) * 255, {
            profile.encoder_input: {0: "image_height", 1: "image_width"}
        }
    side = profile.input_side or s
    return torch.zeros(1, 3, side, side), {}


def _decoder_example(sam: nn.Module, profile: Profile) -> tuple[torch.Tensor, ...]:
    z = _sizes(sam)
    g, s = z["grid"], z["image_size"]
    emb = torch.randn(1, z["channels"], g, g)
    if profile.layout == "hwc":  # the extent row: an image of 600 x 1000 in the input
        row = torch.zeros(1, z["channels"], 1, g)
        row[0, 0, 0, :2] = torch.tensor([600.0, 1000.0])
        emb = torch.cat([emb, row], dim=2)
    return (
        emb,
        torch.rand(1, 3, 2) * s,
        torch.tensor([[2.0, 3.0, -1.0]]),
        torch.zeros(1, 1, TOOL_MASK_SIDE - 56, TOOL_MASK_SIDE - 56),
        torch.zeros(1),
        torch.tensor([684.0, 1024.0]),
    )


def _export(module: nn.Module, args: tuple, path: Path, inputs, outputs, axes) -> None:
    import inspect

    legacy = (
        {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            module, args, str(path), **legacy, opset_version=OPSET,
            input_names=list(inputs), output_names=list(outputs), dynamic_axes=axes,
        )  # fmt: skip


def _antialias(onnx, path: Path) -> bool:
    """Switch on antialiasing in the encoder's resize of its input image (as
    ``preprocess_image`` resizes, ``antialias=True``, which the TorchScript exporter cannot
    write); whether the graph has one. The vision encoder's own Resize nodes (relative position
    tables) stay as they are: only the Resize fed by the graph input is changed."""
    large = _large(path)  # judged on disk: a >2 GB ModelProto cannot be measured in memory
    model = onnx.load(str(path))
    resize = _input_resize(model.graph)
    if resize is None:
        return False
    resize.attribute.append(onnx.helper.make_attribute("antialias", 1))
    for p in path.parent.iterdir():
        p.unlink()
    onnx.save_model(
        model, str(path), save_as_external_data=large, location=path.name + ".data"
    )  # the location is used only with external data
    return True


def _input_resize(graph):
    """The Resize node whose data comes from the graph input through layout-only nodes."""
    producer = {out: node for node in graph.node for out in node.output}
    source = graph.input[0].name
    for node in graph.node:
        if node.op_type != "Resize":
            continue
        name = node.input[0]
        while name in producer and producer[name].op_type in _LAYOUT_OPS:
            name = producer[name].input[0]
        if name == source:
            return node
    return None


_LAYOUT_OPS = {"Transpose", "Unsqueeze", "Cast", "Identity", "Reshape", "Slice"}


def _over_2gb(model) -> bool:
    return model.ByteSize() > 1.8 * 2**30 if hasattr(model, "ByteSize") else False


def _write_graphs(onnx, sam: nn.Module, profile: Profile, scratch: Path, out: Path, stem: str):
    """Export the two graphs in ``scratch`` and move the single-file results into ``out``."""
    enc_dir, dec_dir = scratch / "enc", scratch / "dec"
    enc_dir.mkdir()
    dec_dir.mkdir()
    encoder = ToolEncoderGraph(sam, profile).eval()
    example, axes = _encoder_example(sam, profile)
    enc = enc_dir / f"{stem}.encoder.onnx"
    _export(encoder, (example,), enc, [profile.encoder_input], ["image_embeddings"], axes)
    _single_file(onnx, enc)
    if _antialias(onnx, enc):
        _single_file(onnx, enc)
    elif profile.layout == "hwc":  # it always resizes: not finding it is a bug of this module
        raise RuntimeError("the encoder's resize of its input image was not found")
    dec = dec_dir / f"{stem}.decoder.onnx"
    decoder = ToolDecoderGraph(sam, profile).eval()
    _export(
        decoder, _decoder_example(sam, profile), dec, DECODER_INPUTS, DECODER_OUTPUTS, _DECODER_AXES
    )
    _single_file(onnx, dec)
    for folder in (enc_dir, dec_dir):
        for p in folder.iterdir():
            shutil.move(str(p), out / p.name)


# --------------------------------------------------------------------------- export


def _check_model(sam: nn.Module, profile: Profile) -> None:
    pre = preprocess_config(sam)
    if pre.square:
        raise InputError(
            "annotation-tool ONNX holds SAM (SamModel) only, not a square-resize model"
        )
    if profile.layout == "nchw" and (
        not np.allclose(pre.mean, SAM_MEAN) or not np.allclose(pre.std, SAM_STD)
    ):
        raise InputError(
            f"profile {profile.name!r}: the tool normalises with SAM's mean {SAM_MEAN} and std "
            f"{SAM_STD}, this model uses {pre.mean} and {pre.std}; use profile 'x-anylabeling' "
            "(the graph normalises itself)"
        )


def model_stem(info: dict[str, Any]) -> str:
    """The files' common name: ``samtune-<strategy>-<first 8 of the adapter fingerprint>``
    (letters, digits, ``.``, ``_`` and ``-`` only, as X-AnyLabeling requires of a model name)."""
    strategy = info.get("strategy") or "base"
    tag = (info.get("adapter_fingerprint") or info["exported_fingerprint"])[:8]
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"samtune-{strategy}-{tag}")


def export_tool_onnx(
    model: nn.Module,
    output: str | os.PathLike,
    *,
    profile: str = "x-anylabeling",
    overwrite: bool = False,
    protect=(),
    check: bool = True,
) -> Path:
    """Write encoder, decoder, X-AnyLabeling config, README and record into ``output``.

    Args:
        model: a tuned ``SamModel`` (merged first where the strategy allows), or a plain one.
        output: the folder to create (replaced only with ``overwrite``, if samtune wrote it).
        profile: the tool conventions, one of :data:`PROFILES` (see the module docstring).
        protect: paths the output must not replace (the command's inputs).
        check: run the written files the way the profile's tool does on a synthetic scene and
            record the masks' IoU with :func:`samtune.predict` in ``samtune_tools.json``.

    Raises:
        UnknownNameError: an unknown profile.
        InputError: not a SAM, or an output that may not be written.
        MissingDependencyError: ``onnx`` or ``onnxruntime`` is missing.
    """
    from .tools_check import self_check
    from .tools_files import readme, record, xanylabeling_yaml

    prof = get_profile(profile)
    onnx, _ = require_onnx()
    sam, info = _plain_copy(model)
    _check_model(sam, prof)
    stem = model_stem(info)
    with atomic_dir(output, overwrite=overwrite, protect=protect) as tmp:
        scratch = Path(tempfile.mkdtemp(prefix=".tool-onnx-", dir=tmp))
        try:
            _write_graphs(onnx, sam, prof, scratch, tmp, stem)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if prof.name == "x-anylabeling":
            (tmp / f"{stem}.yaml").write_text(xanylabeling_yaml(sam, stem, info))
        (tmp / "README.md").write_text(readme(sam, prof, stem))
        data = record(sam, prof, stem, info, __version__)
        if check:
            data["check"] = self_check(sam, tmp, prof, stem)
        data["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / CONFIG_FILE).write_text(dump_json(data, indent=2) + "\n")
    return Path(output)


def summary(folder: str | os.PathLike) -> str:
    """One line about an export: its profile, files and the self-check's mask IoU."""
    from ..io import read_json

    data = read_json(Path(folder) / CONFIG_FILE, what="annotation-tool export record")
    files = ", ".join(f"{n} {v / 2**20:.1f} MiB" for n, v in data.get("files", {}).items())
    line = f"profile {data['profile']}: {files}"
    check = data.get("check")
    if check:
        line += (
            f"; run as the tool runs it vs samtune predict: box mask IoU "
            f"{check['box_mean_iou']:.4f}, point mask IoU {check['point_mean_iou']:.4f}"
        )
    return line


__all__ = [
    "PROFILES",
    "Profile",
    "ToolDecoderGraph",
    "ToolEncoderGraph",
    "export_tool_onnx",
    "get_profile",
    "model_stem",
    "summary",
]
