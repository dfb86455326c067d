"""Meta's original checkpoint formats, one module per family behind one dispatch.

:mod:`.sam` (segment-anything ``.pth``), :mod:`.hq` (segment_anything_hq ``.pth``),
:mod:`.sam2` (sam2 ``.pt``) and :mod:`.sam3` (sam3 ``.pt``) each convert one family's original state dict to and from its
transformers model, exactly (tests hold each against Meta's own package). This package's
:func:`load_original_checkpoint` recognises a checkpoint's family from its keys; :func:`save_original_checkpoint`
writes a model in its family's format. Both read or write samtune's JSON sidecar, which
carries what an original checkpoint cannot (architecture numbers, preprocessing).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import SamModel

from ...errors import AssumptionWarning, CheckpointError, ConfigError, InputError
from ..family import SAM2, SAM3, SAM_HQ, family_of
from ..identity import PreprocessConfig, samtune_info
from . import hq, sam, sam2, sam3

#: Families whose original (Meta) checkpoint format samtune does not convert, with the
#: name of the original code: load them from transformers folders or hub ids.
NO_ORIGINAL_FORMAT = {"sam3-tracker": "SAM 3's tracker (Meta's sam3 package)", "edgetam": "EdgeTAM"}


def load_original_checkpoint(path: Path, stated: dict) -> torch.nn.Module:
    """An original-format checkpoint file, dispatched on its keys: SAM-HQ, SAM 2, SAM 3, then
    Meta's SAM.

    This is the one place that recognises an original checkpoint's family."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(path)
        except Exception as exc:
            raise CheckpointError(
                f"{str(path)!r} is not a readable safetensors file: {exc}"
            ) from None
    else:
        sd = sam.read_torch_checkpoint(path)
    sd = sam.strip_wrapper_prefix(sd)
    if hq.is_hq_state_dict(sd):
        return _with_sidecar_preprocess(hq.model_from_original(path, sd, **(stated or {})), path)
    if sam2.is_sam2_state_dict(sd):
        if stated:
            raise ConfigError(
                f"{str(path)!r} is a SAM 2 checkpoint; {', '.join(stated)} only apply to SAM "
                "and SAM-HQ checkpoints (SAM 2's decoder always has 8 heads)"
            )
        return _with_sidecar_preprocess(sam2.model_from_original(path, sd), path)
    if sam3.is_sam3_state_dict(sd):
        if stated:
            raise ConfigError(
                f"{str(path)!r} is a SAM 3 checkpoint; {', '.join(stated)} only apply to SAM "
                "and SAM-HQ checkpoints (a SAM 3 sidecar, or samtune.models.convert.sam3."
                "load_original, states what SAM 3's weights do not record)"
            )
        return _with_sidecar_preprocess(sam3.model_from_original(path, sd), path)
    if sam.is_meta_state_dict(sd):
        return _model_from_meta(path, sd, stated)
    if stated:
        raise ConfigError(
            f"{str(path)!r} is not a Meta checkpoint; {', '.join(stated)} do not apply"
        )
    raise CheckpointError(
        f"{str(path)!r} is not a SAM checkpoint: expected Meta segment-anything keys "
        f"('image_encoder.*', 'prompt_encoder.*', 'mask_decoder.*'), SAM-HQ's (the same and "
        f"'mask_decoder.hf_token.weight'), SAM 2's ('image_encoder.trunk.*', "
        f"'sam_mask_decoder.*') or SAM 3's ('detector.*', 'tracker.*'), found keys like "
        f"{sorted(sd)[:3]}"
    )


def _model_from_meta(path: Path, sd: dict, stated: dict) -> SamModel:
    """A Meta checkpoint: architecture from its sidecar, from the user, or Meta's (said so)."""
    import warnings

    from transformers import SamConfig

    side = sam.read_sidecar(path)
    if side is not None and not stated:
        try:
            config = SamConfig(**side["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{str(sam.sidecar_path(path))!r} holds an invalid config ({exc})"
            ) from None
        model = sam.sam_model_from_meta_state_dict(sd, config)
        if isinstance(side.get("preprocess"), dict):
            samtune_info(model).preprocess = PreprocessConfig.from_dict(side["preprocess"])
        return model
    if not stated:
        warnings.warn(
            f"{path.name}: a Meta checkpoint does not record the mask decoder's attention heads "
            f"or LayerNorm epsilon, and it has no {sam.SIDECAR_SUFFIX} sidecar; assumed "
            f"Meta's ({sam.META_DECODER_HEADS} heads, eps "
            f"{sam.META_DECODER_LAYER_NORM_EPS:g}). If it was built otherwise, state them: "
            f"samtune convert {path.name} OUT --to hf --decoder-heads N --decoder-eps E",
            AssumptionWarning,
            stacklevel=5,
        )
    return sam.sam_model_from_meta_state_dict(sd, **stated)


def _with_sidecar_preprocess(model, path: Path):
    """Record the preprocessing a samtune sidecar beside ``path`` declares, if any."""
    side = sam.read_sidecar(path)
    if side is not None and isinstance(side.get("preprocess"), dict):
        samtune_info(model).preprocess = PreprocessConfig.from_dict(side["preprocess"])
    return model


def save_original_checkpoint(
    model: torch.nn.Module, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``model`` in its family's original format, with samtune's sidecar: a Meta
    ``segment_anything`` ``.pth`` (SAM), a ``segment_anything_hq`` ``.pth`` (SAM-HQ), a
    ``sam2`` ``.pt`` (SAM 2) or a ``sam3`` ``.pt`` (SAM 3). :func:`load_model` reads each back to the same fingerprint.

    Raises:
        InputError: ``path`` exists and may not be replaced (see
            :func:`samtune.sam.save_meta_checkpoint`).
    """
    family = family_of(model)
    if family.name in NO_ORIGINAL_FORMAT:
        raise InputError(
            f"samtune has no converter to {NO_ORIGINAL_FORMAT[family.name]}'s original "
            f"checkpoint format; this model is {family.name} ({type(model).__name__}): export "
            f"it as 'hf' (a merged {type(model).__name__} folder) or keep the adapter file"
        )
    if family is SAM_HQ:
        return hq.save_hq_checkpoint(model, path, overwrite=overwrite)
    if family is SAM2:
        return sam2.save_sam2_checkpoint(model, path, overwrite=overwrite)
    if family is SAM3:
        return sam3.save_sam3_checkpoint(model, path, overwrite=overwrite)
    return sam.save_meta_checkpoint(model, path, overwrite=overwrite)
