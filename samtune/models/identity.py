"""What samtune records about a model besides its config and weights, and how it names it.

One home for a model's identity: the :class:`SamtuneInfo` record (source, family,
preprocessing, base fingerprint, strategy), its preprocessing (:class:`PreprocessConfig`,
:func:`preprocess_config`) and its fingerprints (:func:`architecture`, :func:`fingerprint`,
:func:`weights_fingerprint`, :func:`base_fingerprint`). It imports no loader or converter, so
both :mod:`samtune.models` (which re-exports every name) and the converters use it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError
from .family import family_of

# SAM's normalisation (ImageNet statistics in 0-255 pixel units, as Meta and HF use them).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are prepared for a model: resize, normalise, pad bottom-right to a square.

    ``image_size`` is the side of the square model input. SAM and SAM-HQ resize the longest
    side to it and pad; SAM 2 (``square=True``) stretches the image to the square, no padding.
    ``mean``/``std`` are per-channel, in 0-255 pixel units.
    """

    image_size: int = 1024
    mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    std: tuple[float, float, float] = SAM_PIXEL_STD
    square: bool = False

    def to_dict(self) -> dict:
        d = {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}
        if self.square:  # absent for SAM, so SAM's fingerprints and cache keys stay as they were
            d["square"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        square = bool(d.get("square", False))
        return cls(int(d["image_size"]), tuple(d["mean"]), tuple(d["std"]), square)


@dataclass
class SamtuneInfo:
    """Everything samtune knows about a model beyond its config and weights.

    One record per model, attached as ``model.samtune_info`` (like timm's ``pretrained_cfg``);
    :func:`samtune_info` reads it, creating an empty one for a model samtune did not load.
    A deep copy of the model copies it.

    Attributes:
        source: what the model was loaded from (preset, path or hub id; "" if unknown).
        family: its SAM family (``sam``, ``sam-hq``, ``sam2``; :mod:`samtune.models.family`).
        preprocess: the preprocessing its files declare (a ``preprocessor_config.json``, a
            Meta sidecar); ``None`` means SAM's mean and std at the config's image size.
        base_fingerprint: :func:`fingerprint` of the untouched base, taken before training
            changes anything (:func:`base_fingerprint`).
        strategy: the :class:`~samtune.strategies.Strategy` applied to it, if any.
        tokenizer: a family with a text encoder (SAM 3): the tokenizer of its phrases (a
            ``transformers.CLIPTokenizer``), from its folder or hub repository, or built with
            a preset; ``None`` when none came with the model.
    """

    source: str = ""
    family: str = ""
    preprocess: PreprocessConfig | None = None
    base_fingerprint: str | None = None
    strategy: Any = None
    tokenizer: Any = None


INFO_ATTR = "samtune_info"


def samtune_info(model: torch.nn.Module) -> SamtuneInfo:
    """The :class:`SamtuneInfo` record of ``model`` (attached on first use)."""
    info = model.__dict__.get(INFO_ATTR)
    if info is None:
        try:
            family = family_of(model).name
        except CheckpointError:  # not a SAM-family model (a wrapper, a bare module)
            family = ""
        info = SamtuneInfo(family=family)
        model.__dict__[INFO_ATTR] = info
    return info


def preprocess_config(model: torch.nn.Module) -> PreprocessConfig:
    """The preprocessing that matches ``model``: what its files declare, else its family's
    (image size from the config, the family's processor's mean and std, ``Family.pixel_mean``
    and ``pixel_std``; SAM 2 and its kin stretch to the square)."""
    declared = samtune_info(model).preprocess
    if declared is not None:
        return declared
    family = family_of(model)
    return PreprocessConfig(
        image_size=family.image_size(model.config),
        mean=family.pixel_mean,
        std=family.pixel_std,
        square=family.square_resize,
    )


# --------------------------------------------------------------------------- fingerprints


# Config keys that do not change what a model computes once its weights are loaded: the
# generic PretrainedConfig switches, initialisation settings, and values derived from others.
_NOT_ARCHITECTURE = {
    "_name_or_path",
    "architectures",
    "chunk_size_feed_forward",
    "dtype",
    "torch_dtype",
    "id2label",
    "label2id",
    "is_encoder_decoder",
    "output_attentions",
    "output_hidden_states",
    "problem_type",
    "return_dict",
    "transformers_version",
    "tie_word_embeddings",
    "initializer_range",  # initialisation only
    "scale",  # initialisation of the positional table
    "mlp_ratio",  # mlp_dim is what the layers use
    "image_embedding_size",  # image_size // patch_size
}


def _canonical(value):
    if isinstance(value, dict):
        return {
            k: _canonical(v)
            for k, v in sorted(value.items())
            if k not in _NOT_ARCHITECTURE and not k.startswith("_")
        }
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def architecture(model_or_config) -> dict:
    """What defines a model's computation besides its weights: its config, canonicalised.

    Every config field counts except the generic ``PretrainedConfig`` switches, initialisation
    settings and derived values (:data:`_NOT_ARCHITECTURE`); floats are compared to 6
    significant digits. For a ``SamModel`` the preprocessing (image size, mean, std) is
    included, since it changes every output too.
    """
    config = getattr(model_or_config, "config", model_or_config)
    arch = _canonical(config.to_dict())
    if hasattr(model_or_config, "vision_encoder") and hasattr(model_or_config, "config"):
        arch["preprocess"] = _canonical(preprocess_config(model_or_config).to_dict())
    return arch


def weights_fingerprint(model_or_state_dict: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """A stable hex digest of the weights alone (names, shapes and values).

    Values are hashed after rounding to bfloat16, so the same weights loaded in fp32, fp16 or
    bf16 share a fingerprint, while any real change to a weight changes it.
    """
    if isinstance(model_or_state_dict, torch.nn.Module):
        sd = model_or_state_dict.state_dict()
    else:
        sd = model_or_state_dict
    return _hash_weights(hashlib.sha256(), sd).hexdigest()[:16]


def _hash_weights(h, sd):
    for name in sorted(sd):
        t = sd[name]
        if not torch.is_tensor(t):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        # reshape: a 0-dim tensor (a batch norm's counter) cannot be viewed as bytes
        data = t.detach().to("cpu", torch.bfloat16).reshape(-1).contiguous().view(torch.uint8)
        h.update(data.numpy().tobytes())
    return h


def fingerprint(model_or_state_dict: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """A stable hex digest of a model: its architecture (:func:`architecture`) and weights.

    Two models share a fingerprint only if they compute the same thing: same config (decoder
    heads, LayerNorm epsilons, preprocessing...) and the same weights. Weights are hashed after
    rounding to bfloat16, so fp32, fp16 and bf16 copies share it. A plain state dict carries
    no architecture; its fingerprint is :func:`weights_fingerprint`.
    """
    if not isinstance(model_or_state_dict, torch.nn.Module) or not hasattr(
        getattr(model_or_state_dict, "config", None), "to_dict"
    ):
        return weights_fingerprint(model_or_state_dict)
    h = hashlib.sha256()
    h.update(json.dumps(architecture(model_or_state_dict), sort_keys=True).encode())
    return _hash_weights(h, model_or_state_dict.state_dict()).hexdigest()[:16]


def base_fingerprint(model: torch.nn.Module) -> str:
    """Fingerprint of the base weights, taken the first time it is asked (before training)."""
    info = samtune_info(model)
    if info.base_fingerprint is None:
        info.base_fingerprint = fingerprint(model)
    return info.base_fingerprint


def model_source(model: torch.nn.Module) -> str:
    """The source string the model was loaded from (hub id, path or preset), if known."""
    src = samtune_info(model).source
    if src:
        return src
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", "") or "unknown"


__all__ = [
    "INFO_ATTR",
    "SAM_PIXEL_MEAN",
    "SAM_PIXEL_STD",
    "PreprocessConfig",
    "SamtuneInfo",
    "architecture",
    "base_fingerprint",
    "fingerprint",
    "model_source",
    "preprocess_config",
    "samtune_info",
    "weights_fingerprint",
]
