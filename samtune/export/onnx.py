"""Export a tuned SAM to ONNX and run it with onnxruntime.

:func:`export_onnx` writes a folder of three files (through :func:`samtune.io.atomic_dir`):

``encoder.onnx``
    ``pixel_values`` ``(batch, 3, S, S)`` float32 -> ``image_embeddings`` ``(batch, C, h, w)``.
    The image encoder; run it once per image.
``decoder.onnx``
    Prompt encoder + mask decoder + mask upscaling, with the inputs and outputs of Meta's
    ``segment_anything`` ONNX decoder (``segment_anything/utils/onnx.py``): inputs
    ``image_embeddings`` ``(1, C, h, w)``, ``point_coords`` ``(prompts, points, 2)``,
    ``point_labels`` ``(prompts, points)``, ``mask_input`` ``(1 | prompts, 1, 4h, 4w)``,
    ``has_mask_input`` ``(1,)``, ``orig_im_size`` ``(2,)``; outputs ``masks``
    ``(prompts, 4, H, W)`` (logits at the original size), ``iou_predictions`` ``(prompts, 4)``
    and ``low_res_masks`` ``(prompts, 4, 4h, 4w)``.
``samtune_onnx.json``
    Preprocessing, input/output names and shapes, the label codes, the opset, the model's
    fingerprints and the self-check the export ran.

The graphs are this module's own wrappers over the Hugging Face ``SamModel``'s modules; the
weights are the merged model's (:func:`samtune.adapters.merge_adapter`), or, for strategies
whose layers cannot be merged (bottleneck ``adapter``), the tuned model with its extra layers.

:func:`load_onnx` opens such a folder (an :class:`OnnxSam`: preprocessing, encoder and decoder
sessions) and :func:`evaluate_onnx` scores it with samtune's box protocol.

Needs the optional extra ``samtune[onnx]`` (``onnx``, ``onnxruntime``).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..data.synthetic import generate_scene
from ..data.transforms import preprocess_image
from ..errors import InputError, MissingDependencyError, MissingFileError, UnknownNameError
from ..evaluation import metrics as M
from ..io import atomic_dir, dump_json, read_json
from ..models.identity import (
    PreprocessConfig,
    base_fingerprint,
    fingerprint,
    model_source,
    preprocess_config,
    weights_fingerprint,
)
from ..strategies.base import applied_strategy, merged_copy

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
CONFIG_FILE = "samtune_onnx.json"
FORMAT = "samtune.onnx"
FORMAT_VERSION = 1
OPSET = 17
QUANTIZE_MODES = ("fp16", "int8")
EXTRA_HINT = 'pip install "samtune[onnx]"'

# point_labels codes (Meta's, plus Hugging Face's padding code -10)
LABELS = {
    "-10": "padding, ignored (Hugging Face convention)",
    "-1": "not a point: the padding point Meta adds to point-only prompts",
    "0": "negative point (background)",
    "1": "positive point (object)",
    "2": "box top-left corner",
    "3": "box bottom-right corner",
}


# --------------------------------------------------------------------------- dependencies


def require_onnx() -> tuple[Any, Any]:
    """Import ``onnx`` and ``onnxruntime``, or say which extra to install.

    Raises:
        MissingDependencyError: either is missing (the message names ``samtune[onnx]``).
    """
    missing = []
    modules = []
    for name in ("onnx", "onnxruntime"):
        try:
            modules.append(__import__(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingDependencyError(
            f"ONNX export and inference need {' and '.join(missing)}, which are not installed; "
            f"install the optional extra: {EXTRA_HINT}"
        )
    return modules[0], modules[1]


# --------------------------------------------------------------------------- graphs


class EncoderGraph(nn.Module):
    """``pixel_values`` -> ``image_embeddings``: the model's image encoder, as
    ``SamModel.get_image_embeddings`` computes it."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.vision_encoder = sam.vision_encoder

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixel_values)[0]


class DecoderGraph(nn.Module):
    """Prompt encoder + mask decoder + upscaling, with Meta's ONNX decoder interface.

    Every prompt (row of ``point_coords``) is decoded against the same image; all mask tokens
    are returned (index 0: the single-mask output, 1..3: the multimask candidates), as Meta's
    export does by default. Coordinates are in model pixels: (x, y) in the image resized so its
    longest side is ``S``, before padding.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.image_size = int(sam.config.prompt_encoder_config.image_size)
        with torch.no_grad():
            image_pe = sam.get_image_wide_positional_embeddings().detach().clone()
        self.register_buffer("image_pe", image_pe, persistent=False)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(P, N, 2) model-pixel coordinates and (P, N) labels -> (P, N, C) sparse embeddings."""
        pe = self.prompt_encoder
        emb = pe.shared_embedding((coords + 0.5) / self.image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, pe.not_a_point_embed.weight, emb)
        emb = torch.where(lab == -10, torch.zeros_like(emb), emb)
        for code, table in enumerate(pe.point_embed):
            emb = emb + table.weight * (lab == code).to(emb.dtype)
        return emb

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask_input * pe.mask_embed(mask_input) + (1 - has_mask_input) * no_mask

    def decode(
        self, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens' low-res logits (P, T, 4h, 4w) and IoU predictions (P, T).

        The steps of ``SamMaskDecoder.forward`` without its final choice of tokens; one prompt
        per batch row, so a mask input may differ per prompt.
        """
        md = self.mask_decoder
        prompts = sparse.shape[0]
        tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = tokens[None, None].expand(prompts, 1, -1, -1)
        tokens = torch.cat([tokens, sparse[:, None]], dim=2).to(md.iou_token.weight.dtype)
        src = (image_embeddings + dense).expand(prompts, -1, -1, -1)
        pos = self.image_pe.expand(prompts, -1, -1, -1)
        queries, keys = md.transformer(
            point_embeddings=tokens,
            image_embeddings=src,
            image_positional_embeddings=pos,
            attention_similarity=None,
        )[:2]
        iou_out = queries[:, 0, 0, :]
        mask_out = queries[:, 0, 1 : 1 + md.num_mask_tokens, :]
        channels, height, width = src.shape[1:]
        src = keys[:, 0].transpose(1, 2).reshape(-1, channels, height, width)
        up = md.activation(md.upscale_layer_norm(md.upscale_conv1(src)))
        up = md.activation(md.upscale_conv2(up))
        hyper = torch.stack(
            [mlp(mask_out[:, i, :]) for i, mlp in enumerate(md.output_hypernetworks_mlps)], dim=1
        )
        masks = (hyper @ up.flatten(2)).reshape(-1, md.num_mask_tokens, *up.shape[-2:])
        return masks, md.iou_prediction_head(iou_out)

    def upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> original pixels: upsample to S, crop the padding, resize to (H, W)
        (bilinear), as ``Geometry.logits_to_original`` and ``SamImageProcessor`` do."""
        s = self.image_size
        x = F.interpolate(masks, size=(s, s), mode="bilinear", align_corners=False)
        size = orig_im_size.to(torch.float64)
        resized = torch.floor(size * (s / torch.max(size)) + 0.5).to(torch.int64)
        x = x[..., : resized[0], : resized[1]]
        orig = orig_im_size.to(torch.int64)
        return F.interpolate(x, size=(orig[0], orig[1]), mode="bilinear", align_corners=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        low_res, iou = self.decode(image_embeddings, sparse, dense)
        return self.upscale(low_res, orig_im_size), iou, low_res


ENCODER_INPUTS = ("pixel_values",)
ENCODER_OUTPUTS = ("image_embeddings",)
DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


def _sizes(sam: nn.Module) -> dict[str, int]:
    v = sam.config.vision_config
    grid = int(sam.config.prompt_encoder_config.image_embedding_size)
    return {
        "image_size": int(v.image_size),
        "channels": int(v.output_channels),
        "grid": grid,
        "low_res": 4 * grid,
        "mask_tokens": int(sam.mask_decoder.num_mask_tokens),
    }


def _io_spec(sam: nn.Module) -> dict[str, Any]:
    z = _sizes(sam)
    s, c, g, r, t = z["image_size"], z["channels"], z["grid"], z["low_res"], z["mask_tokens"]
    f32 = "float32"
    return {
        "encoder": {
            "file": ENCODER_FILE,
            "inputs": {"pixel_values": {"shape": ["batch", 3, s, s], "dtype": f32}},
            "outputs": {"image_embeddings": {"shape": ["batch", c, g, g], "dtype": f32}},
        },
        "decoder": {
            "file": DECODER_FILE,
            "inputs": {
                "image_embeddings": {"shape": [1, c, g, g], "dtype": f32},
                "point_coords": {
                    "shape": ["num_prompts", "num_points", 2],
                    "dtype": f32,
                    "units": "model pixels (x, y): original pixels x resized/original, "
                    "before padding",
                },
                "point_labels": {"shape": ["num_prompts", "num_points"], "dtype": f32},
                "mask_input": {
                    "shape": ["1 or num_prompts", 1, r, r],
                    "dtype": f32,
                    "units": "low-res mask logits (a previous low_res_masks), zeros if none",
                },
                "has_mask_input": {"shape": [1], "dtype": f32, "units": "1 or 0"},
                "orig_im_size": {"shape": [2], "dtype": f32, "units": "(H, W) of the image"},
            },
            "outputs": {
                "masks": {
                    "shape": ["num_prompts", t, "H", "W"],
                    "dtype": f32,
                    "units": "mask logits at the original size; mask = logits > 0",
                },
                "iou_predictions": {"shape": ["num_prompts", t], "dtype": f32},
                "low_res_masks": {"shape": ["num_prompts", t, r, r], "dtype": f32},
            },
            "point_labels": LABELS,
            "mask_tokens": "index 0: single-mask output (boxes, several points, corrective "
            "clicks); 1..: multimask candidates for one ambiguous point, pick the highest "
            "iou_predictions",
        },
    }


def _export_graph(module, args, path: Path, inputs, outputs, dynamic_axes) -> None:
    import inspect

    # the TorchScript exporter: the default before torch 2.9, dynamo=False since
    legacy = (
        {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            module,
            args,
            str(path),
            **legacy,
            opset_version=OPSET,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
        )


def _single_file(onnx, path: Path) -> None:
    """Keep ``path`` as one file, or (over protobuf's 2 GB) the model plus one
    ``<name>.data`` file: the exporter writes one file per large tensor beside the model."""
    folder = path.parent
    extra = [p for p in folder.iterdir() if p != path]
    if not extra:
        return
    model = onnx.load(str(path))  # reads the external tensors
    for p in extra:
        p.unlink() if p.is_file() else shutil.rmtree(p)
    path.unlink()
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
    )


def _quantize(onnx, src: Path, dst: Path, mode: str) -> None:
    if mode == "int8":
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMul/Gemm weights to uint8, per output channel, activations quantized at run time
        # (Meta's quantized ONNX example uses uint8 per tensor; per channel halves the error
        # here). Convolutions stay float: ConvInteger is slow or missing on some providers.
        quant_log = logging.getLogger()  # the quantizer logs a pre-processing hint as a warning
        level = quant_log.level
        quant_log.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                str(src),
                str(dst),
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=True,
                reduce_range=False,
                weight_type=QuantType.QUInt8,
                use_external_data_format=_large(src),
            )
        finally:
            quant_log.setLevel(level)
    else:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save_model(model, str(dst), save_as_external_data=_large(src))


def _large(path: Path) -> bool:
    """Whether the model at ``path`` (with its external data) is near protobuf's 2 GB limit."""
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file()) > 1.8 * 2**30


def _check_inputs(sam: nn.Module) -> dict[str, Any]:
    """A synthetic scene (the demo dataset's generator) with one box per object, and one
    centre point for the first object: deterministic inputs for the export's self-check."""
    cfg = preprocess_config(sam)
    rng = np.random.default_rng(0)
    image, objects = generate_scene(rng, 256, max_objects=4)
    image = image[:, :192]  # not square: exercises the crop of the padding
    masks = [m[:, :192] for _, m in objects]
    masks = [m for m in masks if m.any()] or [np.ones(image.shape[:2], bool)]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    pixel_values, geometry = preprocess_image(image, cfg)
    corners = geometry.coords_to_model(np.asarray(boxes, np.float32)).reshape(-1, 2, 2)
    return {
        "pixel_values": pixel_values[None].numpy(),
        "geometry": geometry,
        "box_coords": corners,
        "box_labels": np.tile(np.array([[2, 3]], np.float32), (len(boxes), 1)),
    }


def _decoder_feed(embeddings, coords, labels, geometry, low_res: int) -> dict[str, np.ndarray]:
    return {
        "image_embeddings": np.asarray(embeddings, np.float32),
        "point_coords": np.asarray(coords, np.float32),
        "point_labels": np.asarray(labels, np.float32),
        "mask_input": np.zeros((1, 1, low_res, low_res), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.asarray(geometry.original_size, np.float32),
    }


def _self_check(sam: nn.Module, folder: Path, quantize: str | None, ort) -> dict[str, Any]:
    """Run the written files on a synthetic scene and compare them with PyTorch."""
    x = _check_inputs(sam)
    low_res = _sizes(sam)["low_res"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    enc = ort.InferenceSession(str(folder / ENCODER_FILE), options, ["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / DECODER_FILE), options, ["CPUExecutionProvider"])
    with torch.no_grad():
        ref_emb = sam.get_image_embeddings(torch.from_numpy(x["pixel_values"]))
        model_boxes = torch.from_numpy(x["box_coords"].reshape(1, -1, 4))
        out = sam(image_embeddings=ref_emb, input_boxes=model_boxes, multimask_output=False)
    ref_masks = x["geometry"].logits_to_original(out.pred_masks[0, :, 0]).numpy()
    emb = enc.run(None, {"pixel_values": x["pixel_values"]})[0]
    feed = _decoder_feed(emb, x["box_coords"], x["box_labels"], x["geometry"], low_res)
    masks, iou, _ = dec.run(None, feed)
    # the decoder alone, on PyTorch's embeddings: isolates the decoder's own error
    feed_ref = {**feed, "image_embeddings": ref_emb.numpy()}
    _, iou_ref_emb, low_ref_emb = dec.run(None, feed_ref)
    ref_emb = ref_emb.numpy()
    pred, want = masks[:, 0] > 0, ref_masks > 0
    inter = (pred & want).sum((-2, -1))
    union = (pred | want).sum((-2, -1))
    agreement = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    check = {
        "input": f"synthetic scene {x['geometry'].original_size[0]}x"
        f"{x['geometry'].original_size[1]} px, {len(pred)} box prompts",
        "encoder_max_abs_diff": float(np.abs(emb - ref_emb).max()),
        "encoder_rel_error": float(np.linalg.norm(emb - ref_emb) / np.linalg.norm(ref_emb)),
        "decoder_max_abs_diff": float(
            np.abs(low_ref_emb[:, 0] - out.pred_masks[0, :, 0].numpy()).max()
        ),
        "iou_max_abs_diff": float(
            np.abs(iou_ref_emb[:, 0] - out.iou_scores[0, :, 0].numpy()).max()
        ),
        "mask_agreement_iou": float(agreement.mean()),
    }
    if quantize:
        check["note"] = (
            f"encoder quantized ({quantize}): mask_agreement_iou is the mean IoU of the "
            "quantized pipeline's box masks with the fp32 PyTorch model's"
        )
    return check


def export_onnx(
    model: nn.Module,
    output: str | os.PathLike,
    *,
    quantize: str | None = None,
    overwrite: bool = False,
    protect: Iterable[str | os.PathLike] = (),
    check: bool = True,
) -> Path:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``samtune_onnx.json`` into ``output``.

    Args:
        model: a tuned ``SamModel`` (strategy applied, e.g. from :func:`samtune.load_adapter`)
            or a plain one. Strategies that merge (``full``, ``decoder``, ``lora``, ``peft``...)
            are merged first; others (``adapter``) are exported with their extra layers.
            The model itself is not changed.
        output: the folder to create (replaced only with ``overwrite``, as for every export).
        quantize: ``None`` (fp32), ``"fp16"`` (the encoder's weights and arithmetic in
            float16, inputs and outputs float32) or ``"int8"`` (dynamic uint8 quantization of
            the encoder's matrix multiplications). The decoder stays fp32.
        overwrite: replace a folder samtune wrote earlier (:func:`samtune.io.atomic_dir`).
        protect: paths the output must not replace (the command's inputs).
        check: run the written files with onnxruntime on a synthetic image and record the
            differences from PyTorch (and, quantized, the masks' agreement) in the JSON.

    Returns:
        ``output``.

    Raises:
        MissingDependencyError: ``onnx`` or ``onnxruntime`` is not installed.
        UnknownNameError: an unknown ``quantize`` mode.
        InputError: the output may not be written or replaced.
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise UnknownNameError(
            f"unknown quantization {quantize!r}; choose {' or '.join(QUANTIZE_MODES)} "
            "(or none for fp32)"
        )
    onnx, ort = require_onnx()
    output = Path(output)
    t0 = time.perf_counter()
    sam, info = _plain_copy(model)
    with atomic_dir(output, overwrite=overwrite, protect=protect) as tmp:
        scratch = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=tmp))
        try:
            _write_graphs(onnx, sam, scratch, tmp, quantize)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        config = _export_config(sam, info, quantize, time.perf_counter() - t0)
        if check:
            t1 = time.perf_counter()
            config["check"] = _self_check(sam, tmp, quantize, ort)
            config["check_seconds"] = round(time.perf_counter() - t1, 2)
        config["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / CONFIG_FILE).write_text(dump_json(config, indent=2) + "\n")
    return output


def _plain_copy(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A CPU fp32 eval copy of ``model`` to trace (merged where the strategy allows), and
    the record of where it came from."""
    strategy = applied_strategy(model)
    info: dict[str, Any] = {
        "base_model": model_source(model),
        "base_fingerprint": base_fingerprint(model),
        "strategy": strategy.name if strategy else None,
        "strategy_config": strategy.config.to_dict() if strategy else None,
        "adapter_fingerprint": weights_fingerprint(strategy.trainable_state_dict(model))
        if strategy
        else None,
        "merged": False,
    }
    sam = None
    if strategy is not None:
        try:
            sam = merged_copy(model, strategy)
            info["merged"] = True
        except InputError:  # layers that do not fold (bottleneck adapters): keep them
            pass
    if sam is None:
        sam = copy.deepcopy(model)
    sam = sam.to("cpu", torch.float32).eval()
    for p in sam.parameters():
        p.requires_grad_(False)
    info["exported_fingerprint"] = fingerprint(sam)
    return sam, info


def _example_inputs(sam: nn.Module) -> dict[str, torch.Tensor]:
    """Tracing inputs: shapes that differ on every dynamic axis, so none is baked in."""
    sizes = _sizes(sam)
    s, g, r = sizes["image_size"], sizes["grid"], sizes["low_res"]
    return {
        "pixel_values": torch.zeros(2, 3, s, s),
        "image_embeddings": torch.randn(1, sizes["channels"], g, g),
        "point_coords": torch.rand(2, 3, 2) * s,
        "point_labels": torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, 1.0]]),
        "mask_input": torch.zeros(2, 1, r, r),
        "has_mask_input": torch.zeros(1),
        "orig_im_size": torch.tensor([0.75 * s + 3, s + 5.0]),
    }


_ENCODER_AXES = {"pixel_values": {0: "batch"}, "image_embeddings": {0: "batch"}}
_DECODER_AXES = {
    "point_coords": {0: "num_prompts", 1: "num_points"},
    "point_labels": {0: "num_prompts", 1: "num_points"},
    "mask_input": {0: "num_mask_inputs"},
    "masks": {0: "num_prompts", 2: "height", 3: "width"},
    "iou_predictions": {0: "num_prompts"},
    "low_res_masks": {0: "num_prompts"},
}


def _write_graphs(onnx, sam: nn.Module, scratch: Path, out: Path, quantize: str | None) -> None:
    """Export (and quantize) the encoder and decoder graphs in ``scratch``; move the final
    single-file graphs into ``out``."""
    example = _example_inputs(sam)
    enc_dir = scratch / "enc"
    enc_dir.mkdir()
    encoder = EncoderGraph(sam).eval()
    _export_graph(
        encoder, (example["pixel_values"],), enc_dir / ENCODER_FILE,
        ENCODER_INPUTS, ENCODER_OUTPUTS, _ENCODER_AXES,
    )  # fmt: skip
    _single_file(onnx, enc_dir / ENCODER_FILE)
    if quantize:
        (scratch / "q").mkdir()
        _quantize(onnx, enc_dir / ENCODER_FILE, scratch / "q" / ENCODER_FILE, quantize)
        enc_dir = scratch / "q"
        _single_file(onnx, enc_dir / ENCODER_FILE)
    for p in enc_dir.iterdir():
        shutil.move(str(p), out / p.name)
    (scratch / "dec").mkdir()
    decoder = DecoderGraph(sam).eval()
    _export_graph(
        decoder, tuple(example[k] for k in DECODER_INPUTS), scratch / "dec" / DECODER_FILE,
        DECODER_INPUTS, DECODER_OUTPUTS, _DECODER_AXES,
    )  # fmt: skip
    _single_file(onnx, scratch / "dec" / DECODER_FILE)
    shutil.move(str(scratch / "dec" / DECODER_FILE), out / DECODER_FILE)


def _export_config(sam: nn.Module, info: dict, quantize: str | None, seconds: float) -> dict:
    """The ``samtune_onnx.json`` record (without the self-check and file sizes)."""
    pre = preprocess_config(sam)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "samtune_version": __version__,
        "exporter": f"torch.onnx TorchScript exporter (dynamo=False), torch {torch.__version__}",
        "opset": OPSET,
        "quantize": quantize,
        "preprocess": {
            "image_size": pre.image_size,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "units": "mean and std in 0-255 pixel units, RGB order",
            "steps": [
                "resize so the longest side is image_size (bilinear, antialiased), keeping "
                "the aspect ratio: (h, w) = floor((H, W) * image_size / max(H, W) + 0.5)",
                "normalise: (pixel - mean) / std per channel",
                "pad with zeros at the bottom and right to image_size x image_size",
                "layout NCHW float32",
            ],
        },
        **_io_spec(sam),
        "model": info,
        "export_seconds": round(seconds, 2),
    }


def summary(folder: str | os.PathLike) -> str:
    """One line about an export: files and sizes, and the self-check's agreement."""
    config = read_config(folder)
    files = ", ".join(f"{n} {v / 2**20:.1f} MiB" for n, v in config.get("files", {}).items())
    line = f"{files}; exported in {config.get('export_seconds', 0):.1f} s"
    if "check_seconds" in config:
        line += f" (+{config['check_seconds']:.1f} s check)"
    check = config.get("check")
    if check:
        line += (
            f"; check vs PyTorch: masks agree at IoU {check['mask_agreement_iou']:.4f}, "
            f"embeddings relative error {check['encoder_rel_error']:.2e}"
        )
        if config.get("quantize"):
            line += f" (encoder {config['quantize']})"
    return line


# --------------------------------------------------------------------------- running


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``samtune_onnx.json`` of an export folder.

    Raises:
        MissingFileError: no such folder, or no ``samtune_onnx.json`` in it.
        InputError: the file is not a samtune ONNX export's.
    """
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(
            f"{str(folder)!r} holds no {CONFIG_FILE}; export one with "
            "`samtune export ADAPTER OUT --format onnx`"
        )
    config = read_json(path, what="ONNX export config")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"{str(path)!r} is not a samtune ONNX export ({FORMAT})")
    return config


@dataclass
class OnnxSam:
    """An exported SAM opened with onnxruntime: ``encode`` an image, ``decode`` prompts."""

    folder: Path
    config: dict[str, Any]
    encoder: Any
    decoder: Any

    @property
    def preprocess(self):
        return PreprocessConfig.from_dict(self.config["preprocess"])

    @property
    def low_res(self) -> int:
        return int(self.config["decoder"]["inputs"]["mask_input"]["shape"][-1])

    def encode(self, image) -> tuple[np.ndarray, Any]:
        """An HxWx3 uint8 RGB image -> ``(image_embeddings (1, C, h, w), Geometry)``."""
        pixel_values, geometry = preprocess_image(image, self.preprocess)
        emb = self.encoder.run(None, {"pixel_values": pixel_values[None].numpy()})[0]
        return emb, geometry

    def decode(
        self,
        image_embeddings: np.ndarray,
        geometry,
        *,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode prompts given in original pixels.

        Args:
            boxes: (P, 4) XYXY boxes, one prompt each.
            points: (P, N, 2) points with ``labels`` (P, N) (1 positive, 0 negative; default
                all positive); a padding point is added when there are no boxes, as SAM
                expects.
            mask_input: (1 or P, 1, r, r) low-res logits of a previous prediction.

        Returns:
            ``masks`` (P, T, H, W) logits, ``iou_predictions`` (P, T), ``low_res_masks``.
        """
        coords, codes = [], []
        if points is not None:
            points = np.asarray(points, np.float32)
            coords.append(geometry.coords_to_model(points))
            codes.append(np.ones(points.shape[:2], np.float32) if labels is None else labels)
        if boxes is not None:
            corners = geometry.coords_to_model(np.asarray(boxes, np.float32)).reshape(-1, 2, 2)
            coords.append(corners)
            codes.append(np.tile(np.array([[2, 3]], np.float32), (len(corners), 1)))
        elif points is not None:
            n = len(points)
            coords.append(np.zeros((n, 1, 2), np.float32))
            codes.append(-np.ones((n, 1), np.float32))
        if not coords:
            raise InputError("give boxes, points (with labels), or both")
        feed = {
            "image_embeddings": image_embeddings,
            "point_coords": np.concatenate(coords, axis=1),
            "point_labels": np.concatenate(codes, axis=1).astype(np.float32),
            "mask_input": np.zeros((1, 1, self.low_res, self.low_res), np.float32)
            if mask_input is None
            else np.asarray(mask_input, np.float32),
            "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
            "orig_im_size": np.asarray(geometry.original_size, np.float32),
        }
        masks, iou, low_res = self.decoder.run(None, feed)
        return masks, iou, low_res


def load_onnx(folder: str | os.PathLike, providers: Sequence[str] | None = None) -> OnnxSam:
    """Open an export folder with onnxruntime (CPU unless ``providers`` says otherwise).

    Raises:
        MissingDependencyError: ``onnxruntime`` is not installed.
        MissingFileError / InputError: not a samtune ONNX export.
    """
    _, ort = require_onnx()
    folder = Path(folder)
    config = read_config(folder)
    providers = list(providers or ["CPUExecutionProvider"])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = []
    for name in (ENCODER_FILE, DECODER_FILE):
        if not (folder / name).is_file():
            raise MissingFileError(f"{str(folder)!r} has no {name}; export it again")
        sessions.append(ort.InferenceSession(str(folder / name), options, providers=providers))
    return OnnxSam(folder, config, *sessions)


def evaluate_onnx(
    exported: str | os.PathLike | OnnxSam,
    dataset,
    *,
    max_images: int | None = None,
    prompt_batch: int = 32,
) -> dict[str, Any]:
    """samtune's box protocol (see :func:`samtune.evaluation.protocols.evaluate`), run with onnxruntime.

    Every non-crowd, non-empty instance is prompted with its ground-truth box, mapped to model
    pixels with samtune's preprocessing; the single-mask output (token 0) at the original size,
    thresholded at 0, is scored with the same metric code. ``metrics["miou"]`` is comparable
    with ``evaluate(model, dataset, "box").metrics["miou"]``.

    Returns:
        The metrics dict (``miou``, ``image_miou``, ``class_miou``, ``pooled_iou``, ``dice``...).
    """
    sam = exported if isinstance(exported, OnnxSam) else load_onnx(exported)
    categories = dict(getattr(dataset, "categories", {}) or {})
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    records = []
    for index in range(n):
        sample = dataset[index]
        masks = np.asarray(sample.masks, dtype=bool)
        crowd = np.asarray(getattr(sample, "iscrowd", np.zeros(len(masks), bool)), dtype=bool)
        nonempty = masks.reshape(len(masks), -1).any(1) if len(masks) else np.zeros(0, bool)
        keep = ~crowd & nonempty
        if not keep.any():
            continue
        emb, geometry = sam.encode(sample.image)
        boxes = np.asarray(sample.boxes, dtype=np.float32)[keep]
        gt = masks[keep]
        ids = np.asarray(sample.instance_ids)[keep]
        cats = np.asarray(sample.category_ids)[keep]
        for s in range(0, len(boxes), prompt_batch):
            logits, iou, _ = sam.decode(emb, geometry, boxes=boxes[s : s + prompt_batch])
            counts = M.mask_counts(logits[:, 0] > 0, gt[s : s + prompt_batch])
            for i in range(len(logits)):
                row = {k: int(counts[k][i]) for k in counts}
                records.append(
                    {
                        "image_index": index,
                        "image_id": int(sample.image_id),
                        "instance_id": int(ids[s + i]),
                        "category_id": int(cats[s + i]),
                        **row,
                        "score": float(iou[i, 0]),
                    }
                )
    return M.summarize_instances(records, categories)


__all__ = [
    "CONFIG_FILE",
    "DECODER_FILE",
    "ENCODER_FILE",
    "QUANTIZE_MODES",
    "DecoderGraph",
    "EncoderGraph",
    "OnnxSam",
    "evaluate_onnx",
    "export_onnx",
    "load_onnx",
    "read_config",
    "require_onnx",
    "summary",
]
