"""SAM 3's original ``sam3.pt`` <-> ``transformers.Sam3Model``.

An original file is a flat state dict (read with ``weights_only=True``; a ``{"model": sd}``
wrapper is accepted, as Meta's loader accepts it) of Meta's video model: the image detector
under ``detector.`` (what ``sam3.model_builder.build_sam3_image_model(checkpoint_path=...)``
keeps, prefix removed) and the video tracker under ``tracker.`` (memory attention and encoder,
SAM 2-style prompt encoder and mask decoder, object pointers; no backbone of its own).

The detector becomes a ``Sam3Model``: every tensor is renamed, except that the fused
attention projections (the ViT's ``qkv``, ``nn.MultiheadAttention``'s ``in_proj_*``) are cut
into ``q``/``k``/``v`` (and concatenated back), CLIP's ``text_projection`` is transposed, and
the ViT's position embedding loses its class-token row. What ``Sam3Model`` has no place for is
kept aside on the model (:data:`ORIGINAL_STATE_ATTR`) and written back by
:func:`save_sam3_checkpoint`, so original -> samtune -> original reproduces every tensor: the
tracker, the SAM 2-style neck used by point prompts (``sam2_convs``), the geometry encoder's
point projections, the class-token row and the RoPE tables (``freqs_cis``).

Read off the shapes (and the RoPE tables): every width, depth and size of the ViT (heads,
window, global-attention blocks, input size), the neck, the text encoder, the geometry and
DETR encoders, the DETR decoder (heads too) and the mask decoder. Not recorded: the attention
heads of the text encoder (16 in Meta's model), of the geometry and DETR encoders and the mask
decoder (8), CLIP's special token ids and the tokenizer. Meta's values hold for Meta's sizes;
other sizes need samtune's sidecar, else an :class:`~samtune.errors.AssumptionWarning` says
what was assumed. LayerNorm epsilons are Meta's (1e-5 in the ViT, where transformers' default
config says 1e-6).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import Sam3Config, Sam3Model

from ...errors import AssumptionWarning, CheckpointError, ConfigError
from ..identity import samtune_info
from . import sam as convert

ORIGINAL_STATE_ATTR = "samtune_sam3_original_state"
"""Attribute (in the model's ``__dict__``, not a parameter) holding the original tensors
``Sam3Model`` has no place for, by their original names (the class-token row of the position
embedding under ``detector.backbone.vision_backbone.trunk.pos_embed``)."""

DETECTOR = "detector."
TRACKER = "tracker."
_MARKER = "detector.backbone.vision_backbone.trunk.patch_embed.proj.weight"
_TRUNK = "backbone.vision_backbone.trunk."
_POS = _TRUNK + "pos_embed"
_TEXT = "backbone.language_backbone.encoder."

# How a module's parameters are renamed inside a rule's prefix:
_PLAIN = "plain"  # unchanged
_MHA = "mha"  # nn.MultiheadAttention: in_proj_{weight,bias} <-> {q,k,v}_proj, out_proj <-> o_proj
_MHA_CLIP = "mha-clip"  # the same, out_proj kept (CLIP's name)
_VIT_ATTN = "vit-attn"  # fused qkv <-> {q,k,v}_proj, proj <-> o_proj, freqs_cis kept aside
_TRANSPOSE = "transpose"  # CLIP's text_projection: (width, dim) parameter <-> Linear weight
_POS_EMBED = "pos-embed"  # class-token row kept aside
_ASIDE = "aside"  # no place in Sam3Model: kept aside

_V = "backbone.vision_backbone."
_T = "backbone.language_backbone."
_G = "geometry_encoder."
_E = "transformer.encoder.layers.{}."
_D = "transformer.decoder."
_S = "segmentation_head."


def _mlp(meta: str, hf: str, depth: int = 3) -> list[tuple[str, str, str]]:
    """Meta's ``MLP`` (``layers.i``) as transformers' ``layer{i+1}``."""
    return [(f"{meta}layers.{i}.", f"{hf}layer{i + 1}.", _PLAIN) for i in range(depth)]


# (original module prefix, Sam3Model module prefix, kind); "{}" is a layer index. The first
# rule whose prefix a key starts with applies, in both directions, so specific rules come
# before the catch-all of their part.
_RULES: list[tuple[str, str | None, str]] = [
    (_POS, "vision_encoder.backbone.embeddings.position_embeddings", _POS_EMBED),
    (
        _TRUNK + "patch_embed.proj.",
        "vision_encoder.backbone.embeddings.patch_embeddings.projection.",
        _PLAIN,
    ),  # fmt: skip
    (_TRUNK + "ln_pre.", "vision_encoder.backbone.layer_norm.", _PLAIN),
    (_TRUNK + "blocks.{}.norm1.", "vision_encoder.backbone.layers.{}.layer_norm1.", _PLAIN),
    (_TRUNK + "blocks.{}.norm2.", "vision_encoder.backbone.layers.{}.layer_norm2.", _PLAIN),
    (_TRUNK + "blocks.{}.attn.", "vision_encoder.backbone.layers.{}.attention.", _VIT_ATTN),
    (_TRUNK + "blocks.{}.mlp.", "vision_encoder.backbone.layers.{}.mlp.", _PLAIN),
    # the neck's 4x level upsamples twice (ConvTranspose, GELU, ConvTranspose), the 2x once;
    # the reverse of scale_layers.0 is settled per level (_neck_to_meta)
    (_V + "convs.{}.dconv_2x2_0.", "vision_encoder.neck.fpn_layers.{}.scale_layers.0.", _PLAIN),
    (_V + "convs.{}.dconv_2x2_1.", "vision_encoder.neck.fpn_layers.{}.scale_layers.2.", _PLAIN),
    (_V + "convs.{}.dconv_2x2.", "vision_encoder.neck.fpn_layers.{}.scale_layers.0.", _PLAIN),
    (_V + "convs.{}.conv_1x1.", "vision_encoder.neck.fpn_layers.{}.proj1.", _PLAIN),
    (_V + "convs.{}.conv_3x3.", "vision_encoder.neck.fpn_layers.{}.proj2.", _PLAIN),
    (_V + "sam2_convs.", None, _ASIDE),
    (_TEXT + "token_embedding.", "text_encoder.text_model.embeddings.token_embedding.", _PLAIN),
    (
        _TEXT + "positional_embedding",
        "text_encoder.text_model.embeddings.position_embedding.weight",
        _PLAIN,
    ),  # fmt: skip
    (_TEXT + "ln_final.", "text_encoder.text_model.final_layer_norm.", _PLAIN),
    (_TEXT + "text_projection", "text_encoder.text_projection.weight", _TRANSPOSE),
    (
        _TEXT + "transformer.resblocks.{}.attn.",
        "text_encoder.text_model.encoder.layers.{}.self_attn.",
        _MHA_CLIP,
    ),  # fmt: skip
    (
        _TEXT + "transformer.resblocks.{}.ln_1.",
        "text_encoder.text_model.encoder.layers.{}.layer_norm1.",
        _PLAIN,
    ),  # fmt: skip
    (
        _TEXT + "transformer.resblocks.{}.ln_2.",
        "text_encoder.text_model.encoder.layers.{}.layer_norm2.",
        _PLAIN,
    ),  # fmt: skip
    (
        _TEXT + "transformer.resblocks.{}.mlp.c_fc.",
        "text_encoder.text_model.encoder.layers.{}.mlp.fc1.",
        _PLAIN,
    ),  # fmt: skip
    (
        _TEXT + "transformer.resblocks.{}.mlp.c_proj.",
        "text_encoder.text_model.encoder.layers.{}.mlp.fc2.",
        _PLAIN,
    ),  # fmt: skip
    (_T + "resizer.", "text_projection.", _PLAIN),
    (_G + "points_", None, _ASIDE),  # Sam3Model's geometry encoder takes boxes only
    (_G + "encode.{}.self_attn.", _G + "layers.{}.self_attn.", _MHA),
    (_G + "encode.{}.cross_attn_image.", _G + "layers.{}.cross_attn.", _MHA),
    (_G + "encode.{}.linear1.", _G + "layers.{}.mlp.fc1.", _PLAIN),
    (_G + "encode.{}.linear2.", _G + "layers.{}.mlp.fc2.", _PLAIN),
    (_G + "encode.{}.norm1.", _G + "layers.{}.layer_norm1.", _PLAIN),
    (_G + "encode.{}.norm2.", _G + "layers.{}.layer_norm2.", _PLAIN),
    (_G + "encode.{}.norm3.", _G + "layers.{}.layer_norm3.", _PLAIN),
    (_G + "img_pre_norm.", _G + "vision_layer_norm.", _PLAIN),
    (_G + "norm.", _G + "prompt_layer_norm.", _PLAIN),
    (_G + "encode_norm.", _G + "output_layer_norm.", _PLAIN),
    (_G, _G, _PLAIN),  # label_embed, cls_embed, boxes_*, final_proj
    (_E + "self_attn.", "detr_encoder.layers.{}.self_attn.", _MHA),
    (_E + "cross_attn_image.", "detr_encoder.layers.{}.cross_attn.", _MHA),
    (_E + "linear1.", "detr_encoder.layers.{}.mlp.fc1.", _PLAIN),
    (_E + "linear2.", "detr_encoder.layers.{}.mlp.fc2.", _PLAIN),
    (_E + "norm1.", "detr_encoder.layers.{}.layer_norm1.", _PLAIN),
    (_E + "norm2.", "detr_encoder.layers.{}.layer_norm2.", _PLAIN),
    (_E + "norm3.", "detr_encoder.layers.{}.layer_norm3.", _PLAIN),
    (_D + "layers.{}.self_attn.", "detr_decoder.layers.{}.self_attn.", _MHA),
    (_D + "layers.{}.ca_text.", "detr_decoder.layers.{}.text_cross_attn.", _MHA),
    (_D + "layers.{}.cross_attn.", "detr_decoder.layers.{}.vision_cross_attn.", _MHA),
    (_D + "layers.{}.linear1.", "detr_decoder.layers.{}.mlp.fc1.", _PLAIN),
    (_D + "layers.{}.linear2.", "detr_decoder.layers.{}.mlp.fc2.", _PLAIN),
    (_D + "layers.{}.norm1.", "detr_decoder.layers.{}.vision_cross_attn_layer_norm.", _PLAIN),
    (_D + "layers.{}.catext_norm.", "detr_decoder.layers.{}.text_cross_attn_layer_norm.", _PLAIN),
    (_D + "layers.{}.norm2.", "detr_decoder.layers.{}.self_attn_layer_norm.", _PLAIN),
    (_D + "layers.{}.norm3.", "detr_decoder.layers.{}.mlp_layer_norm.", _PLAIN),
    (_D + "norm.", "detr_decoder.output_layer_norm.", _PLAIN),
    (_D + "presence_token_out_norm.", "detr_decoder.presence_layer_norm.", _PLAIN),
    *_mlp(_D + "bbox_embed.", "detr_decoder.box_head."),
    *_mlp(_D + "presence_token_head.", "detr_decoder.presence_head."),
    *_mlp(_D + "ref_point_head.", "detr_decoder.ref_point_head."),
    *_mlp(_D + "boxRPB_embed_x.", "detr_decoder.box_rpb_embed_x."),
    *_mlp(_D + "boxRPB_embed_y.", "detr_decoder.box_rpb_embed_y."),
    (_D, "detr_decoder.", _PLAIN),  # query_embed, reference_points, presence_token
    *_mlp("dot_prod_scoring.prompt_mlp.", "dot_product_scoring.text_mlp."),
    ("dot_prod_scoring.prompt_mlp.out_norm.", "dot_product_scoring.text_mlp_out_norm.", _PLAIN),
    ("dot_prod_scoring.prompt_proj.", "dot_product_scoring.text_proj.", _PLAIN),
    ("dot_prod_scoring.hs_proj.", "dot_product_scoring.query_proj.", _PLAIN),
    (_S + "pixel_decoder.", "mask_decoder.pixel_decoder.", _PLAIN),
    (_S + "mask_predictor.mask_embed.", "mask_decoder.mask_embedder.", _PLAIN),
    (_S + "instance_seg_head.", "mask_decoder.instance_projection.", _PLAIN),
    (_S + "semantic_seg_head.", "mask_decoder.semantic_projection.", _PLAIN),
    (_S + "cross_attend_prompt.", "mask_decoder.prompt_cross_attn.", _MHA),
    (_S + "cross_attn_norm.", "mask_decoder.prompt_cross_attn_norm.", _PLAIN),
]


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{\}", r"(\d+)"))


_COMPILED = [
    (_pattern(meta), _pattern(hf) if hf is not None else None, meta, hf, kind)
    for meta, hf, kind in _RULES
]


def _match(key: str, meta_side: bool) -> tuple[str, str, str] | None:
    """``(prefix on the other side, rest of the key, kind)`` of the first rule matching."""
    for meta_re, hf_re, meta, hf, kind in _COMPILED:
        pattern = meta_re if meta_side else hf_re
        if pattern is None or not (m := pattern.match(key)):
            continue
        other = hf if meta_side else meta
        if other is not None and m.groups():
            other = other.replace("{}", m.group(1))
        return other or "", key[m.end() :], kind
    return None


def is_sam3_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True for an original SAM 3 state dict (``sam3.pt``: ``detector.*`` and ``tracker.*``)."""
    return _MARKER in state_dict


def _unknown_key(key: str) -> CheckpointError:
    return CheckpointError(
        f"not a SAM 3 checkpoint samtune can read: tensor {key!r} belongs to no part of Meta's "
        "SAM 3 image model (expected 'detector.*' keys as in facebook/sam3's sam3.pt, and "
        "'tracker.*'); remove it or load the checkpoint with Meta's sam3 package"
    )


def sam3_to_hf_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(hf, aside)``: the detector renamed to ``Sam3Model`` keys, and the original tensors
    that have no place there (by original name; the tracker among them).

    Raises:
        CheckpointError: not SAM 3, or a key that belongs to no part of the detector.
    """
    if not is_sam3_state_dict(state_dict):
        raise CheckpointError(
            f"expected a SAM 3 state dict (key {_MARKER!r}, as in facebook/sam3's sam3.pt), "
            f"found keys like {sorted(state_dict)[:3]}"
        )
    hf: dict[str, torch.Tensor] = {}
    aside: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(TRACKER):
            aside[key] = value
            continue
        found = _match(key[len(DETECTOR) :], True) if key.startswith(DETECTOR) else None
        if found is None:
            raise _unknown_key(key)
        _to_hf(key, value, *found, hf, aside)
    return hf, aside


def _to_hf(key: str, value: torch.Tensor, prefix: str, rest: str, kind: str, hf: dict,
           aside: dict) -> None:  # fmt: skip
    """Put the original tensor ``key`` into ``hf`` (or ``aside``) as its ``kind`` says."""
    fused = {"qkv.weight": "weight", "qkv.bias": "bias"} if kind == _VIT_ATTN else {}
    if kind in (_MHA, _MHA_CLIP):
        fused = {"in_proj_weight": "weight", "in_proj_bias": "bias"}
    if kind == _ASIDE or (kind == _VIT_ATTN and rest == "freqs_cis"):
        aside[key] = value
    elif kind == _POS_EMBED and not rest:
        _check_pos_embed(key, value)
        aside[key] = value[:, :1].clone()
        hf[prefix] = value[:, 1:]
    elif kind == _TRANSPOSE and not rest:
        hf[prefix] = value.t()
    elif rest in fused:
        if value.shape[0] % 3:
            raise CheckpointError(
                f"tensor {key!r} has shape {tuple(value.shape)}: a fused query/key/value "
                "projection needs a first size divisible by 3"
            )
        for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
            hf[f"{prefix}{name}_proj.{fused[rest]}"] = part
    elif kind == _MHA and rest.startswith("out_proj."):
        hf[prefix + "o_proj." + rest[len("out_proj.") :]] = value
    elif kind == _VIT_ATTN and rest.startswith("proj."):
        hf[prefix + "o_proj." + rest[len("proj.") :]] = value
    elif kind in (_POS_EMBED, _TRANSPOSE):
        raise _unknown_key(key)
    else:
        hf[prefix + rest] = value


def _check_pos_embed(key: str, value: torch.Tensor) -> None:
    side = math.isqrt(max(value.shape[1] - 1, 0)) if value.dim() == 3 else 0
    if value.dim() != 3 or value.shape[0] != 1 or side < 1 or side * side + 1 != value.shape[1]:
        raise CheckpointError(
            f"tensor {key!r} has shape {tuple(value.shape)}; expected (1, 1 + N*N, width): a "
            "class-token row and an N x N grid, as Meta's ViT stores it"
        )


def hf_to_sam3_state_dict(
    state_dict: Mapping[str, torch.Tensor], aside: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Rename a ``Sam3Model`` state dict to original ``sam3.pt`` keys, with the tensors kept
    ``aside`` at conversion (without them: a zero class-token row, which Meta's ViT drops,
    and no tracker, RoPE tables, point projections or SAM 2-style neck).

    Raises:
        CheckpointError: not a ``Sam3Model`` state dict, or a key the format has no name for.
    """
    sd = dict(state_dict)
    if "vision_encoder.backbone.embeddings.position_embeddings" not in sd:
        raise CheckpointError(
            "expected a Hugging Face Sam3Model state dict (key "
            "'vision_encoder.backbone.embeddings.position_embeddings'), found keys like "
            f"{sorted(sd)[:3]}"
        )
    aside = dict(aside or {})
    groups: dict[str, tuple[str, dict[str, torch.Tensor]]] = {}
    for key, value in sd.items():
        name, kind, part = _original_name(key, sd)
        groups.setdefault(name, (kind, {}))[1][part or ""] = value
    out: dict[str, torch.Tensor] = {}
    for name, (kind, parts) in groups.items():
        if kind == _POS_EMBED:
            value = parts[""]
            cls_row = aside.pop(DETECTOR + name, None)
            if cls_row is None:  # Meta's ViT drops this row (retain_cls_token=False)
                cls_row = value.new_zeros(1, 1, value.shape[-1])
            out[DETECTOR + name] = torch.cat([cls_row.to(value), value], dim=1)
        elif kind == _TRANSPOSE:
            out[DETECTOR + name] = parts[""].t()
        elif "" in parts:
            out[DETECTOR + name] = parts[""]
        elif set(parts) == set("qkv"):
            out[DETECTOR + name] = torch.cat([parts[p] for p in "qkv"], dim=0)
        else:
            raise CheckpointError(
                f"Sam3Model state dict has {sorted(parts)} of the fused projection "
                f"{DETECTOR + name!r} but not all of q, k and v"
            )
    return {**out, **aside}


def _original_name(key: str, keys: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """``(original name without 'detector.', kind, part)`` of the ``Sam3Model`` tensor
    ``key``; ``part`` is q, k or v for a piece of a fused projection, else None.

    Raises:
        CheckpointError: a key the original format has no name for.
    """
    found = _match(key, False)
    if found is None:
        raise CheckpointError(f"Sam3Model tensor {key!r} has no name in Meta's sam3.pt")
    prefix, rest, kind = found
    if kind in (_POS_EMBED, _TRANSPOSE):
        return prefix, kind, None
    if ".neck.fpn_layers." in key and ".scale_layers.0." in key:
        return _neck_to_meta(key, prefix, keys) + rest, kind, None
    if kind in (_MHA, _MHA_CLIP, _VIT_ATTN):
        if m := re.fullmatch(r"([qkv])_proj\.(weight|bias)", rest):
            fused = "qkv." if kind == _VIT_ATTN else "in_proj_"
            return prefix + fused + m.group(2), kind, m.group(1)
        if rest.startswith("o_proj."):
            out = "proj." if kind == _VIT_ATTN else "out_proj."
            return prefix + out + rest[len("o_proj.") :], kind, None
    return prefix + rest, kind, None


def _neck_to_meta(key: str, prefix: str, keys: Mapping[str, Any]) -> str:
    """``scale_layers.0`` is ``dconv_2x2_0`` on a level that upsamples twice, else ``dconv_2x2``."""
    level = key.split(".scale_layers.0.")[0]
    twice = any(k.startswith(level + ".scale_layers.2.") for k in keys)
    return prefix if twice else prefix.replace(".dconv_2x2_0.", ".dconv_2x2.")


# What the weights do not record, as Meta's sam3.model_builder builds SAM 3.
META_D_MODEL = 256
META_TEXT_WIDTH = 1024
META_TEXT_HEADS = 16  # _create_text_encoder
META_HEADS = 8  # the geometry and DETR encoders' and the mask decoder's attention
META_VOCAB = 49408  # CLIP's BPE vocabulary; transformers' Sam3Config knows its special ids
META_SCALE_FACTORS = [4.0, 2.0, 1.0, 0.5]  # _create_vit_neck
META_LAYER_NORM_EPS = 1e-5  # the ViT's partial(nn.LayerNorm, eps=1e-5)
STATABLE = ("text_num_attention_heads", "num_attention_heads")
"""What a caller may state for a checkpoint of another size than Meta's: the text encoder's
heads, and the heads of the geometry and DETR encoders and the mask decoder."""


def sam3_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], **stated: int
) -> Sam3Config:
    """Read the architecture of an original SAM 3 checkpoint off its shapes and RoPE tables.

    Args:
        state_dict: original keys (``detector.*``; a ``{"model": ...}`` wrapper removed).
        **stated: :data:`STATABLE` values, for a size other than Meta's.

    Raises:
        CheckpointError: not a complete SAM 3 state dict.
        ConfigError: an unknown name in ``stated``.
    """
    return _sam3_config(state_dict, stated)[0]


def _sam3_config(sd: Mapping[str, torch.Tensor], stated: dict) -> tuple[Sam3Config, list[str]]:
    """The config and, in words, what had to be assumed."""
    unknown = set(stated) - set(STATABLE)
    if unknown:
        raise ConfigError(
            f"cannot state {sorted(unknown)} for a SAM 3 checkpoint; statable: {', '.join(STATABLE)}"
        )
    d = {k[len(DETECTOR) :]: v for k, v in sd.items() if k.startswith(DETECTOR)}
    assumed: list[str] = []
    try:
        vision = _vision_config(d, assumed)
        text = _text_config(d, stated, assumed)
        parts = _detector_configs(d, stated, assumed)
    except KeyError as exc:
        raise CheckpointError(
            f"not a complete SAM 3 checkpoint: tensor {DETECTOR + exc.args[0]!r} is missing; "
            "the file is cut short or edited: download or write it again"
        ) from None
    return Sam3Config(vision_config=vision, text_config=text, **parts), assumed


def _count(d: Mapping[str, Any], prefix: str) -> int:
    """How many numbered modules ``prefix<i>.`` there are (checked to be 0..n-1)."""
    found = {int(m.group(1)) for k in d if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    for i in range(len(found)):
        if i not in found:
            raise KeyError(f"{prefix}{i}")
    return len(found)


def _vision_config(d: Mapping[str, torch.Tensor], assumed: list[str]) -> dict:
    """The ViT and its neck; heads, windows and input size from the RoPE tables."""
    patch_w = d[_TRUNK + "patch_embed.proj.weight"]
    hidden, patch = patch_w.shape[0], patch_w.shape[-1]
    _check_pos_embed(DETECTOR + _POS, d[_POS])
    depth = _count(d, _TRUNK + "blocks.")
    tables = [d[f"{_TRUNK}blocks.{i}.attn.freqs_cis"] for i in range(depth)]
    rows = [t.shape[0] for t in tables]
    grid = math.isqrt(max(rows))
    global_blocks = [i for i, r in enumerate(rows) if r == max(rows)]
    windows = {math.isqrt(r) for r in rows if r != max(rows)}
    if len(windows) > 1 or grid * grid != max(rows):
        raise CheckpointError(
            f"the ViT's RoPE tables (freqs_cis) have {sorted(set(rows))} rows: not one window "
            "size and one square image grid"
        )
    if windows:
        window = windows.pop()
    else:  # every block global: the tables' scale is window / grid (Meta's interpolated RoPE)
        first = tables[global_blocks[0]]
        window = round(float(first[1, 0].angle()) * grid) if grid > 1 else grid
    backbone = dict(
        model_type="sam3_vit_model",
        hidden_size=hidden,
        intermediate_size=d[_TRUNK + "blocks.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=depth,
        num_attention_heads=hidden // (2 * tables[0].shape[1]),
        num_channels=patch_w.shape[1],
        image_size=grid * patch,
        patch_size=patch,
        window_size=window,
        global_attn_indexes=global_blocks,
        pretrain_image_size=math.isqrt(d[_POS].shape[1] - 1) * patch,
        layer_norm_eps=META_LAYER_NORM_EPS,
    )
    scales = _neck_scales(d, assumed)
    return dict(
        backbone_config=backbone,
        fpn_hidden_size=d[_V + "convs.0.conv_1x1.weight"].shape[0],
        scale_factors=scales,
        backbone_feature_sizes=[[int(grid * s)] * 2 for s in scales[:3]],
    )


def _neck_scales(d: Mapping[str, torch.Tensor], assumed: list[str]) -> list[float]:
    """Each FPN level's scale: 4 and 2 show as upsampling weights; 1 and 0.5 have none and
    are taken in Meta's order (1, then 0.5)."""
    levels = _count(d, _V + "convs.")
    scales: list[float] = []
    plain = 1.0
    for i in range(levels):
        if f"{_V}convs.{i}.dconv_2x2_1.weight" in d:
            scales.append(4.0)
        elif f"{_V}convs.{i}.dconv_2x2.weight" in d:
            scales.append(2.0)
        else:
            scales.append(plain)
            plain /= 2
    if scales != META_SCALE_FACTORS and plain != 1.0:
        assumed.append(f"neck scale factors {scales} (levels without weights: 1, then 0.5)")
    return scales


def _text_config(d: Mapping[str, torch.Tensor], stated: dict, assumed: list[str]) -> dict:
    """CLIP's text encoder; heads and special token ids are not in the weights."""
    vocab, width = d[_TEXT + "token_embedding.weight"].shape
    text = dict(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=d[_TEXT + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        projection_dim=d[_TEXT + "text_projection"].shape[1],
        num_hidden_layers=_count(d, _TEXT + "transformer.resblocks."),
        max_position_embeddings=d[_TEXT + "positional_embedding"].shape[0],
        layer_norm_eps=META_LAYER_NORM_EPS,
        hidden_act="gelu",  # Meta's nn.GELU; a CLIPTextConfig built from a dict says quick_gelu
    )
    text["num_attention_heads"] = _heads(
        "text_num_attention_heads", width, META_TEXT_WIDTH, META_TEXT_HEADS, stated, assumed
    )
    if vocab != META_VOCAB:  # CLIP's order: ..., <|startoftext|>, <|endoftext|>
        text.update(bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
        assumed.append(f"start/end token ids {vocab - 2}/{vocab - 1} (the vocabulary's last two)")
    return text


def _heads(name: str, width: int, meta_width: int, meta_heads: int, stated: dict,
           assumed: list[str]) -> int:  # fmt: skip
    """Attention heads the weights do not show: stated, Meta's for Meta's width, else Meta's
    head width (assumed, and said so)."""
    if name in stated:
        return int(stated[name])
    if width == meta_width:
        return meta_heads
    heads = max(1, width // (meta_width // meta_heads))
    while width % heads:
        heads -= 1
    assumed.append(f"{name}={heads}")
    return heads


def _detector_configs(d: Mapping[str, torch.Tensor], stated: dict, assumed: list[str]) -> dict:
    """The geometry encoder, DETR encoder and decoder, and mask decoder sub-configs."""
    width = d[_T + "resizer.weight"].shape[0]
    heads = _heads("num_attention_heads", width, META_D_MODEL, META_HEADS, stated, assumed)
    return dict(
        geometry_encoder_config=dict(
            hidden_size=width,
            num_layers=_count(d, _G + "encode."),
            num_attention_heads=heads,
            intermediate_size=d[_G + "encode.0.linear1.weight"].shape[0],
            roi_size=d[_G + "boxes_pool_project.weight"].shape[-1],
        ),
        detr_encoder_config=dict(
            hidden_size=width,
            num_layers=_count(d, "transformer.encoder.layers."),
            num_attention_heads=heads,
            intermediate_size=d["transformer.encoder.layers.0.linear1.weight"].shape[0],
        ),
        detr_decoder_config=dict(
            hidden_size=width,
            num_layers=_count(d, _D + "layers."),
            num_queries=d[_D + "query_embed.weight"].shape[0],
            # the box relative-position bias has one output per cross-attention head
            num_attention_heads=d[_D + "boxRPB_embed_x.layers.1.weight"].shape[0],
            intermediate_size=d[_D + "layers.0.linear1.weight"].shape[0],
        ),
        mask_decoder_config=dict(
            hidden_size=width,
            num_upsampling_stages=_count(d, _S + "pixel_decoder.conv_layers."),
            num_attention_heads=heads,
        ),
    )


def sam3_model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Sam3Config | None = None, **stated: int
) -> Sam3Model:
    """A ``Sam3Model`` from an original SAM 3 state dict (what it has no place for kept
    aside, :data:`ORIGINAL_STATE_ATTR`).

    Raises:
        CheckpointError: not SAM 3, a tensor missing or left over, or one of the wrong shape
            (each named by its original key).
    """
    if config is None:
        config = sam3_config_from_state_dict(state_dict, **stated)
    hf, aside = sam3_to_hf_state_dict(state_dict)
    _check_against(config, hf)
    model = convert.build_checked(Sam3Model, config, hf, "SAM 3")
    model.__dict__[ORIGINAL_STATE_ATTR] = aside
    return model.eval()


def _check_against(config: Sam3Config, hf: Mapping[str, torch.Tensor]) -> None:
    """Every tensor the architecture needs, none else, each of its shape; errors name the
    original key."""
    with torch.device("meta"):
        twin = Sam3Model(config).state_dict()
    for key, expected in twin.items():
        name = DETECTOR + _original_name(key, twin)[0]
        if key not in hf:
            raise CheckpointError(
                f"not a complete SAM 3 checkpoint: tensor {name!r} is missing (Sam3Model needs "
                f"it as {key!r}); the file is cut short or edited: download or write it again"
            )
        if tuple(hf[key].shape) != tuple(expected.shape):
            raise CheckpointError(
                f"tensor {name!r} does not fit the SAM 3 architecture read off the checkpoint: "
                f"as {key!r} it has shape {tuple(hf[key].shape)}, expected "
                f"{tuple(expected.shape)}"
            )
    for key in hf:
        if key not in twin:
            name = DETECTOR + _original_name(key, hf)[0]
            raise CheckpointError(
                f"tensor {name!r} does not belong to the SAM 3 architecture read off the "
                "checkpoint (no such layer); remove it or check the file's origin"
            )


def load_original(path: str | Path, **stated: int) -> Sam3Model:
    """A ``Sam3Model`` from an original ``sam3.pt`` (read with ``weights_only``).

    The config (and tokenizer) come from the samtune sidecar beside the file when there is
    one, else from the weights and ``stated`` (see :func:`sam3_config_from_state_dict`); an
    :class:`AssumptionWarning` names what had to be assumed.

    Raises:
        MissingFileError: no such file.
        CheckpointError: not a readable checkpoint, or not SAM 3.
    """
    sd = convert.read_family_checkpoint(path, is_sam3_state_dict, "SAM 3")
    return model_from_original(Path(path), sd, **stated)


def model_from_original(path: Path, sd: Mapping[str, torch.Tensor], **stated: int) -> Sam3Model:
    """The model of the original state dict ``sd`` read from ``path``: config and tokenizer
    from the samtune sidecar beside ``path`` if there is one, else as :func:`load_original`
    says."""
    config = convert.sidecar_config(path, "sam3", Sam3Config)
    assumed: list[str] = []
    if config is None or stated:
        config, assumed = _sam3_config(sd, stated)
    model = sam3_model_from_state_dict(sd, config)
    side = convert.read_sidecar(path)
    record = side.get("tokenizer") if side is not None else None
    if record is not None:
        samtune_info(model).tokenizer = tokenizer_from_record(record, convert.sidecar_path(path))
    if assumed or record is None:
        warnings.warn(_assumption_note(path, assumed, record is None), AssumptionWarning, 2)
    return model


def _assumption_note(path: Path, assumed: list[str], no_tokenizer: bool) -> str:
    notes = []
    if assumed:
        notes.append(
            "a SAM 3 checkpoint of a size other than Meta's does not record "
            f"{'; '.join(assumed)}: assumed (state them, or keep samtune's sidecar)"
        )
    if no_tokenizer:
        notes.append(
            "it holds no tokenizer, so the model cannot read phrases until one is attached: "
            "samtune_info(model).tokenizer = samtune.models.text.load_tokenizer('facebook/sam3') "
            "(or `samtune convert` it to a folder and add that repository's tokenizer files)"
        )
    return f"{path.name}: " + "; ".join(notes)


def tokenizer_record(tokenizer: Any) -> dict | None:
    """The sidecar's record of a ``CLIPTokenizer`` (its tokenizers JSON, length limit and
    special tokens), or None for a tokenizer without a tokenizers backend."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return {
        "class": type(tokenizer).__name__,
        "tokenizer_json": json.loads(backend.to_str()),
        "model_max_length": int(tokenizer.model_max_length),
        "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
    }


def tokenizer_from_record(record: Any, where: Path) -> Any:
    """The ``CLIPTokenizer`` a sidecar records (:func:`tokenizer_record`); nothing runs.

    Raises:
        CheckpointError: a record that is not one.
    """
    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer

    try:
        backend = Tokenizer.from_str(json.dumps(record["tokenizer_json"]))
        special = {k: v for k, v in record["special_tokens"].items() if isinstance(v, str)}
        return CLIPTokenizer(
            tokenizer_object=backend, model_max_length=int(record["model_max_length"]), **special
        )
    except Exception as exc:  # tokenizers raises its own exception types for a bad JSON
        raise CheckpointError(
            f"{str(where)!r} holds an invalid tokenizer record ({type(exc).__name__}: it is "
            "not the tokenizer JSON samtune writes); remove the stale sidecar"
        ) from None


def save_sam3_checkpoint(model: Sam3Model, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a ``Sam3Model`` as an original ``sam3.pt`` (a flat ``detector.*``/``tracker.*``
    state dict) plus its samtune sidecar (config, preprocessing, tokenizer).

    The tensors kept aside at conversion (:data:`ORIGINAL_STATE_ATTR`) are written back, so a
    converted ``sam3.pt`` exports to the same tensors. A model built in transformers gets the
    detector only, with a zero class-token row and the RoPE tables Meta's ViT computes
    (:func:`rope_tables`), which ``build_sam3_image_model`` loads (non-strictly: no tracker, no
    point projections, no SAM 2-style neck). Overwrite rules as
    :func:`samtune.models.convert.sam.save_meta_checkpoint`.

    Raises:
        InputError: ``path`` exists and ``overwrite`` is off, or it is not samtune's to replace.
    """
    aside = {**rope_tables(model.config), **model.__dict__.get(ORIGINAL_STATE_ATTR, {})}
    sd = {
        k: v.detach().cpu().contiguous()
        for k, v in hf_to_sam3_state_dict(model.state_dict(), aside).items()
    }
    tokenizer = samtune_info(model).tokenizer
    record = tokenizer_record(tokenizer) if tokenizer is not None else None
    return convert.write_original_checkpoint(
        model, sd, path, overwrite=overwrite, family="sam3", sidecar_extra={"tokenizer": record}
    )


def rope_tables(config: Sam3Config) -> dict[str, torch.Tensor]:
    """The ViT's RoPE tables (``blocks.i.attn.freqs_cis``, complex64) as Meta's ViT computes
    them for ``config``: axial 2D RoPE over a window's grid (windowed blocks) or the image's
    grid with positions scaled by window / grid (global blocks)."""
    vit = config.vision_config.backbone_config
    head_dim = vit.hidden_size // vit.num_attention_heads
    theta = float(vit.rope_parameters["rope_theta"])
    grid = vit.image_size // vit.patch_size
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    tables = {}
    for i in range(vit.num_hidden_layers):
        windowed = i not in vit.global_attn_indexes
        side = vit.window_size if windowed else grid
        scale = 1.0 if windowed else vit.window_size / grid
        t = torch.arange(side * side, dtype=torch.float32)
        xy = [(t % side).float() * scale, torch.div(t, side, rounding_mode="floor").float() * scale]
        angles = [torch.outer(axis, freqs) for axis in xy]
        table = torch.cat([torch.polar(torch.ones_like(a), a) for a in angles], dim=-1)
        tables[f"{DETECTOR}{_TRUNK}blocks.{i}.attn.freqs_cis"] = table
    return tables
