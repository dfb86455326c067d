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

Which family a model, config or folder is: :mod:`samtune.family`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import PretrainedConfig, Sam2Config, SamConfig, SamHQConfig, SamModel

from . import convert, convert_hq, convert_sam2, hub
from .errors import AssumptionWarning, CheckpointError, ConfigError, MissingFileError
from .family import SAM2, SAM_HQ, family_of, family_of_model_type
from .identity import (
    INFO_ATTR,
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    PreprocessConfig,
    SamtuneInfo,
    architecture,
    base_fingerprint,
    fingerprint,
    model_source,
    preprocess_config,
    samtune_info,
    weights_fingerprint,
)
from .io import read_json, read_json_object

DEFAULT_HUB_MODEL = "facebook/sam-vit-base"


# --------------------------------------------------------------------------- presets


def tiny_config(image_size: int = 128) -> SamConfig:
    """A SAM small enough to train on a CPU in seconds; same structure as the real thing."""
    grid = image_size // 16
    return SamConfig(
        vision_config=dict(
            hidden_size=32,
            output_channels=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=16,
            mlp_dim=64,
            window_size=max(grid // 2, 1),
            global_attn_indexes=[1],
            num_pos_feats=16,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(
            hidden_size=32,
            mlp_dim=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            iou_head_hidden_dim=32,
        ),
    )


def vit_config(size: str, image_size: int = 1024) -> SamConfig:
    """The architecture of Meta's SAM ViT-B / ViT-L / ViT-H."""
    width, depth, heads, global_idx = {
        "b": (768, 12, 12, [2, 5, 8, 11]),
        "l": (1024, 24, 16, [5, 11, 17, 23]),
        "h": (1280, 32, 16, [7, 15, 23, 31]),
    }[size]
    return SamConfig(
        vision_config=dict(
            hidden_size=width,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            global_attn_indexes=global_idx,
            image_size=image_size,
            mlp_dim=4 * width,
        ),
        prompt_encoder_config=dict(image_size=image_size),
    )


def tiny_hq_config(image_size: int = 128) -> SamHQConfig:
    """:func:`tiny_config` with SAM-HQ's decoder (HQ token, HQ MLP, feature fusion)."""
    sam = tiny_config(image_size).to_dict()
    sam["mask_decoder_config"]["vit_dim"] = sam["vision_config"]["hidden_size"]
    keep = ("vision_config", "prompt_encoder_config", "mask_decoder_config")
    return SamHQConfig(**{k: sam[k] for k in keep})


def tiny_sam2_config(image_size: int = 128) -> Sam2Config:
    """A SAM 2 small enough to train on a CPU in seconds: a 4-stage Hiera (16 to 128 wide,
    5 blocks, one global) and a 32-wide decoder, with the structure of the real thing."""
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig

    grid = image_size // 4  # the Hiera patch embedding's stride
    backbone = Sam2HieraDetConfig(
        hidden_size=16,
        num_attention_heads=1,
        image_size=[image_size, image_size],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
    )
    return Sam2Config(
        vision_config=dict(
            backbone_config=backbone,
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[grid, grid], [grid // 2, grid // 2], [grid // 4, grid // 4]],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )


def sam_from_config(config: PretrainedConfig, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised SAM-family model that trains from scratch the way Meta's does.

    ``config`` is a ``SamConfig``, ``SamHQConfig`` or ``Sam2Config``; the model is of its
    family's class.

    Meta's code leaves every layer at PyTorch's default initialisation; transformers instead
    draws linear and convolution weights from N(0, 0.02) (N(0, 1e-10) in the vision encoder,
    whose sub-config has its own ``initializer_range``) and the prompt encoder's random Fourier
    features from N(0, (hidden_size // 2)^2). Started that way a SAM cannot learn to use its
    prompts: its mask logits start at ~1e-5 whatever the box, every prompt is encoded at
    frequencies far above the image grid, and training collapses to empty masks. So every
    layer is reset to PyTorch's default, the Fourier features to N(0, 1) as in Meta's
    ``PositionEmbeddingRandom``, and the positional tables (zero in Meta's code) to small
    random values so that position matters from the start.

    SAM-HQ's code (built on SAM's) and SAM 2's do the same: PyTorch defaults, one random
    Fourier matrix shared by the image and the prompts (transformers gives SAM 2's prompt
    encoder a second, independent one), Hiera's windowed positional tables, and SAM 2's
    no-memory embedding drawn from N(0, 0.02) (``trunc_normal_`` in Meta's code).
    """
    family = family_of(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family.model_class(config)
        with torch.no_grad():
            for module in model.modules():
                if hasattr(module, "reset_parameters") and not any(module.children()):
                    module.reset_parameters()
            model.shared_image_embedding.positional_embedding.normal_(std=1.0)
            model.prompt_encoder.shared_embedding.positional_embedding.copy_(
                model.shared_image_embedding.positional_embedding
            )
            for name, param in model.named_parameters():
                if "rel_pos" in name or name.endswith(
                    ("pos_embed", "pos_embed_window", "no_memory_embedding")
                ):
                    param.normal_(std=0.02)
    return model.eval()


def _load_demo(_seed: int) -> SamModel:
    """The bundled demo model (pretrained: the seed of random presets does not apply)."""
    from .demo_model import load_bundled_demo_model

    return load_bundled_demo_model()


PRESETS: dict[str, tuple[str, Callable[[int], SamModel]]] = {
    "tiny": (
        "tiny random SAM (32-wide, 2 layers, 128 px) for tests",
        lambda s: sam_from_config(tiny_config(), s),
    ),
    "tiny-hq": (
        "tiny random SAM-HQ (tiny's encoder, HQ decoder) for tests",
        lambda s: sam_from_config(tiny_hq_config(), s),
    ),
    "tiny-sam2": (
        "tiny random SAM 2 (4-stage Hiera, 16-128 wide, 128 px) for tests",
        lambda s: sam_from_config(tiny_sam2_config(), s),
    ),
    "demo": (
        "small SAM pretrained on synthetic scenes, bundled with samtune (demo only)",
        _load_demo,
    ),
    "vit-b-random": (
        "SAM ViT-B architecture, random weights (benchmarks)",
        lambda s: sam_from_config(vit_config("b"), s),
    ),
    "vit-l-random": (
        "SAM ViT-L architecture, random weights (benchmarks)",
        lambda s: sam_from_config(vit_config("l"), s),
    ),
    "vit-h-random": (
        "SAM ViT-H architecture, random weights (benchmarks)",
        lambda s: sam_from_config(vit_config("h"), s),
    ),
}


def list_presets() -> dict[str, str]:
    return {name: desc for name, (desc, _) in PRESETS.items()}


# --------------------------------------------------------------------------- loading


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
        decoder_num_heads, decoder_layer_norm_eps: for a Meta checkpoint without a samtune
            sidecar, the mask decoder's attention heads and LayerNorm epsilon, which Meta's
            format does not record (default: Meta's 8 and 1e-5, with a note that they were
            assumed). Not accepted for other sources, whose config records them.

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
    if source_str in PRESETS:
        model = PRESETS[source_str][1](seed)
    else:
        if path.exists():
            model = _load_local(path, stated)
        elif hub.looks_like_local_path(source_str):
            raise MissingFileError(
                f"model path {source_str!r} does not exist; give an existing folder or "
                f"checkpoint, a hub id such as {DEFAULT_HUB_MODEL!r}, or a preset "
                f"({', '.join(PRESETS)})"
            )
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
    return _load_checkpoint_file(path, stated or {})


def _load_folder(path: Path) -> torch.nn.Module:
    """A ``save_pretrained`` folder of any SAM family (its ``config.json`` names it)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"folder {str(path)!r} has no config.json; expected a folder written by "
            "save_pretrained (SamModel, SamHQModel, Sam2Model) or `samtune convert`"
        )
    model_type = read_json_object(config_file, CheckpointError).get("model_type")
    family = family_of_model_type(model_type, f"folder {str(path)!r}")
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


def _load_checkpoint_file(path: Path, stated: dict) -> torch.nn.Module:
    """An original-format checkpoint file, dispatched on its keys: Meta's SAM today.

    This is the one place that recognises an original checkpoint's family; SAM-HQ and SAM 2
    formats join here as further ``is_*_state_dict`` branches."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(path)
        except Exception as exc:
            raise CheckpointError(
                f"{str(path)!r} is not a readable safetensors file: {exc}"
            ) from None
    else:
        sd = convert.read_torch_checkpoint(path)
    sd = convert.strip_wrapper_prefix(sd)
    if convert_hq.is_hq_state_dict(sd):
        return _with_sidecar_preprocess(
            convert_hq.model_from_original(path, sd, **(stated or {})), path
        )
    if convert_sam2.is_sam2_state_dict(sd):
        if stated:
            raise ConfigError(
                f"{str(path)!r} is a SAM 2 checkpoint; {', '.join(stated)} only apply to SAM "
                "and SAM-HQ checkpoints (SAM 2's decoder always has 8 heads)"
            )
        return _with_sidecar_preprocess(convert_sam2.model_from_original(path, sd), path)
    if convert.is_meta_state_dict(sd):
        return _model_from_meta(path, sd, stated)
    if stated:
        raise ConfigError(
            f"{str(path)!r} is not a Meta checkpoint; {', '.join(stated)} do not apply"
        )
    raise CheckpointError(
        f"{str(path)!r} is not a SAM checkpoint: expected Meta segment-anything keys "
        f"('image_encoder.*', 'prompt_encoder.*', 'mask_decoder.*'), SAM-HQ's (the same and "
        f"'mask_decoder.hf_token.weight') or SAM 2's ('image_encoder.trunk.*', "
        f"'sam_mask_decoder.*'), found keys like {sorted(sd)[:3]}"
    )


def _model_from_meta(path: Path, sd: dict, stated: dict) -> SamModel:
    """A Meta checkpoint: architecture from its sidecar, from the user, or Meta's (said so)."""
    import warnings

    from transformers import SamConfig

    side = convert.read_sidecar(path)
    if side is not None and not stated:
        try:
            config = SamConfig(**side["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{str(convert.sidecar_path(path))!r} holds an invalid config ({exc})"
            ) from None
        model = convert.sam_model_from_meta_state_dict(sd, config)
        if isinstance(side.get("preprocess"), dict):
            samtune_info(model).preprocess = PreprocessConfig.from_dict(side["preprocess"])
        return model
    if not stated:
        warnings.warn(
            f"{path.name}: a Meta checkpoint does not record the mask decoder's attention heads "
            f"or LayerNorm epsilon, and it has no {convert.SIDECAR_SUFFIX} sidecar; assumed "
            f"Meta's ({convert.META_DECODER_HEADS} heads, eps "
            f"{convert.META_DECODER_LAYER_NORM_EPS:g}). If it was built otherwise, state them: "
            f"samtune convert {path.name} OUT --to hf --decoder-heads N --decoder-eps E",
            AssumptionWarning,
            stacklevel=5,
        )
    return convert.sam_model_from_meta_state_dict(sd, **stated)


def _with_sidecar_preprocess(model, path: Path):
    """Record the preprocessing a samtune sidecar beside ``path`` declares, if any."""
    side = convert.read_sidecar(path)
    if side is not None and isinstance(side.get("preprocess"), dict):
        samtune_info(model).preprocess = PreprocessConfig.from_dict(side["preprocess"])
    return model


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
    mean = _channels(cfg, "image_mean", [m / 255 for m in SAM_PIXEL_MEAN], where, positive=False)
    std = _channels(cfg, "image_std", [s / 255 for s in SAM_PIXEL_STD], where, positive=True)
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
        return family.model_class.from_pretrained(
            repo_id, revision=revision, output_loading_info=True, local_files_only=local_only
        )

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


def save_original_checkpoint(
    model: torch.nn.Module, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``model`` in its family's original format, with samtune's sidecar: a Meta
    ``segment_anything`` ``.pth`` (SAM), a ``segment_anything_hq`` ``.pth`` (SAM-HQ) or a
    ``sam2`` ``.pt`` (SAM 2). :func:`load_model` reads each back to the same fingerprint.

    Raises:
        InputError: ``path`` exists and may not be replaced (see
            :func:`samtune.convert.save_meta_checkpoint`).
    """
    family = family_of(model)
    if family is SAM_HQ:
        return convert_hq.save_hq_checkpoint(model, path, overwrite=overwrite)
    if family is SAM2:
        return convert_sam2.save_sam2_checkpoint(model, path, overwrite=overwrite)
    return convert.save_meta_checkpoint(model, path, overwrite=overwrite)


def _encoder_summary(model: torch.nn.Module) -> dict:
    """The image encoder's kind and size: a ViT (SAM, SAM-HQ) or a Hiera (SAM 2)."""
    v = model.config.vision_config
    backbone = getattr(v, "backbone_config", None)
    if backbone is None:
        return {
            "kind": "ViT",
            "width": v.hidden_size,
            "depth": v.num_hidden_layers,
            "heads": v.num_attention_heads,
        }
    return {
        "kind": "Hiera",
        "width": list(backbone.embed_dim_per_stage),
        "depth": sum(backbone.blocks_per_stage),
        "heads": list(backbone.num_attention_heads_per_stage),
    }


def describe(model: torch.nn.Module) -> dict:
    """A short summary: family, sizes, parameter counts, preprocessing, fingerprint."""
    family = family_of(model)
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


__all__ = [  # the identity names are re-exported: samtune.models is where users look for them
    "DEFAULT_HUB_MODEL",
    "INFO_ATTR",
    "PRESETS",
    "SAM_PIXEL_MEAN",
    "SAM_PIXEL_STD",
    "PreprocessConfig",
    "SamtuneInfo",
    "architecture",
    "base_fingerprint",
    "describe",
    "fingerprint",
    "list_presets",
    "load_model",
    "model_source",
    "preprocess_config",
    "sam_from_config",
    "samtune_info",
    "save_original_checkpoint",
    "tiny_config",
    "tiny_hq_config",
    "tiny_sam2_config",
    "vit_config",
    "weights_fingerprint",
]
