"""SAM-HQ's original ``sam_hq_vit_*.pth`` state dicts <-> ``transformers.SamHQModel``.

SAM-HQ (``segment_anything_hq``) keeps SAM's image encoder, prompt encoder and two-way
transformer, so those keys convert as in :mod:`samtune.models.convert.sam`; its mask decoder adds the HQ
output token (``hf_token``), its MLP (``hf_mlp``) and the feature-fusion convolutions
(``compress_vit_feat``, ``embedding_encoder``, ``embedding_maskfeature``), renamed here.
Conversion is pure renaming, so original -> HF -> original reproduces every tensor exactly.

The architecture is read off the tensor shapes, as for SAM; the mask decoder's attention heads
and LayerNorm epsilon, which shapes do not show, are SAM-HQ's fixed choice (8, 1e-5) unless a
samtune sidecar or the caller says otherwise.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import SamHQConfig, SamHQModel

from ...errors import AssumptionWarning, CheckpointError
from . import sam as convert

# (original module, HF module) of the HQ-only parts of the mask decoder.
_HQ_MODULES = {
    "hf_token": "hq_token",
    "compress_vit_feat.0": "compress_vit_conv1",
    "compress_vit_feat.1": "compress_vit_norm",
    "compress_vit_feat.3": "compress_vit_conv2",
    "embedding_encoder.0": "encoder_conv1",
    "embedding_encoder.1": "encoder_norm",
    "embedding_encoder.3": "encoder_conv2",
    "embedding_maskfeature.0": "mask_conv1",
    "embedding_maskfeature.1": "mask_norm",
    "embedding_maskfeature.3": "mask_conv2",
}
_HQ_MODULES_HF = {hf: orig for orig, hf in _HQ_MODULES.items()}
_DECODER = "mask_decoder."
_HQ_MLP_ORIG = re.compile(r"^mask_decoder\.hf_mlp\.layers\.(\d+)\.(weight|bias)$")
_HQ_MLP_HF = re.compile(
    r"^mask_decoder\.hq_mask_mlp\.(proj_in|proj_out|layers\.\d+)\.(weight|bias)$"
)
_MARKER = "mask_decoder.hf_token.weight"


def is_hq_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an original SAM-HQ state dict (SAM's keys plus the HQ token)."""
    sd = convert.strip_wrapper_prefix(state_dict)
    return convert.is_meta_state_dict(sd) and _MARKER in sd


def _split_module(key: str) -> tuple[str, str] | None:
    """``(module, param)`` of a ``mask_decoder.<module>.<param>`` key; None for other keys."""
    if not key.startswith(_DECODER):
        return None
    module, _, param = key[len(_DECODER) :].rpartition(".")
    return module, param


def hq_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original SAM-HQ state dict to ``SamHQModel`` keys (tensors shared).

    Raises:
        CheckpointError: not a SAM-HQ state dict.
    """
    sd = convert.strip_wrapper_prefix(state_dict)
    if not is_hq_state_dict(sd):
        raise CheckpointError(
            f"expected a SAM-HQ state dict (keys 'image_encoder.*', '{_MARKER}'), found keys "
            f"like {sorted(sd)[:3]}; pass a checkpoint such as sam_hq_vit_b.pth"
        )
    depth = _mlp_depth(sd, _HQ_MLP_ORIG, meta=True)
    base, out = {}, {}
    for key, value in sd.items():
        parts = _split_module(key)
        m = _HQ_MLP_ORIG.match(key)
        if m:
            name = convert.mlp_layer_to_hf(int(m.group(1)), depth)
            out[f"mask_decoder.hq_mask_mlp.{name}.{m.group(2)}"] = value
        elif parts and parts[0] in _HQ_MODULES:
            out[f"{_DECODER}{_HQ_MODULES[parts[0]]}.{parts[1]}"] = value
        else:
            base[key] = value
    return {**convert.meta_to_hf_state_dict(base), **out}


def hf_to_hq_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``SamHQModel`` state dict to original SAM-HQ keys (tensors shared).

    Raises:
        CheckpointError: not a ``SamHQModel`` state dict.
    """
    sd = dict(state_dict)
    if "mask_decoder.hq_token.weight" not in sd:
        raise CheckpointError(
            "expected a Hugging Face SamHQModel state dict (key 'mask_decoder.hq_token.weight'), "
            f"found keys like {sorted(sd)[:3]}"
        )
    depth = _mlp_depth(sd, _HQ_MLP_HF, meta=False)
    base, out = {}, {}
    for key, value in sd.items():
        parts = _split_module(key)
        m = _HQ_MLP_HF.match(key)
        if m:
            index = convert.mlp_layer_to_meta(m.group(1), depth)
            out[f"mask_decoder.hf_mlp.layers.{index}.{m.group(2)}"] = value
        elif parts and parts[0] in _HQ_MODULES_HF:
            out[f"{_DECODER}{_HQ_MODULES_HF[parts[0]]}.{parts[1]}"] = value
        else:
            base[key] = value
    return {**convert.hf_to_meta_state_dict(base), **out}


def _mlp_depth(sd: Mapping[str, torch.Tensor], pattern: re.Pattern[str], meta: bool) -> int:
    """Number of linear layers of the HQ mask MLP."""
    names = {m.group(1) for k in sd if (m := pattern.match(k))}
    if meta:
        return max((int(n) for n in names), default=-1) + 1
    return 2 + sum(n.startswith("layers.") for n in names)


def hq_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    decoder_num_heads: int = convert.META_DECODER_HEADS,
    decoder_layer_norm_eps: float = convert.META_DECODER_LAYER_NORM_EPS,
) -> SamHQConfig:
    """Read the architecture of an original SAM-HQ checkpoint off its tensor shapes.

    As for SAM (:func:`samtune.models.convert.sam.config_from_meta_state_dict`), the mask decoder's
    attention heads and LayerNorm epsilon cannot be read off shapes and default to (8, 1e-5);
    the encoder width the HQ fusion reads (``vit_dim``) is the input width of
    ``compress_vit_feat``.

    Raises:
        CheckpointError: not a complete SAM-HQ state dict.
    """
    sd = convert.strip_wrapper_prefix(state_dict)
    if not is_hq_state_dict(sd):
        raise CheckpointError(f"not a SAM-HQ state dict: tensor {_MARKER!r} is missing")
    vision, prompt, decoder = convert.meta_config_parts(
        sd, decoder_num_heads=decoder_num_heads, decoder_layer_norm_eps=decoder_layer_norm_eps
    )
    try:
        decoder["vit_dim"] = sd["mask_decoder.compress_vit_feat.0.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(
            f"not a complete SAM-HQ state dict: tensor {exc.args[0]!r} is missing"
        ) from None
    return SamHQConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )


_KEYS_OUT = "_samtune_two_way_image_out"
_KEYS_SOURCE = "_samtune_two_way_source"


def _keep_two_way_image_output(transformer, _args, output) -> None:
    transformer.__dict__[_KEYS_OUT] = output[1]


def _upscale_two_way_output(conv, args):
    keys = conv.__dict__[_KEYS_SOURCE].__dict__.pop(_KEYS_OUT, None)
    if keys is None:
        return None
    # (batch, point_batch, h*w, channels) -> (batch*point_batch, channels, h, w), as SamMaskDecoder
    return (keys.transpose(-1, -2).reshape(args[0].shape),) + tuple(args[1:])


def fix_hq_decoder(model: SamHQModel) -> SamHQModel:
    """Make ``model``'s mask decoder upscale what its two-way transformer returns.

    transformers 5.24's ``SamHQMaskDecoder.forward`` discards the transformer's image output
    and upscales the (transposed) image embedding from before it, unlike
    ``segment_anything_hq`` (and unlike transformers' own ``SamMaskDecoder``), so its mask
    logits differ from the reference for every checkpoint. Two hooks put the transformer's
    output back in front of ``upscale_conv1``; no weight or name changes, and where
    transformers computes it right the hook passes the same tensor on. Idempotent.
    """
    decoder = model.mask_decoder
    conv = decoder.upscale_conv1
    if _KEYS_SOURCE not in conv.__dict__:
        conv.__dict__[_KEYS_SOURCE] = decoder.transformer  # a plain reference, not a submodule
        decoder.transformer.register_forward_hook(_keep_two_way_image_output)
        conv.register_forward_pre_hook(_upscale_two_way_output)
    return model


def hq_model_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: SamHQConfig | None = None, **config_overrides
) -> SamHQModel:
    """Build a ``SamHQModel`` from an original SAM-HQ state dict.

    Args:
        state_dict: original ``segment_anything_hq`` keys (a wrapper prefix is stripped).
        config: the architecture; default: read off the shapes
            (:func:`hq_config_from_state_dict` with ``config_overrides``).

    Raises:
        CheckpointError: not SAM-HQ, or the tensors do not fit the architecture.
    """
    if config is None:
        config = hq_config_from_state_dict(state_dict, **config_overrides)
    model = convert.build_checked(SamHQModel, config, hq_to_hf_state_dict(state_dict), "SAM-HQ")
    return fix_hq_decoder(model).eval()


def load_original(path: str | Path, **config_overrides) -> SamHQModel:
    """A ``SamHQModel`` from an original ``sam_hq_vit_*.pth`` (read with ``weights_only``).

    The config comes from the samtune sidecar beside the file when there is one, else from
    the shapes and ``config_overrides`` (with an :class:`AssumptionWarning` when the decoder's
    heads and epsilon had to be assumed).

    Raises:
        MissingFileError: no such file.
        CheckpointError: not a readable checkpoint, or not SAM-HQ.
    """
    sd = convert.read_family_checkpoint(path, is_hq_state_dict, "SAM-HQ")
    return model_from_original(Path(path), sd, **config_overrides)


def model_from_original(path: Path, sd: Mapping[str, torch.Tensor], **config_overrides):
    """The model of an original state dict ``sd`` read from ``path``: config from the samtune
    sidecar beside ``path`` if there is one, else as :func:`load_original` says."""
    config = convert.sidecar_config(path, "sam_hq", SamHQConfig)
    if config is not None and not config_overrides:
        return hq_model_from_state_dict(sd, config)
    if not config_overrides:
        warnings.warn(
            f"{path.name}: a SAM-HQ checkpoint does not record the mask decoder's attention "
            f"heads or LayerNorm epsilon; assumed SAM-HQ's ({convert.META_DECODER_HEADS} heads, "
            f"eps {convert.META_DECODER_LAYER_NORM_EPS:g})",
            AssumptionWarning,
            stacklevel=2,
        )
    return hq_model_from_state_dict(sd, **config_overrides)


def save_hq_checkpoint(model: SamHQModel, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a ``SamHQModel`` as an original SAM-HQ ``.pth`` plus its samtune sidecar.

    The ``.pth`` holds exactly the original keys (``segment_anything_hq`` builders load it);
    the sidecar records what the format cannot. Overwrite rules as
    :func:`samtune.models.convert.sam.save_meta_checkpoint`.

    Raises:
        InputError: ``path`` exists and ``overwrite`` is off, or it is not samtune's to replace.
    """
    sd = {
        k: v.detach().cpu().contiguous() for k, v in hf_to_hq_state_dict(model.state_dict()).items()
    }
    return convert.write_original_checkpoint(model, sd, path, overwrite=overwrite, family="sam_hq")
