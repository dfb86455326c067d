"""Load a SAM-family model (``SamModel``, ``SamHQModel``, ``Sam2Model``) from whatever the user
points at.

Sources, tried in this order:

1. a preset name (:data:`PRESETS`): ``tiny`` / ``tiny-hq`` / ``tiny-sam2`` (tiny random SAM,
   SAM-HQ and SAM 2 for tests), ``demo`` (the small pretrained demo model bundled with
   samtune), ``vit-b-random`` / ``vit-l-random`` / ``vit-h-random`` (real sizes, random
   weights, for benchmarks);
2. a local path: a folder written by ``save_pretrained`` (its ``config.json`` names the
   family), a Meta ``segment_anything`` checkpoint (``sam_vit_b_01ec64.pth`` ...) or a
   ``.safetensors`` file of either layout;
3. a Hugging Face hub id (``facebook/sam-vit-base``, ``facebook/sam2.1-hiera-small``, any
   SAM, SAM-HQ or SAM 2 repository; the family comes from its config).

Which family a model, config or folder is: :mod:`samtune.models.family`.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import PretrainedConfig, SamModel

from ..errors import CheckpointError, ConfigError, MissingFileError
from ..io import read_json, read_json_object
from . import hub, text
from .convert import hq as convert_hq
from .convert import load_original_checkpoint
from .family import SAM_HQ, family_of, family_of_model_type
from .identity import (
    PreprocessConfig,
    base_fingerprint,
    model_source,
    preprocess_config,
    samtune_info,
)
from .presets import (
    DEFAULT_HUB_MODEL,
    PRESETS,
)

# --------------------------------------------------------------------------- presets


# --------------------------------------------------------------------------- loading


def check_model_source(source: str | os.PathLike) -> None:
    """MissingFileError, before anything is read, when ``source`` is meant as a local path
    (see :func:`samtune.models.hub.looks_like_local_path`) and does not exist."""
    source_str = os.fspath(source)
    if source_str in PRESETS or Path(source_str).expanduser().exists():
        return
    if hub.looks_like_local_path(source_str):
        raise MissingFileError(
            f"model path {source_str!r} does not exist; give an existing folder or "
            f"checkpoint, a hub id such as {DEFAULT_HUB_MODEL!r}, or a preset "
            f"({', '.join(PRESETS)})"
        )


def load_model(
    source: str | os.PathLike = DEFAULT_HUB_MODEL,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    revision: str | None = None,
    decoder_num_heads: int | None = None,
    decoder_layer_norm_eps: float | None = None,
) -> SamModel:
    """Load a ``SamModel`` from a preset, a local folder or checkpoint, or a hub id.

    Args:
        source: preset name, path, or Hugging Face hub id (see the module docstring).
        seed: seed for presets with random weights.
        dtype: cast the weights to this dtype (default: keep them as stored, fp32 for presets).
        device: move the model there.
        revision: hub revision (branch, tag or commit) for hub ids.
        decoder_num_heads: for a Meta checkpoint without a samtune sidecar, the mask
            decoder's attention heads, which Meta's format does not record (default: Meta's 8,
            with a note that it was assumed). Not accepted for other sources, whose config
            records it.
        decoder_layer_norm_eps: likewise the mask decoder's LayerNorm epsilon (Meta's 1e-5).

    Returns:
        The model in eval mode; :func:`preprocess_config` gives its preprocessing and
        :func:`base_fingerprint` the fingerprint of the weights as loaded.

    Raises:
        MissingFileError: a path that does not exist.
        CheckpointError: a file or folder that is not a SAM checkpoint, whose config does not
            match its weights, or whose weights hold NaN or infinity.
        OfflineError: a hub id that cannot be fetched (no network, ``HF_HUB_OFFLINE=1``).
    """
    source_str = os.fspath(source)
    stated = {
        k: v
        for k, v in (
            ("decoder_num_heads", decoder_num_heads),
            ("decoder_layer_norm_eps", decoder_layer_norm_eps),
        )
        if v is not None
    }
    path = Path(source_str).expanduser()
    if stated and not (source_str not in PRESETS and path.is_file()):
        raise ConfigError(
            f"{', '.join(stated)} only apply to Meta .pth/.safetensors checkpoints (whose format "
            f"does not record them); {source_str!r} records its own architecture"
        )
    check_model_source(source_str)
    if source_str in PRESETS:
        model = PRESETS[source_str][1](seed)
    else:
        if path.exists():
            model = _load_local(path, stated)
        else:
            model = _load_hub(source_str, revision)
        _check_finite(model, source_str)
    if family_of(model) is SAM_HQ:  # however it was built: see convert_hq.fix_hq_decoder
        convert_hq.fix_hq_decoder(model)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    samtune_info(model).source = source_str
    model.eval()
    return model


def _check_finite(model: torch.nn.Module, source: str) -> None:
    """Refuse weights holding NaN or infinity: every output would be NaN, and an evaluation
    would report NaN as if it were a score."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(
                f"model {source!r}: tensor {name!r} holds NaN or infinite values; the "
                "checkpoint is corrupt or was saved from a run that diverged"
            )


def _load_local(path: Path, stated: dict | None = None) -> torch.nn.Module:
    if path.is_dir():
        return _load_folder(path)
    return load_original_checkpoint(path, stated or {})


def _load_folder(path: Path) -> torch.nn.Module:
    """A ``save_pretrained`` folder of any SAM family (its ``config.json`` names it)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"folder {str(path)!r} has no config.json; expected a folder written by "
            "save_pretrained (SamModel, SamHQModel, Sam2Model, Sam3TrackerModel, EdgeTamModel) "
            "or `samtune convert`"
        )
    model_type = read_json_object(config_file, CheckpointError).get("model_type")
    family = family_of_model_type(model_type, f"folder {str(path)!r}")
    family.check_requirements()
    files = _safetensors_files(path)
    try:
        config = family.config_class.from_json_file(config_file)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{str(config_file)!r} holds an invalid config: {exc}") from None
    _check_config_fits_weights(family.model_class, config, files, config_file)
    preprocess = _processor_settings(path, family, config)
    model, info = family.model_class.from_pretrained(
        path, output_loading_info=True, use_safetensors=True
    )
    _check_loading_info(info, str(path))
    _attach_legacy_preprocess(model)
    if preprocess is not None:
        samtune_info(model).preprocess = preprocess
    if family.has_text and text.has_tokenizer_files(path):
        samtune_info(model).tokenizer = text.load_tokenizer(path)
    return model


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _safetensors_files(path: Path) -> list[Path]:
    """The folder's ``*.safetensors`` weights; a folder with only pickle weights
    (``pytorch_model.bin``) is refused: unpickling a file can run code."""
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"folder {str(path)!r} holds its weights only as {pickles[0]!r}, a pickle file, "
            "which samtune does not load (unpickling can run code); convert it to safetensors "
            "where you trust it (transformers' save_pretrained writes model.safetensors)"
        )
    raise CheckpointError(
        f"folder {str(path)!r} has a config.json but no model.safetensors; expected a folder "
        "written by save_pretrained or `samtune convert`"
    )


def _check_config_fits_weights(model_class, config, files: list[Path], where: Path) -> None:
    """Compare the shapes ``config`` gives every tensor (built on the ``meta`` device: no
    memory) with those the safetensors headers record (read without loading), so a config
    that does not match its weights, or asks for terabytes, is refused before loading."""
    from safetensors import safe_open

    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118
                    shapes[key] = (tuple(fh.get_slice(key).get_shape()), file.name)
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(
                f"{str(file)!r} is not a readable safetensors file ({type(exc).__name__}: {exc})"
            ) from None
    with torch.device("meta"):
        twin = model_class(config)
    for name, tensor in twin.state_dict().items():
        found, file_name = shapes.get(name, (None, ""))
        if found is not None and found != tuple(tensor.shape):
            raise CheckpointError(
                f"{str(where)!r} does not match its weights: tensor {name!r} has shape {found} "
                f"in {file_name}, the config gives {tuple(tensor.shape)}; the config was "
                "edited or belongs to another model"
            )


def _check_loading_info(info: dict, where: str) -> None:
    missing = [k for k in info.get("missing_keys", []) if "shared_embedding" not in k]
    if missing or info.get("mismatched_keys"):
        raise CheckpointError(
            f"{where!r} does not match its own config: missing {sorted(missing)[:3]}, "
            f"mismatched {list(info.get('mismatched_keys', []))[:3]}; the weights are incomplete"
        )


def _image_processor_config(path: Path) -> dict | None:
    """The image processor's settings saved in the folder ``path``, if any."""
    for name, key in (
        ("preprocessor_config.json", None),
        ("processor_config.json", "image_processor"),
    ):
        proc = path / name
        if not proc.is_file():
            continue
        cfg = read_json(proc, error=CheckpointError)
        cfg = cfg.get(key) if key and isinstance(cfg, dict) else cfg
        if isinstance(cfg, dict):
            return cfg
    return None


def _attach_legacy_preprocess(model: SamModel) -> None:
    """The ``samtune_preprocess`` entry samtune 0.1 wrote into ``config.json``."""
    legacy = model.config.__dict__.pop("samtune_preprocess", None)
    if legacy:
        samtune_info(model).preprocess = PreprocessConfig.from_dict(legacy)


def _processor_settings(path: Path, family, config) -> PreprocessConfig | None:
    """The preprocessing a folder declares: its ``preprocessor_config.json``, or the
    ``image_processor`` entry of the ``processor_config.json`` a transformers 5 processor
    writes; ``None`` when it declares none.

    Raises:
        CheckpointError: a field of the wrong type or value, named.
    """
    cfg = _image_processor_config(path)
    if cfg is None:
        return None
    where = f"image processor settings in {str(path)!r}"
    # SamImageProcessor: {"longest_edge": S} (+ padding); Sam2ImageProcessor: {"height": S,
    # "width": S}, stretched, no padding.
    size_spec = cfg.get("size", {})
    if not isinstance(size_spec, dict):
        raise CheckpointError(
            f"{where}: 'size' must be an object such as {{\"longest_edge\": 1024}}, found "
            f"{size_spec!r}"
        )
    size = size_spec.get("longest_edge", size_spec.get("height", family.image_size(config)))
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise CheckpointError(f"{where}: 'size' must give a positive integer, found {size!r}")
    rescale = cfg.get("do_rescale", True)
    if not isinstance(rescale, bool):
        raise CheckpointError(f"{where}: 'do_rescale' must be true or false, found {rescale!r}")
    scale = 255.0 if rescale else 1.0
    mean = _channels(cfg, "image_mean", [m / 255 for m in family.pixel_mean], where, positive=False)
    std = _channels(cfg, "image_std", [s / 255 for s in family.pixel_std], where, positive=True)
    return PreprocessConfig(
        size,
        tuple(m * scale for m in mean),
        tuple(s * scale for s in std),
        square=family.square_resize,
    )


def _channels(cfg: dict, key: str, default: list, where: str, *, positive: bool) -> list:
    """Three finite numbers (``positive``: above zero) under ``key``, else a named error."""
    import math

    value = cfg.get(key, default)
    ok = (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) and (v > 0 if positive else True) for v in value)
    )
    if not ok:
        kind = "positive finite numbers" if positive else "finite numbers"
        raise CheckpointError(
            f"{where}: {key!r} must be 3 {kind} (one per RGB channel), found {value!r}"
        )
    return value


def _load_hub(repo_id: str, revision: str | None) -> torch.nn.Module:
    from huggingface_hub.errors import RepositoryNotFoundError

    def fetch(local_only: bool):
        config, _ = PretrainedConfig.get_config_dict(
            repo_id, revision=revision, local_files_only=local_only
        )
        family = family_of_model_type(config.get("model_type"), f"hub repository {repo_id!r}")
        family.check_requirements()
        model, info = family.model_class.from_pretrained(
            repo_id, revision=revision, output_loading_info=True, local_files_only=local_only
        )
        if family.has_text:  # SAM 3 reads phrases with the repository's CLIP tokenizer
            samtune_info(model).tokenizer = text.load_tokenizer(
                repo_id, revision=revision, local_files_only=local_only
            )
        return model, info

    try:
        model, info = hub.hub_fetch(
            repo_id,
            "model",
            fetch,
            f"a local folder, a Meta .pth checkpoint or a preset ({', '.join(PRESETS)})",
        )
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{repo_id!r} is neither a local path nor a repository on the Hugging Face hub"
        ) from None
    except ValueError as exc:
        raise CheckpointError(f"{repo_id!r} is not a SAM model: {exc}") from None
    _check_loading_info(info, repo_id)
    return model


def _encoder_summary(model: torch.nn.Module) -> dict:
    """The image encoder's kind and size: a ViT (SAM, SAM-HQ, SAM 3's tracker), a Hiera
    (SAM 2) or a timm network (EdgeTAM's RepViT: width per stage, no attention heads)."""
    v = model.config.vision_config
    backbone = getattr(v, "backbone_config", None)
    vit = backbone if backbone is not None and hasattr(backbone, "num_hidden_layers") else v
    if backbone is None or vit is backbone:
        return {
            "kind": "ViT",
            "width": vit.hidden_size,
            "depth": vit.num_hidden_layers,
            "heads": vit.num_attention_heads,
        }
    if hasattr(backbone, "embed_dim_per_stage"):
        return {
            "kind": "Hiera",
            "width": list(backbone.embed_dim_per_stage),
            "depth": sum(backbone.blocks_per_stage),
            "heads": list(backbone.num_attention_heads_per_stage),
        }
    return {
        "kind": f"timm {getattr(backbone, 'architecture', '?')}",
        "width": list(v.backbone_channel_list)[::-1],
        "depth": len(v.backbone_channel_list),
        "heads": "none (convolutional)",
    }


def _parts_summary(model: torch.nn.Module) -> dict:
    """Parameter counts: the total and one per top-level module (SAM 3's many parts)."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for name, module in model.named_children():
        counts[name] = sum(p.numel() for p in module.parameters())
    return counts


def _describe_text_model(model: torch.nn.Module, family) -> dict:
    """:func:`describe` of a model with a text encoder (SAM 3)."""
    backbone = model.config.vision_config.backbone_config
    text_config = model.config.text_config
    detr = model.config.detr_decoder_config
    return {
        "source": model_source(model),
        "family": family.name,
        "class": type(model).__name__,
        "image_size": family.image_size(model.config),
        "encoder": {
            "kind": "ViT",
            "width": backbone.hidden_size,
            "depth": backbone.num_hidden_layers,
            "heads": backbone.num_attention_heads,
        },
        "text_encoder": {
            "kind": "CLIP",
            "width": text_config.hidden_size,
            "depth": text_config.num_hidden_layers,
            "heads": text_config.num_attention_heads,
            "max_tokens": text.context_length(model),
            "tokenizer": samtune_info(model).tokenizer is not None,
        },
        "decoder": {
            "width": detr.hidden_size,
            "depth": detr.num_layers,
            "heads": detr.num_attention_heads,
            "queries": detr.num_queries,
        },
        "parameters": _parts_summary(model),
        "preprocess": asdict(preprocess_config(model)),
        "fingerprint": base_fingerprint(model),
    }


def describe(model: torch.nn.Module) -> dict:
    """A short summary: family, sizes, parameter counts, preprocessing, fingerprint."""
    family = family_of(model)
    if family.has_text:
        return _describe_text_model(model, family)
    decoder = model.config.mask_decoder_config
    return {
        "source": model_source(model),
        "family": family.name,
        "class": type(model).__name__,
        "image_size": family.image_size(model.config),
        "encoder": _encoder_summary(model),
        "decoder": {
            "width": decoder.hidden_size,
            "depth": decoder.num_hidden_layers,
            "heads": decoder.num_attention_heads,
            "layer_norm_eps": getattr(decoder, "layer_norm_eps", 1e-6),
        },
        "parameters": {
            "total": sum(p.numel() for p in model.parameters()),
            "image_encoder": sum(p.numel() for p in model.vision_encoder.parameters()),
            "prompt_encoder": sum(p.numel() for p in model.prompt_encoder.parameters()),
            "mask_decoder": sum(p.numel() for p in model.mask_decoder.parameters()),
        },
        "preprocess": asdict(preprocess_config(model)),
        "fingerprint": base_fingerprint(model),
    }
