"""ONNX for annotation tools: a tuned SAM as X-AnyLabeling, samexporter and osam load it.

:func:`export_tool_onnx` writes (through :func:`samtune.io.atomic_dir`) a folder with

``<stem>.encoder.onnx`` and ``<stem>.decoder.onnx``
    The model's encoder and decoder with the input names, layouts and coordinate frames of one
    *profile* (:data:`PROFILES`), read from the tools' own code:

    ``x-anylabeling`` (default; also loads in samexporter)
        Encoder input ``input_image`` ``(H, W, 3)`` float32 RGB in 0-255, any size: X-AnyLabeling
        (``services/auto_labeling/sam_onnx.py``) feeds its 684 x 1024 letterboxed canvas,
        samexporter (``sam_onnx.py``) the image resized so its long side is 1024. The graph
        resizes to the model's own image size S (long side, bilinear, antialiased), normalises
        with the model's mean and std and pads to S x S.
    ``samexporter``
        Encoder input ``input_image`` ``(1, 3, 1024, 1024)``: samexporter's export without
        ``--use-preprocess`` (normalised with SAM's mean/std, padded to 1024); the graph resizes
        to S x S when S is not 1024.
    ``osam``
        Encoder input ``x`` ``(1, 3, S, S)`` (static), normalised and padded by osam
        (``_models/sam/_models.py``), which reads S from this shape.

    The decoder has the inputs and outputs of Meta's ONNX decoder (see
    :mod:`samtune.export.onnx`). ``point_coords`` are in the tool's frame: the image resized
    so its long side is 1024 (``x-anylabeling``, ``samexporter``: both hard-code 1024) or S
    (``osam``); the graph rescales them to S. ``mask_input`` may have any square size (the
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
from .onnx import DecoderGraph, _plain_copy, _single_file, _sizes, require_onnx

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


class ToolEncoderGraph(nn.Module):
    """The image encoder behind a tool's input convention (see :class:`Profile`)."""

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
        if self.layout == "hwc":
            x = _resize_long_side(image.permute(2, 0, 1)[None], s)
            x = (x - self.mean) / self.std
            x = F.pad(x, (0, s - x.shape[-1], 0, s - x.shape[-2]))
        elif image.shape[-1] != s:  # a square normalised input of another size
            x = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False)
        else:
            x = image
        return self.vision_encoder(x)[0]


class ToolDecoderGraph(nn.Module):
    """:class:`~samtune.export.onnx.DecoderGraph` with the tools' coordinate frame, any
    ``mask_input`` size, and ``has_mask_input`` read as ``> 0``."""

    def __init__(self, sam: nn.Module, profile: Profile):
        super().__init__()
        self.decoder = DecoderGraph(sam)
        side = self.decoder.image_size
        self.coord_scale = side / float(profile.coord_side or side)
        self.low_res = _sizes(sam)["low_res"]

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
        coords, labels = drop_box_padding(point_coords * self.coord_scale, point_labels)
        return self.decoder(image_embeddings, coords, labels, mask, has, orig_im_size)


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


def _decoder_example(sam: nn.Module) -> tuple[torch.Tensor, ...]:
    z = _sizes(sam)
    g, s = z["grid"], z["image_size"]
    return (
        torch.randn(1, z["channels"], g, g),
        torch.rand(1, 3, 2) * s,
        torch.tensor([[2.0, 3.0, -1.0]]),
        torch.zeros(1, 1, TOOL_MASK_SIDE - 56, TOOL_MASK_SIDE - 56),
        torch.zeros(1),
        torch.tensor([0.75 * s + 3, s + 5.0]),
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
    model = onnx.load(str(path))
    resize = _input_resize(model.graph)
    if resize is None:
        return False
    resize.attribute.append(onnx.helper.make_attribute("antialias", 1))
    for p in path.parent.iterdir():
        p.unlink()
    onnx.save_model(model, str(path), save_as_external_data=_over_2gb(model))
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


_LAYOUT_OPS = {"Transpose", "Unsqueeze", "Cast", "Identity", "Reshape"}


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
    dec = dec_dir / f"{stem}.decoder.onnx"
    decoder = ToolDecoderGraph(sam, profile).eval()
    _export(decoder, _decoder_example(sam), dec, DECODER_INPUTS, DECODER_OUTPUTS, _DECODER_AXES)
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
