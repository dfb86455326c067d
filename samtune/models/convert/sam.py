"""Meta ``segment_anything`` state dicts <-> Hugging Face ``SamModel`` state dicts.

Conversion is pure key renaming (no tensor is changed), so a round trip reproduces every
tensor exactly. The architecture of a Meta checkpoint (width, depth, heads, window size,
global-attention layers, image size, decoder sizes) is read from the tensor shapes, so any
size converts, not just ViT-B/L/H.

What the shapes do not reveal (the mask decoder's attention heads, LayerNorm epsilons,
samtune's preprocessing) is Meta's fixed choice in Meta's own checkpoints (8 heads, epsilon
1e-5 in the decoder). A ``.pth`` samtune writes for another architecture carries it in a
sidecar, ``<file>.samtune.json`` (:func:`save_meta_checkpoint`), which the loader reads back;
without one the loader assumes Meta's values and says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import SamConfig

from ... import __version__
from ...errors import CheckpointError, InputError, MissingDependencyError, MissingFileError
from ...io import atomic_write, dump_json, read_json_object
from ..identity import fingerprint, model_source, preprocess_config

# Prefixes that training wrappers (Lightning, DDP) put in front of Meta's keys.
_WRAPPER_PREFIXES = ("module.", "model.", "sam.")
_NON_PARAMETER_KEYS = ("pixel_mean", "pixel_std")
_POSITIONAL_META = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_POSITIONAL_HF = ("shared_image_embedding.positional_embedding",)
_POSITIONAL_HF_TIED = "prompt_encoder.shared_embedding.positional_embedding"

# (meta fragment, hf fragment) pairs applied to whole dotted path segments.
_SEGMENT_RENAMES_VISION = [
    ("image_encoder.", "vision_encoder."),
    (".blocks.", ".layers."),
    ("patch_embed.proj.", "patch_embed.projection."),
    # neck before the block norms: reversed, ".layer_norm1." would also hit the neck's
    ("neck.0.", "neck.conv1."),
    ("neck.1.", "neck.layer_norm1."),
    ("neck.2.", "neck.conv2."),
    ("neck.3.", "neck.layer_norm2."),
    (".norm1.", ".layer_norm1."),
    (".norm2.", ".layer_norm2."),
]
_SEGMENT_RENAMES_PROMPT = [
    ("prompt_encoder.point_embeddings.", "prompt_encoder.point_embed."),
    ("mask_downscaling.0.", "mask_embed.conv1."),
    ("mask_downscaling.1.", "mask_embed.layer_norm1."),
    ("mask_downscaling.3.", "mask_embed.conv2."),
    ("mask_downscaling.4.", "mask_embed.layer_norm2."),
    ("mask_downscaling.6.", "mask_embed.conv3."),
]
_SEGMENT_RENAMES_DECODER = [
    (".norm1.", ".layer_norm1."),
    (".norm2.", ".layer_norm2."),
    (".norm3.", ".layer_norm3."),
    (".norm4.", ".layer_norm4."),
    (".norm_final_attn.", ".layer_norm_final_attn."),
    ("output_upscaling.0.", "upscale_conv1."),
    ("output_upscaling.1.", "upscale_layer_norm."),
    ("output_upscaling.3.", "upscale_conv2."),
]
_MLP_META = re.compile(
    r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.(.+)$"
)
_MLP_HF = re.compile(
    r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(proj_in|proj_out|layers\.(\d+))\.(.+)$"
)


def _rename(key: str, pairs: list[tuple[str, str]], reverse: bool) -> str:
    for meta, hf in pairs:
        old, new = (hf, meta) if reverse else (meta, hf)
        key = key.replace(old, new)
    return key


def _pairs_for(key: str) -> list[tuple[str, str]]:
    if key.startswith(("image_encoder.", "vision_encoder.")):
        return _SEGMENT_RENAMES_VISION
    if key.startswith("prompt_encoder."):
        return _SEGMENT_RENAMES_PROMPT
    if key.startswith("mask_decoder."):
        return _SEGMENT_RENAMES_DECODER
    return []


def _mlp_depths(keys: list[str], pattern: re.Pattern[str], meta: bool) -> dict[str, int]:
    """Number of linear layers of each MLP head, from the keys."""
    depths: dict[str, int] = {}
    for key in keys:
        m = pattern.match(key)
        if not m:
            continue
        head = m.group(1)
        if meta:
            depths[head] = max(depths.get(head, 0), int(m.group(2)) + 1)
        else:
            depths.setdefault(head, 2)
            if m.group(3) is not None:
                depths[head] = max(depths[head], int(m.group(3)) + 3)
    return depths


def mlp_layer_to_hf(index: int, depth: int) -> str:
    """HF name of layer ``index`` of a Meta ``MLP`` with ``depth`` linear layers."""
    if index == 0:
        return "proj_in"
    return "proj_out" if index == depth - 1 else f"layers.{index - 1}"


def mlp_layer_to_meta(name: str, depth: int) -> int:
    """Meta index of the HF MLP layer ``name`` (``proj_in``, ``layers.i``, ``proj_out``)."""
    if name == "proj_in":
        return 0
    if name == "proj_out":
        return depth - 1
    return int(name.split(".")[1]) + 1


def strip_wrapper_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a ``module.``/``model.``/``sam.`` prefix that training wrappers add to Meta keys."""
    sd = dict(state_dict)
    for prefix in _WRAPPER_PREFIXES:
        if (
            sd
            and all(k.startswith(prefix) for k in sd)
            and any(k.startswith(prefix + "image_encoder.") for k in sd)
        ):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def is_meta_state_dict(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("image_encoder.") for k in state_dict) and any(
        k.startswith("mask_decoder.") for k in state_dict
    )


def original_family(state_dict: Mapping[str, Any]) -> str | None:
    """Which original checkpoint format ``state_dict`` is in: "SAM 3", "SAM 2", "SAM-HQ",
    "SAM" or None.

    For messages that name what was found; each converter module has its own ``is_*`` test.
    """
    sd = strip_wrapper_prefix(state_dict)
    if "detector.backbone.vision_backbone.trunk.patch_embed.proj.weight" in sd:
        return "SAM 3"
    if "image_encoder.trunk.patch_embed.proj.weight" in sd:
        return "SAM 2"
    if not is_meta_state_dict(sd):
        return None
    return "SAM-HQ" if "mask_decoder.hf_token.weight" in sd else "SAM"


def meta_to_hf_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Meta ``segment_anything`` state dict to ``SamModel`` keys (tensors shared)."""
    sd = strip_wrapper_prefix(state_dict)
    if not is_meta_state_dict(sd):
        raise CheckpointError(
            "expected a Meta segment-anything state dict (keys 'image_encoder.*', "
            f"'mask_decoder.*'), found keys like {sorted(sd)[:3]}; pass a checkpoint such as "
            "sam_vit_b_01ec64.pth, or a Hugging Face SAM directory"
        )
    depths = _mlp_depths(list(sd), _MLP_META, meta=True)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in _NON_PARAMETER_KEYS:
            continue
        if key == _POSITIONAL_META:
            for hf_key in (*_POSITIONAL_HF, _POSITIONAL_HF_TIED):
                out[hf_key] = value
            continue
        m = _MLP_META.match(key)
        if m:
            head, idx, rest = m.group(1), int(m.group(2)), m.group(3)
            out[f"{head}.{mlp_layer_to_hf(idx, depths[head])}.{rest}"] = value
            continue
        out[_rename(key, _pairs_for(key), reverse=False)] = value
    return out


def hf_to_meta_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``SamModel`` state dict to Meta ``segment_anything`` keys (tensors shared)."""
    sd = dict(state_dict)
    if "vision_encoder.patch_embed.projection.weight" not in sd:
        raise CheckpointError(
            "expected a Hugging Face SamModel state dict (keys 'vision_encoder.*'), found keys "
            f"like {sorted(sd)[:3]}"
        )
    depths = _mlp_depths(list(sd), _MLP_HF, meta=False)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == _POSITIONAL_HF_TIED:
            continue
        if key in _POSITIONAL_HF:
            out[_POSITIONAL_META] = value
            continue
        m = _MLP_HF.match(key)
        if m:
            head, name, rest = m.group(1), m.group(2), m.group(4)
            out[f"{head}.layers.{mlp_layer_to_meta(name, depths[head])}.{rest}"] = value
            continue
        out[_rename(key, _pairs_for(key), reverse=True)] = value
    return out


META_DECODER_HEADS = 8
META_DECODER_LAYER_NORM_EPS = 1e-5  # Meta's two-way transformer: nn.LayerNorm's default
SIDECAR_SUFFIX = ".samtune.json"
SIDECAR_FORMAT = "samtune.meta-sidecar"


def config_from_meta_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    decoder_num_heads: int = META_DECODER_HEADS,
    decoder_layer_norm_eps: float = META_DECODER_LAYER_NORM_EPS,
) -> SamConfig:
    """Read the architecture of a Meta SAM checkpoint off its tensor shapes.

    The decoder's attention heads and LayerNorm epsilon cannot be read off shapes; they
    default to Meta's (8, 1e-5).
    """
    vision, prompt, decoder = meta_config_parts(
        strip_wrapper_prefix(state_dict),
        decoder_num_heads=decoder_num_heads,
        decoder_layer_norm_eps=decoder_layer_norm_eps,
    )
    return SamConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )


def meta_config_parts(
    sd: Mapping[str, torch.Tensor], *, decoder_num_heads: int, decoder_layer_norm_eps: float
) -> tuple[dict, dict, dict]:
    """The vision, prompt-encoder and mask-decoder sub-configs of a Meta-style state dict.

    Shared by SAM and SAM-HQ, whose image encoder, prompt encoder and two-way transformer are
    the same modules.
    """
    try:
        vision = _vision_config(sd)
        decoder = _decoder_config(sd)
        decoder.update(num_attention_heads=decoder_num_heads, layer_norm_eps=decoder_layer_norm_eps)
        prompt = dict(
            hidden_size=decoder["hidden_size"],
            image_size=vision["image_size"],
            patch_size=vision["patch_size"],
            mask_input_channels=sd["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            num_point_embeddings=len(
                {k for k in sd if k.startswith("prompt_encoder.point_embeddings.")}
            ),
        )
    except KeyError as exc:
        raise CheckpointError(
            f"not a complete Meta SAM state dict: tensor {exc.args[0]!r} is missing"
        ) from None
    return vision, prompt, decoder


def _vision_config(sd: Mapping[str, torch.Tensor]) -> dict:
    """The image encoder's sub-config, from Meta's ``image_encoder.*`` shapes."""
    patch_w = sd["image_encoder.patch_embed.proj.weight"]
    hidden, channels, patch = patch_w.shape[0], patch_w.shape[1], patch_w.shape[-1]
    block_ids = sorted({int(k.split(".")[2]) for k in sd if k.startswith("image_encoder.blocks.")})
    pos = sd.get("image_encoder.pos_embed")
    grid = pos.shape[1] if pos is not None else 1024 // patch
    use_rel_pos = "image_encoder.blocks.0.attn.rel_pos_h" in sd
    if use_rel_pos:
        head_dim = sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
        spans = [
            (sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] + 1) // 2 for i in block_ids
        ]
        global_idx = [i for i, s in zip(block_ids, spans, strict=False) if s == grid]
        windows = {s for s in spans if s != grid}
        if len(windows) > 1:
            raise CheckpointError(f"blocks use several window sizes {sorted(windows)}")
        window_size = windows.pop() if windows else 0
    else:
        known = {768: 12, 1024: 16, 1280: 16}
        if hidden not in known:
            raise CheckpointError(
                f"cannot infer attention heads for width {hidden} without relative "
                "position tensors; build the SamConfig yourself and load the state dict"
            )
        head_dim = hidden // known[hidden]
        global_idx, window_size = [], 14
    mlp_dim = sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0]
    return dict(
        hidden_size=hidden,
        output_channels=sd["image_encoder.neck.0.weight"].shape[0],
        num_hidden_layers=len(block_ids),
        num_attention_heads=hidden // head_dim,
        num_channels=channels,
        image_size=grid * patch,
        patch_size=patch,
        qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in sd,
        mlp_dim=mlp_dim,
        mlp_ratio=mlp_dim / hidden,
        use_abs_pos=pos is not None,
        use_rel_pos=use_rel_pos,
        window_size=window_size,
        global_attn_indexes=global_idx,
        num_pos_feats=sd[_POSITIONAL_META].shape[1],
    )


def _decoder_config(sd: Mapping[str, torch.Tensor]) -> dict:
    """The mask decoder's sub-config, from Meta's ``mask_decoder.*`` shapes (heads excluded)."""
    tokens = sd["mask_decoder.mask_tokens.weight"]
    layers = "mask_decoder.transformer.layers."
    iou_layers = "mask_decoder.iou_prediction_head.layers."
    cross_q = sd[layers + "0.cross_attn_token_to_image.q_proj.weight"]
    return dict(
        hidden_size=tokens.shape[1],
        mlp_dim=sd[layers + "0.mlp.lin1.weight"].shape[0],
        num_hidden_layers=len({k.split(".")[3] for k in sd if k.startswith(layers)}),
        attention_downsample_rate=tokens.shape[1] // cross_q.shape[0],
        num_multimask_outputs=tokens.shape[0] - 1,
        iou_head_depth=len(
            {k.split(".")[3] for k in sd if k.startswith(iou_layers) and k.endswith("weight")}
        ),
        iou_head_hidden_dim=sd[iou_layers + "0.weight"].shape[0],
    )


def build_meta_sam(config: SamConfig) -> torch.nn.Module:
    """An (untrained) ``segment_anything`` ``Sam`` with the architecture of ``config``."""
    from functools import partial

    try:
        from segment_anything.modeling import (
            ImageEncoderViT,
            MaskDecoder,
            PromptEncoder,
            Sam,
            TwoWayTransformer,
        )
    except ImportError:
        raise MissingDependencyError(
            "building Meta's Sam module needs the segment_anything package: "
            'pip install "samtune[meta]" (reading and writing Meta .pth files does not)'
        ) from None

    v, p, d = config.vision_config, config.prompt_encoder_config, config.mask_decoder_config
    grid = v.image_size // v.patch_size
    encoder = ImageEncoderViT(
        img_size=v.image_size,
        patch_size=v.patch_size,
        in_chans=v.num_channels,
        embed_dim=v.hidden_size,
        depth=v.num_hidden_layers,
        num_heads=v.num_attention_heads,
        mlp_ratio=(v.mlp_dim or v.hidden_size * v.mlp_ratio) / v.hidden_size,
        out_chans=v.output_channels,
        qkv_bias=v.qkv_bias,
        norm_layer=partial(torch.nn.LayerNorm, eps=v.layer_norm_eps),
        use_abs_pos=v.use_abs_pos,
        use_rel_pos=v.use_rel_pos,
        window_size=v.window_size,
        global_attn_indexes=tuple(v.global_attn_indexes),
    )
    prompt = PromptEncoder(
        embed_dim=p.hidden_size,
        image_embedding_size=(grid, grid),
        input_image_size=(v.image_size, v.image_size),
        mask_in_chans=p.mask_input_channels,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=d.num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=d.num_hidden_layers,
            embedding_dim=d.hidden_size,
            mlp_dim=d.mlp_dim,
            num_heads=d.num_attention_heads,
            attention_downsample_rate=d.attention_downsample_rate,
        ),
        transformer_dim=d.hidden_size,
        iou_head_depth=d.iou_head_depth,
        iou_head_hidden_dim=d.iou_head_hidden_dim,
    )
    _set_layer_norm_eps(prompt, decoder, config)
    return Sam(encoder, prompt, decoder)


def _set_layer_norm_eps(
    prompt: torch.nn.Module, decoder: torch.nn.Module, config: SamConfig
) -> None:
    """Give Meta's modules the LayerNorm epsilons of ``config`` where HF's SAM reads them.

    Meta's constructors take no epsilon there: the two-way transformer's blocks use
    ``nn.LayerNorm``'s 1e-5 and the mask embedding ``LayerNorm2d``'s 1e-6, while HF's
    ``SamTwoWayAttentionBlock`` uses ``mask_decoder_config.layer_norm_eps`` (1e-6 by default,
    so a native HF model differs from Meta's) and ``SamMaskEmbedding``
    ``prompt_encoder_config.layer_norm_eps``. The transformer's final norm and the output
    upscaling's norm have fixed epsilons on both sides.
    """
    eps = config.mask_decoder_config.layer_norm_eps
    for block in decoder.transformer.layers:
        for norm in (block.norm1, block.norm2, block.norm3, block.norm4):
            norm.eps = eps
    prompt_eps = config.prompt_encoder_config.layer_norm_eps
    for index in (1, 4):  # mask_downscaling: conv, LayerNorm2d, GELU, conv, LayerNorm2d, ...
        prompt.mask_downscaling[index].eps = prompt_eps


def read_torch_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` with ``weights_only=True``; unwrap ``{"state_dict": ...}``/``{"model": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not a checkpoint"
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); expected a SAM .pth such as "
            "sam_vit_b_01ec64.pth"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict of tensors")
    return obj


def sam_model_from_meta_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: SamConfig | None = None, **config_overrides
):
    """Build a ``SamModel`` from a Meta state dict.

    Args:
        state_dict: Meta ``segment_anything`` keys (a wrapper prefix is stripped).
        config: the architecture; default: read off the shapes
            (:func:`config_from_meta_state_dict` with ``config_overrides``).

    Raises:
        CheckpointError: the tensors do not fit the architecture.
    """
    from transformers import SamModel

    if config is None:
        config = config_from_meta_state_dict(state_dict, **config_overrides)
    return build_checked(SamModel, config, meta_to_hf_state_dict(state_dict), "SAM")


def build_checked(
    model_class: type, config: Any, hf_sd: Mapping[str, torch.Tensor], family: str
) -> torch.nn.Module:
    """``model_class(config)`` with ``hf_sd`` loaded, once the shapes are known to agree.

    The architecture is first built on the ``meta`` device (no memory), and every tensor of
    ``hf_sd`` compared with it, so a config read off edited shapes, or a tensor that claims
    far more elements than its file holds (a broadcast view saved by ``torch.save``), is
    refused before terabytes are asked of the allocator.

    Raises:
        CheckpointError: naming the first tensor that does not fit, expected and found.
    """
    with torch.device("meta"):
        twin = model_class(config)
    for name, expected in twin.state_dict().items():
        found = hf_sd.get(name)
        if found is not None and tuple(found.shape) != tuple(expected.shape):
            raise CheckpointError(
                f"checkpoint does not match the {family} architecture read off it: tensor "
                f"{name!r} has shape {tuple(found.shape)}, expected {tuple(expected.shape)}"
            )
    for name, tensor in hf_sd.items():
        held = tensor.untyped_storage().nbytes()
        if tensor.numel() and held < tensor.numel() * tensor.element_size():
            raise CheckpointError(
                f"tensor {name!r} has shape {tuple(tensor.shape)} ({tensor.numel()} values) but "
                f"only {held} bytes of data: it is a broadcast view, not weights; the file "
                "was not written from a trained model"
            )
    model = model_class(config)
    load_converted(model, hf_sd, family)
    return model


def load_converted(model: torch.nn.Module, hf_sd: Mapping[str, torch.Tensor], family: str) -> None:
    """Load converted weights into ``model``, all of them and nothing else.

    Raises:
        CheckpointError: a tensor of the wrong shape, a missing or an unexpected one.
    """
    try:
        missing, unexpected = model.load_state_dict(hf_sd, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise CheckpointError(
            f"checkpoint does not match the architecture it was given: {str(exc).splitlines()[-1].strip()}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match {family}'s architecture: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )


def sidecar_path(path: str | Path) -> Path:
    """Where :func:`save_meta_checkpoint` puts what a Meta ``.pth`` cannot record."""
    return Path(str(path) + SIDECAR_SUFFIX)


def read_family_checkpoint(
    path: str | Path, is_family: Callable[[Mapping[str, Any]], bool], wanted: str
) -> dict[str, Any]:
    """The state dict of an original checkpoint of one family (wrapper prefixes stripped).

    Raises:
        MissingFileError: no such file.
        CheckpointError: not a readable checkpoint, or of another family than ``wanted``.
    """
    sd = strip_wrapper_prefix(read_torch_checkpoint(Path(path)))
    if not is_family(sd):
        raise wrong_family_error(Path(path), sd, wanted)
    return sd


def wrong_family_error(path: Path, state_dict: Mapping[str, Any], wanted: str) -> CheckpointError:
    """The error for ``path`` holding no ``wanted`` checkpoint, naming what it holds instead."""
    family = original_family(state_dict)
    found = (
        f"a {family} one" if family else f"no SAM checkpoint (keys like {sorted(state_dict)[:3]})"
    )
    return CheckpointError(
        f"{str(path)!r} is not a {wanted} checkpoint but {found}; load it with "
        "samtune.load_model, which reads every family"
    )


def sidecar_config(path: Path, family: str, config_class: type) -> Any | None:
    """The config the samtune sidecar beside ``path`` records (``None`` without a sidecar).

    Raises:
        CheckpointError: the sidecar describes another family (``family`` is the sidecar's
            name for the weights' family: ``sam``, ``sam_hq``, ``sam2``), or an invalid config.
    """
    side = read_sidecar(path)
    if side is None:
        return None
    if side.get("family", "sam") != family:
        raise CheckpointError(
            f"{str(sidecar_path(path))!r} describes a {side.get('family', 'sam')!r} "
            f"model, but {path.name} holds {family!r} weights; remove the stale sidecar"
        )
    try:
        return config_class(**side["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{str(sidecar_path(path))!r} holds an invalid config ({exc})"
        ) from None


def read_sidecar(path: str | Path) -> dict | None:
    """The sidecar of a Meta checkpoint, or None when there is none.

    Raises:
        CheckpointError: a sidecar that is not valid JSON or not samtune's.
    """

    side = sidecar_path(path)
    if not side.is_file():
        return None
    data = read_json_object(side, CheckpointError)
    if data.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{str(side)!r} is not a samtune sidecar (format {SIDECAR_FORMAT!r})")
    if not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{str(side)!r} lacks the model config")
    return data


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _check_replaceable_file(path: Path, overwrite: bool) -> None:

    if path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: it is a folder; give a .pth file name")
    if not path.exists():
        return
    if not overwrite:
        raise InputError(f"{str(path)!r} exists; choose another path or pass --overwrite")
    try:
        side = read_sidecar(path)
    except CheckpointError:
        side = None
    if side is None or side.get("sha256") != _sha256(path):
        raise InputError(
            f"refusing to replace {str(path)!r}: samtune did not write it (no matching "
            f"{SIDECAR_SUFFIX} sidecar); --overwrite only replaces samtune's own outputs"
        )


def save_meta_checkpoint(model, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a ``SamModel`` as a Meta ``.pth`` plus its sidecar ``<path>.samtune.json``.

    The ``.pth`` holds exactly Meta's keys (``sam_model_registry`` builds load it when the
    architecture is one of Meta's); the sidecar records the full config and preprocessing,
    which Meta's format cannot, so that :func:`samtune.load_model` rebuilds the same model
    (same fingerprint) even for non-standard architectures.

    Raises:
        InputError: ``path`` exists and ``overwrite`` is off, or it is not samtune's to replace.
    """
    sd = {
        k: v.detach().cpu().contiguous()
        for k, v in hf_to_meta_state_dict(model.state_dict()).items()
    }
    return write_original_checkpoint(model, sd, path, overwrite=overwrite)


def write_original_checkpoint(
    model,
    payload: dict,
    path: str | Path,
    *,
    overwrite: bool = False,
    family: str = "sam",
    sidecar_extra: dict | None = None,
) -> Path:
    """Write ``payload`` (an original-format checkpoint object) with ``torch.save``, plus the
    sidecar that records ``model``'s config, preprocessing and fingerprint.

    The rules of :func:`save_meta_checkpoint` apply: never replace a file samtune did not
    write, and never leave a half-written file. ``sidecar_extra`` adds entries to the sidecar
    (SAM 3: its tokenizer).

    Raises:
        InputError: ``path`` exists and ``overwrite`` is off, or it is not samtune's to replace.
    """

    path = Path(path)
    _check_replaceable_file(path, overwrite)
    config = model.config.to_dict()
    for key in ("_name_or_path", "transformers_version"):
        config.pop(key, None)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
        side = {
            "format": SIDECAR_FORMAT,
            "format_version": 1,
            "about": "what an original-format checkpoint cannot record; read by samtune.load_model",
            "family": family,
            "file": path.name,
            "sha256": _sha256(tmp),
            "fingerprint": fingerprint(model),
            "source": model_source(model),
            "samtune_version": __version__,
            "preprocess": preprocess_config(model).to_dict(),
            "config": config,
            **(sidecar_extra or {}),
        }
        with atomic_write(sidecar_path(path)) as side_tmp:
            side_tmp.write_text(dump_json(side, indent=2) + "\n")
    return path
