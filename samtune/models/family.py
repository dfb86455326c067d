"""The SAM family a model belongs to, in one place: SAM, SAM-HQ, SAM 2, SAM 2's kin (SAM 3's
tracker, EdgeTAM) or SAM 3.

Everything that differs between ``transformers.SamModel``, ``SamHQModel``, ``Sam2Model``,
``Sam3TrackerModel``, ``EdgeTamModel`` and ``Sam3Model`` (SAM 3: a text or concept prompt finds
every instance) and that samtune needs to know lives in one :class:`Family` record: the classes, the config's
``model_type``, how images are resized, what the image encoder hands to the mask decoder, and
the names of the parts a strategy adapts (:attr:`Family.targets`). Callers ask
:func:`family_of` (a model, a config, a ``model_type``) and never guess from module names.

This module imports only transformers (no samtune module), so anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import (
    EdgeTamConfig,
    EdgeTamModel,
    Sam2Config,
    Sam2Model,
    Sam3Config,
    Sam3Model,
    Sam3TrackerConfig,
    Sam3TrackerModel,
    SamConfig,
    SamHQConfig,
    SamHQModel,
    SamModel,
)

from ..errors import CheckpointError, ConfigError, MissingDependencyError

# ImageNet statistics in 0-255 pixel units (SAM's, SAM 2's and EdgeTAM's processors).
IMAGENET_PIXEL_MEAN = (123.675, 116.28, 103.53)
IMAGENET_PIXEL_STD = (58.395, 57.12, 57.375)
# SAM 3's image processor (Sam3ImageProcessor): IMAGENET_STANDARD, 0.5 and 0.5.
HALF_PIXEL = (127.5, 127.5, 127.5)


@dataclass(frozen=True)
class Family:
    """What samtune knows about one SAM family.

    Attributes:
        name: ``"sam"``, ``"sam-hq"`` or ``"sam2"`` (what adapters and ``samtune info`` show).
        model_class, config_class: the transformers classes.
        model_type: the config's ``model_type`` (``config.json``).
        square_resize: images are stretched to a square without padding (SAM 2's
            ``Sam2ImageProcessor``) instead of resized on the longest side and padded
            bottom-right (SAM's and SAM-HQ's processors).
        encoder_outputs: what :func:`samtune.models.sam_ops.encode_images` returns, in words.
        encoder_extras: parameters outside ``vision_encoder`` that
            :func:`samtune.models.sam_ops.decode` applies to the encoder's output; they are not part
            of what the embedding cache stores.
        targets: regular expressions over full module names, one per part a strategy can
            adapt: ``blocks`` (image-encoder blocks), ``qkv``, ``proj`` (attention output),
            ``mlp`` (the blocks' MLP linears), ``decoder_attention`` (the mask decoder's
            attention ``q_proj``/``v_proj``).
            A family whose image encoder lacks a part has no entry for it (EdgeTAM's RepViT is
            convolutional: no ``blocks``, ``qkv``, ``proj`` or ``mlp``); :meth:`target` then
            refuses with a :class:`ConfigError` that says why.
        fixed: parameters no built-in strategy trains (SAM's random Fourier matrix, a buffer
            in Meta's code and a parameter in transformers').
        has_text: the model takes text (concept) prompts through a text encoder (SAM 3).
        decoder_modules: the top-level modules the ``decoder`` strategy (and the
            ``train_decoder`` option of the others) trains.
        prompt_modules: the top-level modules that encode prompts other than the image
            (``train_prompt_encoder`` / ``freeze_prompt_encoder``).
        block_attention: the attribute name of an image-encoder block's attention (the
            ``adapter`` strategy hooks it; its MLP is ``mlp`` in every family).
        sam2_like: the prompted model of SAM 2's design (``Sam2Model`` and its kin
            ``Sam3TrackerModel``, ``EdgeTamModel``: the same prompt encoder, mask decoder and
            ``forward``): the encoder hands over FPN levels, the decoder's ``conv_s0``/``conv_s1``
            and the no-memory embedding apply to them, and an object-score head can say
            "no object". :mod:`samtune.models.sam_ops` and the predictor branch on this, never
            on the family itself.
        encoder: the image encoder in words (messages and ``samtune info``).
        pixel_mean, pixel_std: the normalisation its processor applies, per RGB channel in
            0-255 units (ImageNet's for SAM and SAM 2; 0.5/0.5 for SAM 3's processor).
        requires: Python packages its transformers class needs beyond samtune's own
            (EdgeTAM's backbone is a timm model); :meth:`check_requirements` names them.
    """

    name: str
    model_class: type
    config_class: type
    model_type: str
    square_resize: bool
    encoder_outputs: str
    encoder_extras: tuple[str, ...] = ()
    targets: dict[str, str] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()
    has_text: bool = False
    decoder_modules: tuple[str, ...] = ("mask_decoder",)
    prompt_modules: tuple[str, ...] = ("prompt_encoder",)
    block_attention: str = "attn"

    def is_decoder(self, name: str) -> bool:
        """Whether the parameter ``name`` belongs to :attr:`decoder_modules`."""
        return name.split(".", 1)[0] in self.decoder_modules

    def is_prompt_encoder(self, name: str) -> bool:
        """Whether the parameter ``name`` belongs to :attr:`prompt_modules`."""
        return name.split(".", 1)[0] in self.prompt_modules

    sam2_like: bool = False
    encoder: str = "ViT"
    pixel_mean: tuple[float, float, float] = IMAGENET_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_PIXEL_STD
    requires: tuple[str, ...] = ()

    def check_requirements(self) -> None:
        """Raise :class:`MissingDependencyError` naming the install command when a package
        this family's model needs (:attr:`requires`) is missing."""
        import importlib.util

        missing = [p for p in self.requires if importlib.util.find_spec(p) is None]
        if missing:
            raise MissingDependencyError(
                f"a {self.name} model needs {', '.join(missing)}, which is not installed: "
                f'pip install "samtune[{self.name}]" (or pip install {" ".join(missing)})'
            )

    def target(self, part: str) -> str:
        """The regex of :attr:`targets` ``[part]``; a :class:`ConfigError` when this family's
        image encoder has no such part (the message names the strategies that apply)."""
        if part not in self.targets:
            raise ConfigError(
                f"the {self.name} family's image encoder ({self.encoder}) has no "
                f"{_PART_WORDS.get(part, part)}; on {self.name} use the 'decoder' or 'full' "
                f"strategy, 'lora' with decoder_attention: true (LoRA on the mask decoder's "
                f"attention only), or 'peft' with target_modules naming mask-decoder layers"
            )
        return self.targets[part]

    def image_size(self, config: Any) -> int:
        """The side of the square model input, in pixels."""
        # SAM's vision config states it; SAM 2's sits in the backbone, the prompt encoder's
        # copy is the one every family has.
        size = getattr(config.vision_config, "image_size", None)
        return int(size if size is not None else config.prompt_encoder_config.image_size)

    def low_res_size(self, config: Any) -> int:
        """The side of the mask decoder's low-resolution logits (4x the embedding grid)."""
        patch = getattr(config.vision_config, "patch_size", None)
        patch = patch if patch is not None else config.prompt_encoder_config.patch_size
        return 4 * (self.image_size(config) // int(patch))


_PART_WORDS = {
    "blocks": "transformer blocks (adapters and `blocks` need them)",
    "qkv": "attention to adapt (no query/key/value projections)",
    "proj": "attention output projection",
    "mlp": "transformer MLP",
}

_DECODER_ATTENTION = (
    r"mask_decoder\.transformer\.(?:layers\.\d+\.(?:self_attn|cross_attn_token_to_image|"
    r"cross_attn_image_to_token)|final_attn_token_to_image)\.(?:q_proj|v_proj)"
)
_VIT_BLOCKS = r"vision_encoder\.layers\.\d+"
_VIT_TARGETS = {
    "blocks": _VIT_BLOCKS,
    "qkv": _VIT_BLOCKS + r"\.attn\.qkv",
    "proj": _VIT_BLOCKS + r"\.attn\.proj",
    "mlp": _VIT_BLOCKS + r"\.mlp\.lin[12]",
    "decoder_attention": _DECODER_ATTENTION,
}
_HIERA_BLOCKS = r"vision_encoder\.backbone\.blocks\.\d+"

SAM = Family(
    name="sam",
    model_class=SamModel,
    config_class=SamConfig,
    model_type="sam",
    square_resize=False,
    encoder_outputs="image embeddings (B, C, s, s)",
    targets=_VIT_TARGETS,
    fixed=("shared_image_embedding.positional_embedding",),
)
SAM_HQ = Family(
    name="sam-hq",
    model_class=SamHQModel,
    config_class=SamHQConfig,
    model_type="sam_hq",
    square_resize=False,
    encoder_outputs="(image embeddings (B, C, s, s), first global block's features "
    "(B, s, s, D)): the HQ decoder fuses both",
    targets=_VIT_TARGETS,
    fixed=("shared_image_embedding.positional_embedding",),
)
SAM2 = Family(
    name="sam2",
    model_class=Sam2Model,
    config_class=Sam2Config,
    model_type="sam2",
    square_resize=True,
    encoder_outputs="the FPN levels (B, C, 4s, 4s), (B, C, 2s, 2s), (B, C, s, s) before the "
    "decoder's conv_s0/conv_s1 and the no-memory embedding",
    encoder_extras=("no_memory_embedding",),
    targets={
        "blocks": _HIERA_BLOCKS,
        "qkv": _HIERA_BLOCKS + r"\.attn\.qkv",
        "proj": _HIERA_BLOCKS + r"\.attn\.proj",
        "mlp": _HIERA_BLOCKS + r"\.mlp\.proj_(?:in|out)",
        "decoder_attention": _DECODER_ATTENTION,
    },
    sam2_like=True,
    encoder="Hiera",
)
_SAM3_VIT_BLOCKS = r"vision_encoder\.backbone\.layers\.\d+"
SAM3_TRACKER = Family(
    name="sam3-tracker",
    model_class=Sam3TrackerModel,
    config_class=Sam3TrackerConfig,
    model_type="sam3_tracker",
    square_resize=True,
    encoder_outputs="SAM 3's ViT-neck FPN levels (B, C, 4s, 4s), (B, C, 2s, 2s), (B, C, s, s) "
    "(its 0.5x level dropped, as Sam3TrackerModel does) before the decoder's conv_s0/conv_s1 "
    "and the no-memory embedding",
    encoder_extras=("no_memory_embedding",),
    targets={
        "blocks": _SAM3_VIT_BLOCKS,
        # SAM 3's ViT projects query, key and value separately (no fused qkv)
        "qkv": _SAM3_VIT_BLOCKS + r"\.attention\.(?:q_proj|k_proj|v_proj)",
        "proj": _SAM3_VIT_BLOCKS + r"\.attention\.o_proj",
        "mlp": _SAM3_VIT_BLOCKS + r"\.mlp\.fc[12]",
        "decoder_attention": _DECODER_ATTENTION,
    },
    sam2_like=True,
    encoder="SAM 3's ViT (RoPE, windowed and global attention)",
    pixel_mean=HALF_PIXEL,
    pixel_std=HALF_PIXEL,
    block_attention="attention",
)
EDGETAM = Family(
    name="edgetam",
    model_class=EdgeTamModel,
    config_class=EdgeTamConfig,
    model_type="edgetam",
    square_resize=True,
    encoder_outputs="the FPN levels of its RepViT (B, C, 4s, 4s), (B, C, 2s, 2s), (B, C, s, s) "
    "before the decoder's conv_s0/conv_s1 and the no-memory embedding",
    encoder_extras=("no_memory_embedding",),
    # RepViT (timm) is a convolutional network: no attention, no transformer blocks.
    targets={"decoder_attention": _DECODER_ATTENTION},
    sam2_like=True,
    encoder="RepViT, a convolutional network through timm",
    requires=("timm",),
)

_SAM3_BLOCKS = r"vision_encoder\.backbone\.layers\.\d+"
_SAM3_TEXT_LAYERS = r"text_encoder\.text_model\.encoder\.layers\.\d+"
SAM3 = Family(
    name="sam3",
    model_class=Sam3Model,
    config_class=Sam3Config,
    model_type="sam3",
    square_resize=True,
    encoder_outputs="the vision encoder's output (Sam3VisionEncoderOutput: FPN levels and "
    "their position encodings), reused for every phrase",
    targets={
        "blocks": _SAM3_BLOCKS,
        # the encoders' attention: the ViT backbone's and the CLIP text encoder's
        "qkv": rf"(?:{_SAM3_BLOCKS}\.attention|{_SAM3_TEXT_LAYERS}\.self_attn)\.[qkv]_proj",
        "proj": rf"(?:{_SAM3_BLOCKS}\.attention\.o_proj|{_SAM3_TEXT_LAYERS}\.self_attn\.out_proj)",
        "mlp": _SAM3_BLOCKS + r"\.mlp\.fc[12]",
        # the DETR encoder's and decoder's attention (self, text and image cross-attention)
        "decoder_attention": r"detr_(?:encoder|decoder)\.layers\.\d+\."
        r"(?:self_attn|cross_attn|text_cross_attn|vision_cross_attn)\.(?:q_proj|v_proj)",
    },
    has_text=True,
    pixel_mean=(127.5, 127.5, 127.5),
    pixel_std=(127.5, 127.5, 127.5),
    decoder_modules=("detr_decoder", "mask_decoder", "dot_product_scoring"),
    prompt_modules=("geometry_encoder", "text_projection"),
    block_attention="attention",
)

FAMILIES: dict[str, Family] = {f.name: f for f in (SAM, SAM_HQ, SAM2, SAM3_TRACKER, EDGETAM, SAM3)}
_BY_MODEL_TYPE = {f.model_type: f for f in FAMILIES.values()}


def family_named(name: str) -> Family:
    """The family called ``name`` (``sam``, ``sam-hq``, ``sam2``, ``sam3-tracker``, ``edgetam``,
    ``sam3``)."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown SAM family {name!r}; samtune knows {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of_model_type(model_type: Any, where: str = "the config") -> Family:
    """The family whose config has this ``model_type`` (as in a ``config.json``)."""
    if model_type not in _BY_MODEL_TYPE:
        raise CheckpointError(
            f"{where} holds a {model_type!r} model, not SAM, SAM-HQ, SAM 2, SAM 3's tracker, "
            f"EdgeTAM or SAM 3 (model_type "
            f"{', '.join(repr(t) for t in _BY_MODEL_TYPE)})"
        )
    return _BY_MODEL_TYPE[model_type]


def family_of(model_or_config: Any) -> Family:
    """The family of a model (wrapped by Accelerate/DDP or not), a config, or a model_type."""
    if isinstance(model_or_config, str):
        return family_of_model_type(model_or_config)
    target = model_or_config
    while hasattr(target, "module") and not hasattr(target, "config"):
        target = target.module
    config = getattr(target, "config", target)
    return family_of_model_type(getattr(config, "model_type", None), type(target).__name__)


__all__ = [
    "EDGETAM",
    "FAMILIES",
    "SAM",
    "SAM2",
    "SAM3",
    "SAM3_TRACKER",
    "SAM_HQ",
    "Family",
    "family_named",
    "family_of",
    "family_of_model_type",
]
