"""SAM 2 / 2.1 original ``.pt`` checkpoints <-> ``transformers.Sam2Model``.

An original file is ``{"model": state_dict}`` (read with ``weights_only=True``). Its image
part (Hiera trunk, FPN neck, prompt encoder, mask decoder, ``no_mem_embed``) becomes a
``Sam2Model``; the video part (memory attention, memory encoder, object pointers), which an
image model does not use, is kept aside on the model (:data:`VIDEO_STATE_ATTR`) so that
:func:`save_sam2_checkpoint` writes the whole original file back. Every tensor is renamed,
except SAM 2's four point embeddings, which HF stacks into one matrix (split back exactly).

Read off the shapes: Hiera's width, blocks per stage, widths per stage, the windowed
position-embedding sizes and the first window size; the FPN's channels and width; every
decoder size. Not visible in the weights: the attention heads per stage, the global-attention
blocks, the later window sizes and the input image size. They come from the official model
with the same widths and stages (tiny, small, base+, large), else from Hiera's defaults with
an :class:`~samtune.errors.AssumptionWarning`; a samtune sidecar or the caller's overrides
state them instead.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model

from ...errors import AssumptionWarning, CheckpointError, ConfigError
from . import sam as convert

VIDEO_STATE_ATTR = "samtune_sam2_video_state"
"""Attribute (in the model's ``__dict__``, not a parameter) holding the original checkpoint's
video-only tensors, so that an exported ``.pt`` is the whole original file again."""

_IMAGE_PREFIXES = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
_MARKER = "image_encoder.trunk.patch_embed.proj.weight"
_POINTS_HF = "prompt_encoder.point_embed.weight"
_POSITIONAL_HF_TIED = "prompt_encoder.shared_embedding.positional_embedding"
_POSITIONAL_HF = "shared_image_embedding.positional_embedding"

# (original fragment, HF fragment), applied in order to whole dotted segments.
_RENAMES = [
    ("image_encoder.trunk.", "vision_encoder.backbone."),
    ("image_encoder.neck.", "vision_encoder.neck."),
    ("sam_prompt_encoder.", "prompt_encoder."),
    ("sam_mask_decoder.", "mask_decoder."),
    ("no_mem_embed", "no_memory_embedding"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("patch_embed.proj.", "patch_embed.projection."),
    (".out_proj.", ".o_proj."),
    (".norm_final_attn.", ".layer_norm_final_attn."),
    (".norm1.", ".layer_norm1."),
    (".norm2.", ".layer_norm2."),
    (".norm3.", ".layer_norm3."),
    (".norm4.", ".layer_norm4."),
    ("mask_downscaling.0.", "mask_embed.conv1."),
    ("mask_downscaling.1.", "mask_embed.layer_norm1."),
    ("mask_downscaling.3.", "mask_embed.conv2."),
    ("mask_downscaling.4.", "mask_embed.layer_norm2."),
    ("mask_downscaling.6.", "mask_embed.conv3."),
    ("output_upscaling.0.", "upscale_conv1."),
    ("output_upscaling.1.", "upscale_layer_norm."),
    ("output_upscaling.3.", "upscale_conv2."),
]
# MLPs (original ``layers.i``, HF ``proj_in``/``layers.i``/``proj_out``), by their owner.
_MLP_ORIG = re.compile(
    r"^(.+\.(?:mlp|iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+))\.layers\.(\d+)\.(weight|bias)$"
)
_MLP_HF = re.compile(
    r"^(.+\.(?:mlp|iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+))\.(proj_in|proj_out|layers\.\d+)\.(weight|bias)$"
)
_POINT_ORIG = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")
_NECK_ORIG = re.compile(r"^(image_encoder\.neck\.convs\.\d+)\.conv\.(weight|bias)$")
_NECK_HF = re.compile(r"^(vision_encoder\.neck\.convs\.\d+)\.(weight|bias)$")


def is_sam2_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an original SAM 2 / 2.1 state dict (a Hiera trunk and SAM 2's decoder)."""
    return _MARKER in state_dict and any(k.startswith("sam_mask_decoder.") for k in state_dict)


def split_sam2_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(image, video)``: the tensors ``Sam2Model`` uses, and the video-only rest."""
    image = {k: v for k, v in state_dict.items() if k.startswith(_IMAGE_PREFIXES)}
    return image, {k: v for k, v in state_dict.items() if k not in image}


def _mlp_depths(keys, pattern: re.Pattern[str]) -> dict[str, int]:
    """Number of linear layers of each MLP, from its distinct layer names."""
    names: dict[str, set[str]] = {}
    for key in keys:
        if m := pattern.match(key):
            names.setdefault(m.group(1), set()).add(m.group(2))
    return {head: len(layers) for head, layers in names.items()}


def _rename(key: str, reverse: bool) -> str:
    pairs = reversed(_RENAMES) if reverse else _RENAMES
    for orig, hf in pairs:
        key = key.replace(hf, orig) if reverse else key.replace(orig, hf)
    return key


def sam2_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the image part of an original SAM 2 state dict to ``Sam2Model`` keys.

    Video-only tensors are left out (:func:`split_sam2_state_dict` returns them).

    Raises:
        CheckpointError: not a SAM 2 state dict.
    """
    if not is_sam2_state_dict(state_dict):
        raise CheckpointError(
            f"expected a SAM 2 state dict (keys '{_MARKER}', 'sam_mask_decoder.*'), found keys "
            f"like {sorted(state_dict)[:3]}; pass a checkpoint such as sam2.1_hiera_small.pt"
        )
    image, _ = split_sam2_state_dict(state_dict)
    depths = _mlp_depths(image, _MLP_ORIG)
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for key, value in image.items():
        if m := _POINT_ORIG.match(key):
            points[int(m.group(1))] = value
            continue
        if m := _MLP_ORIG.match(key):
            name = convert.mlp_layer_to_hf(int(m.group(2)), depths[m.group(1)])
            key = f"{m.group(1)}.{name}.{m.group(3)}"
        elif m := _NECK_ORIG.match(key):
            key = f"{m.group(1)}.{m.group(2)}"
        out[_rename(key, reverse=False)] = value
    out[_POINTS_HF] = torch.cat([points[i] for i in sorted(points)], dim=0)
    out[_POSITIONAL_HF] = out[_POSITIONAL_HF_TIED]
    return out


def hf_to_sam2_state_dict(
    state_dict: Mapping[str, torch.Tensor], video_state: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Rename a ``Sam2Model`` state dict to original SAM 2 keys, plus ``video_state`` if given.

    Raises:
        CheckpointError: not a ``Sam2Model`` state dict.
    """
    sd = dict(state_dict)
    if _POINTS_HF not in sd or "vision_encoder.backbone.pos_embed" not in sd:
        raise CheckpointError(
            "expected a Hugging Face Sam2Model state dict (keys 'vision_encoder.backbone.*'), "
            f"found keys like {sorted(sd)[:3]}"
        )
    depths = _mlp_depths(sd, _MLP_HF)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == _POSITIONAL_HF:
            continue
        if key == _POINTS_HF:
            for i, row in enumerate(value.split(1, dim=0)):
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = row
            continue
        if m := _MLP_HF.match(key):
            index = convert.mlp_layer_to_meta(m.group(2), depths[m.group(1)])
            key = f"{m.group(1)}.layers.{index}.{m.group(3)}"
        elif m := _NECK_HF.match(key):
            key = f"{m.group(1)}.conv.{m.group(2)}"
        out[_rename(key, reverse=True)] = value
    return {**out, **(video_state or {})}


# What the weights do not show, for the official sizes: (embed dim, blocks per stage) ->
# (heads of the first stage, global-attention blocks, window size per stage).
OFFICIAL_HIERA = {
    (96, (1, 2, 7, 2)): ("tiny", 1, (5, 7, 9), (8, 4, 14, 7)),
    (96, (1, 2, 11, 2)): ("small", 1, (7, 10, 13), (8, 4, 14, 7)),
    (112, (2, 3, 16, 3)): ("base+", 2, (12, 16, 20), (8, 4, 14, 7)),
    (144, (2, 6, 36, 4)): ("large", 2, (23, 33, 43), (8, 4, 16, 8)),
}
# Hiera's own defaults (sam2.modeling.backbones.hieradet.Hiera), for any other size.
HIERA_DEFAULT = ("custom", 1, (12, 16, 20), (8, 4, 14, 7))
SAM2_IMAGE_SIZE = 1024
SAM2_DECODER_HEADS = 8  # fixed in SAM2Base._build_sam_heads


def _hiera_shapes(sd: Mapping[str, torch.Tensor]) -> dict:
    """What the trunk's shapes show: widths and blocks per stage, position-embedding sizes."""
    t = "image_encoder.trunk."
    n_blocks = len({k.split(".")[3] for k in sd if k.startswith(t + "blocks.")})
    widths = [sd[f"{t}blocks.{i}.mlp.layers.1.weight"].shape[0] for i in range(n_blocks)]
    starts = [0] + [i for i in range(1, n_blocks) if widths[i] != widths[i - 1]]
    stages = [b - a for a, b in zip(starts, [*starts[1:], n_blocks], strict=True)]
    return dict(
        hidden_size=sd[_MARKER].shape[0],
        blocks_per_stage=stages,
        embed_dim_per_stage=[widths[s] for s in starts],
        mlp_ratio=sd[f"{t}blocks.0.mlp.layers.0.weight"].shape[0] / widths[0],
        patch_kernel_size=list(sd[_MARKER].shape[-2:]),
        window_positional_embedding_background_size=list(sd[t + "pos_embed"].shape[-2:]),
        first_window=sd[t + "pos_embed_window"].shape[-1],
    )


def _unseen_defaults(shapes: dict, stated: dict) -> tuple[dict, list[str]]:
    """Heads, global blocks and windows from the official table (or Hiera's defaults)."""
    key = (shapes["hidden_size"], tuple(shapes["blocks_per_stage"]))
    name, heads, global_blocks, windows = OFFICIAL_HIERA.get(key, HIERA_DEFAULT)
    n = len(shapes["blocks_per_stage"])
    values = {
        "num_attention_heads_per_stage": [heads * 2**i for i in range(n)],
        "global_attention_blocks": list(global_blocks),
        "window_size_per_stage": [shapes["first_window"], *windows[1:n]],
        "image_size": SAM2_IMAGE_SIZE,
    }
    # every official model runs at 1024 with these values; only a custom size is a guess
    assumed = [k for k in values if k not in stated] if name == "custom" else []
    values.update(stated)
    return values, assumed


def sam2_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], **stated: Any
) -> Sam2Config:
    """Read the architecture of an original SAM 2 / 2.1 checkpoint off its tensor shapes.

    Args:
        state_dict: original keys (the ``"model"`` entry of the ``.pt``).
        **stated: what the weights cannot show, to override the defaults:
            ``num_attention_heads_per_stage``, ``global_attention_blocks``,
            ``window_size_per_stage`` (Hiera), ``image_size`` (square input side).

    Raises:
        CheckpointError: not a complete SAM 2 state dict.
    """
    config, _ = _sam2_config(state_dict, stated)
    return config


def _sam2_config(sd: Mapping[str, torch.Tensor], stated: dict) -> tuple[Sam2Config, list[str]]:
    unknown = set(stated) - {
        "num_attention_heads_per_stage",
        "global_attention_blocks",
        "window_size_per_stage",
        "image_size",
    }
    if unknown:
        raise ConfigError(f"cannot state {sorted(unknown)} for a SAM 2 checkpoint")
    if not is_sam2_state_dict(sd):
        raise CheckpointError(f"not a SAM 2 state dict: tensor {_MARKER!r} is missing")
    try:
        shapes = _hiera_shapes(sd)
        unseen, assumed = _unseen_defaults(shapes, stated)
        size = int(unseen.pop("image_size"))
        shapes.pop("first_window")
        backbone = dict(
            **shapes,
            **unseen,
            image_size=[size, size],
            num_query_pool_stages=min(3, len(shapes["blocks_per_stage"]) - 1),
        )
        vision = _neck_config(sd, size)
        vision["backbone_config"] = Sam2HieraDetConfig(**backbone)
        decoder = _decoder_config(sd)
        prompt = dict(
            hidden_size=decoder["hidden_size"],
            image_size=size,
            patch_size=16,
            mask_input_channels=sd["sam_prompt_encoder.mask_downscaling.3.weight"].shape[0],
            num_point_embeddings=len([k for k in sd if _POINT_ORIG.match(k)]),
        )
    except KeyError as exc:
        raise CheckpointError(
            f"not a complete SAM 2 state dict: tensor {exc.args[0]!r} is missing"
        ) from None
    config = Sam2Config(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )
    return config, assumed


def _neck_config(sd: Mapping[str, torch.Tensor], size: int) -> dict:
    n = len({k.split(".")[3] for k in sd if k.startswith("image_encoder.neck.convs.")})
    convs = [sd[f"image_encoder.neck.convs.{i}.conv.weight"] for i in range(n)]
    return dict(
        backbone_channel_list=[c.shape[1] for c in convs],
        backbone_feature_sizes=[[size // s, size // s] for s in (4, 8, 16)],
        fpn_hidden_size=convs[0].shape[0],
        fpn_kernel_size=convs[0].shape[-1],
        fpn_padding=(convs[0].shape[-1] - 1) // 2,
    )


def _decoder_config(sd: Mapping[str, torch.Tensor]) -> dict:
    d = "sam_mask_decoder."
    tokens = sd[d + "mask_tokens.weight"]
    layers = {k.split(".")[3] for k in sd if k.startswith(d + "transformer.layers.")}
    iou = {k.split(".")[3] for k in sd if k.startswith(d + "iou_prediction_head.layers.")}
    cross_q = sd[d + "transformer.layers.0.cross_attn_token_to_image.q_proj.weight"]
    return dict(
        hidden_size=tokens.shape[1],
        mlp_dim=sd[d + "transformer.layers.0.mlp.layers.0.weight"].shape[0],
        num_hidden_layers=len(layers),
        num_attention_heads=SAM2_DECODER_HEADS,
        attention_downsample_rate=tokens.shape[1] // cross_q.shape[0],
        num_multimask_outputs=tokens.shape[0] - 1,
        iou_head_depth=len(iou),
        iou_head_hidden_dim=sd[d + "iou_prediction_head.layers.0.weight"].shape[0],
    )


def sam2_model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Sam2Config | None = None, **stated
) -> Sam2Model:
    """Build a ``Sam2Model`` from an original SAM 2 state dict (video tensors kept aside).

    Args:
        state_dict: original keys (a ``{"model": ...}`` wrapper already removed).
        config: the architecture; default: :func:`sam2_config_from_state_dict` with ``stated``.

    Raises:
        CheckpointError: not SAM 2, or the tensors do not fit the architecture.
    """
    if config is None:
        config = sam2_config_from_state_dict(state_dict, **stated)
    model = convert.build_checked(Sam2Model, config, sam2_to_hf_state_dict(state_dict), "SAM 2")
    model.__dict__[VIDEO_STATE_ATTR] = split_sam2_state_dict(state_dict)[1]
    return model.eval()


def load_original(path: str | Path, **stated) -> Sam2Model:
    """A ``Sam2Model`` from an original SAM 2 / 2.1 ``.pt`` (read with ``weights_only``).

    The config comes from the samtune sidecar beside the file when there is one, else from
    the shapes and ``stated`` (see :func:`sam2_config_from_state_dict`); an
    :class:`AssumptionWarning` names what had to be assumed for a non-official size.

    Raises:
        MissingFileError: no such file.
        CheckpointError: not a readable checkpoint, or not SAM 2.
    """
    sd = convert.read_family_checkpoint(path, is_sam2_state_dict, "SAM 2")
    return model_from_original(Path(path), sd, **stated)


def model_from_original(path: Path, sd: Mapping[str, torch.Tensor], **stated):
    """The model of an original state dict ``sd`` read from ``path``: config from the samtune
    sidecar beside ``path`` if there is one, else as :func:`load_original` says."""
    config = convert.sidecar_config(path, "sam2", Sam2Config)
    if config is not None and not stated:
        return sam2_model_from_state_dict(sd, config)
    config, assumed = _sam2_config(sd, stated)
    if assumed:
        warnings.warn(
            f"{path.name}: a SAM 2 checkpoint of a non-official size does not record "
            f"{', '.join(assumed)}; assumed Hiera's defaults "
            f"({', '.join(f'{k}={_value(config, k)}' for k in assumed)})",
            AssumptionWarning,
            stacklevel=2,
        )
    return sam2_model_from_state_dict(sd, config)


def _value(config: Sam2Config, key: str):
    backbone = config.vision_config.backbone_config
    return backbone.image_size[0] if key == "image_size" else getattr(backbone, key)


def save_sam2_checkpoint(model: Sam2Model, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a ``Sam2Model`` as an original SAM 2 ``.pt`` (``{"model": state_dict}``) plus
    its samtune sidecar.

    The video tensors kept from the original file (:data:`VIDEO_STATE_ATTR`) are written
    back, so a converted official checkpoint exports to the same file content and
    ``sam2.build_sam.build_sam2`` loads it. A model that never had them (built in
    transformers) gets an image-only file, which the reference loads with ``strict=False``.
    Overwrite rules as :func:`samtune.models.convert.sam.save_meta_checkpoint`.

    Raises:
        InputError: ``path`` exists and ``overwrite`` is off, or it is not samtune's to replace.
    """
    video = model.__dict__.get(VIDEO_STATE_ATTR)
    sd = {
        k: v.detach().cpu().contiguous()
        for k, v in hf_to_sam2_state_dict(model.state_dict(), video).items()
    }
    return convert.write_original_checkpoint(
        model, {"model": sd}, path, overwrite=overwrite, family="sam2"
    )
