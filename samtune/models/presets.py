"""Built-in models by name: ``tiny``/``tiny-hq``/``tiny-sam2``/``tiny-sam3-tracker``/
``tiny-edgetam``/``tiny-sam3`` (random, for tests), ``vit-b``-style configs, and ``demo`` (the
bundled pretrained demo SAM); :func:`sam_from_config` builds any family's model from its
config, initialised as the original code does."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PretrainedConfig, Sam2Config, Sam3Config, SamConfig, SamHQConfig, SamModel

from .family import SAM3, family_of
from .identity import samtune_info

DEFAULT_HUB_MODEL = "facebook/sam-vit-base"


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


def tiny_sam3_config(image_size: int = 112) -> Sam3Config:
    """A SAM 3 small enough to run on a CPU in a second, with the structure of the real one:
    a 2-layer 32-wide ViT (patch 14, one windowed and one global layer) and its 4-level FPN, a
    2-layer CLIP text encoder over :func:`samtune.models.text.tiny_clip_tokenizer`'s
    vocabulary (32 positions, as Sam3Processor pads), one geometry and one DETR encoder layer, two DETR decoder
    layers with 8 queries, and a 32-wide mask decoder."""
    from .text import tiny_vocabulary

    vocab, _ = tiny_vocabulary()
    grid = image_size // 14
    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model",
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=14,
                window_size=max(grid // 2, 1),
                global_attn_indexes=[1],
                pretrain_image_size=image_size,
            ),
            fpn_hidden_size=32,
            backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
        ),
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=32,  # Sam3Processor pads phrases to 32 tokens
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        geometry_encoder_config=dict(
            hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        detr_encoder_config=dict(
            hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        detr_decoder_config=dict(
            hidden_size=32, num_layers=2, num_queries=8, num_attention_heads=2, intermediate_size=64
        ),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
    )


def _tiny_sam3(seed: int) -> torch.nn.Module:
    """The ``tiny-sam3`` preset: :func:`tiny_sam3_config`, initialised as Meta's code does
    (:func:`_original_sam3_init`), with its tiny tokenizer attached."""
    from .text import tiny_clip_tokenizer

    model = sam_from_config(tiny_sam3_config(), seed)
    samtune_info(model).tokenizer = tiny_clip_tokenizer()
    return model


def _sam2_style_parts(image_size: int) -> dict:
    """The 32-wide prompt encoder and mask decoder of every tiny SAM 2-style preset."""
    return dict(
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )


def tiny_sam3_tracker_config(image_size: int = 128) -> PretrainedConfig:
    """A SAM 3 tracker small enough to train on a CPU in seconds: SAM 3's ViT (RoPE, windowed
    and global attention; 32 wide, 2 layers, 16-pixel patches instead of 14 so that 128 px
    gives an 8x8 grid) and its four-level neck (4x, 2x, 1x, 0.5x; the prompted model reads
    the first three), with a 32-wide SAM 2-style decoder."""
    from transformers import Sam3TrackerConfig
    from transformers.models.sam3.configuration_sam3 import Sam3VisionConfig, Sam3ViTConfig

    grid = image_size // 16
    vit = Sam3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=16,
        window_size=max(grid // 2, 1),
        global_attn_indexes=[1],
        pretrain_image_size=image_size // 2,  # position table tiled, as SAM 3 tiles 336 to 1008
    )
    vision = Sam3VisionConfig(
        backbone_config=vit,
        fpn_hidden_size=32,
        backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
    )
    return Sam3TrackerConfig(vision_config=vision, **_sam2_style_parts(image_size))


def tiny_edgetam_config(image_size: int = 128) -> PretrainedConfig:
    """An EdgeTAM small enough to train on a CPU in seconds: timm's RepViT with one block per
    stage, 16 to 128 wide (EdgeTAM: ``repvit_m1``, 48 to 384), its FPN neck (top-down on the
    two coarsest levels) and a 32-wide SAM 2-style decoder. Needs ``timm``."""
    from transformers import EdgeTamConfig, TimmWrapperConfig
    from transformers.models.edgetam.configuration_edgetam import EdgeTamVisionConfig

    grid = image_size // 16
    backbone = TimmWrapperConfig(
        architecture="repvit_m1",
        model_args=dict(
            in_chans=3,
            features_only=True,
            out_indices=[0, 1, 2, 3],
            embed_dim=[16, 32, 64, 128],
            depth=[1, 1, 1, 1],
        ),
    )
    vision = EdgeTamVisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        fpn_hidden_size=32,
    )
    return EdgeTamConfig(vision_config=vision, **_sam2_style_parts(image_size))


def _vitdet_init(backbone: torch.nn.Module) -> None:
    """SAM 3's ViT as its ``vitdet.py`` starts it (SAM 3 and its tracker share it): linear
    weights truncated N(0, 0.02), biases zero, the position table truncated N(0, 0.02)."""
    for module in backbone.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
            torch.nn.init.zeros_(module.bias)
    torch.nn.init.trunc_normal_(backbone.embeddings.position_embeddings, std=0.02)


def _original_backbone_init(model: torch.nn.Module) -> None:
    """Re-initialise the image-encoder backbones whose original code does not use PyTorch's
    defaults: SAM 3's ViT (:func:`_vitdet_init`); EdgeTAM's RepViT as timm builds it
    (batch-norm weights one, zero on each residual branch's last one), drawn by timm itself."""
    family = family_of(model)
    if family.name == "sam3-tracker":
        _vitdet_init(model.vision_encoder.backbone)
    elif family.name == "edgetam":
        import timm

        cfg = model.config.vision_config.backbone_config
        fresh = timm.create_model(cfg.architecture, pretrained=False, **cfg.model_args)
        model.vision_encoder.backbone.timm_model.load_state_dict(fresh.state_dict())


def sam_from_config(config: PretrainedConfig, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised SAM-family model that trains from scratch the way Meta's does.

    ``config`` is a ``SamConfig``, ``SamHQConfig``, ``Sam2Config``, ``Sam3TrackerConfig`` or
    ``EdgeTamConfig``; the model is of its family's class.

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
    no-memory embedding drawn from N(0, 0.02) (``trunc_normal_`` in Meta's code). SAM 3's
    tracker and EdgeTAM take SAM 2's decoder and these rules; their backbones follow their
    own code (:func:`_original_backbone_init`).

    SAM 3 (``Sam3Config``) follows its own code too (:func:`_original_sam3_init`).
    """
    family = family_of(config)
    family.check_requirements()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family.model_class(config)
        if family is SAM3:
            _original_sam3_init(model)
            return model.eval()
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
            _original_backbone_init(model)
    return model.eval()


_DETR_NOT_XAVIER = ("box_head", "query_embed", "reference_points")


@torch.no_grad()
def _original_sam3_init(model: torch.nn.Module) -> None:
    """Initialise a ``Sam3Model`` as Meta's ``sam3`` code does when it builds one untrained.

    transformers draws every linear and convolution weight from N(0, 0.02) whatever the
    width. At a small width that shrinks each layer's output (a 32-wide linear layer scales
    its input by about 0.1), so the image features reaching the DETR encoder are about a
    tenth of the positional encoding added to them: a demo-size model trained that way
    takes thousands of steps before its scores depend on the image or the phrase. Meta's code
    (``sam3/model``) leaves every layer at PyTorch's default except:

    - the ViT (``vitdet.py``): linear weights truncated N(0, 0.02), biases zero, the
      position table N(0, 0.02);
    - the DETR encoder and decoder (``TransformerWrapper._reset_parameters``): every weight
      matrix Xavier-uniform but the box head's, the query embeddings' and the reference
      points'; the box head's last layer zero (``box_refine``); query embeddings N(0, 1);
    - attention: ``nn.MultiheadAttention``, whose query, key and value weights are one
      Xavier-uniform ``(3d, d)`` matrix and whose biases are zero;
    - the text encoder, loaded from CLIP in Meta's code, keeps transformers' CLIP
      initialisation.
    """
    for name, module in model.named_modules():
        if name.startswith("text_encoder") or module is model:
            continue
        if hasattr(module, "reset_parameters") and not any(module.children()):
            module.reset_parameters()
    for name, module in model.named_modules():
        if name.startswith("text_encoder") or not all(
            hasattr(module, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ):
            continue
        stacked = torch.empty(3 * module.q_proj.out_features, module.q_proj.in_features)
        torch.nn.init.xavier_uniform_(stacked)
        for proj, part in zip(
            (module.q_proj, module.k_proj, module.v_proj), stacked.chunk(3), strict=True
        ):
            proj.weight.copy_(part)
        for proj in (module.q_proj, module.k_proj, module.v_proj, module.o_proj):
            if proj.bias is not None:
                proj.bias.zero_()
    _vitdet_init(model.vision_encoder.backbone)
    for prefix in ("detr_encoder", "detr_decoder"):
        for name, param in getattr(model, prefix).named_parameters():
            if param.dim() > 1 and not any(part in name for part in _DETR_NOT_XAVIER):
                if not name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
                    torch.nn.init.xavier_uniform_(param)
    last = model.detr_decoder.box_head.layer3
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    torch.nn.init.normal_(model.detr_decoder.query_embed.weight)


def _load_demo(_seed: int) -> SamModel:
    """The bundled demo model (pretrained: the seed of random presets does not apply)."""
    from .demo import load_bundled_demo_model

    return load_bundled_demo_model()


def _load_demo_sam3(_seed: int) -> torch.nn.Module:
    """The bundled demo SAM 3 (pretrained: the seed of random presets does not apply)."""
    from .demo import load_bundled_demo_sam3

    return load_bundled_demo_sam3()


PRESET_FAMILIES = {
    "tiny-hq": "sam-hq",
    "tiny-sam2": "sam2",
    "tiny-sam3-tracker": "sam3-tracker",
    "tiny-edgetam": "edgetam",
    "tiny-sam3": "sam3",
    "demo-sam3": "sam3",
}
"""The family of each preset that is not SAM (``samtune.models.family``), known without
building it."""


def preset_family(name: str) -> str:
    """The family name of the preset ``name``."""
    return PRESET_FAMILIES.get(name, "sam")


def list_presets() -> dict[str, str]:
    return {name: desc for name, (desc, _) in PRESETS.items()}


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
    "tiny-sam3": (
        "tiny random SAM 3 (32-wide ViT and CLIP text encoder, 8 queries, 112 px) for tests",
        _tiny_sam3,
    ),
    "tiny-sam3-tracker": (
        "tiny random SAM 3 tracker (SAM 3's ViT, 32 wide, 2 layers, 128 px) for tests",
        lambda s: sam_from_config(tiny_sam3_tracker_config(), s),
    ),
    "tiny-edgetam": (
        "tiny random EdgeTAM (timm RepViT, 16-128 wide, 128 px; needs timm) for tests",
        lambda s: sam_from_config(tiny_edgetam_config(), s),
    ),
    "demo": (
        "small SAM pretrained on synthetic scenes, bundled with samtune (demo only)",
        _load_demo,
    ),
    "demo-sam3": (
        "small SAM 3 pretrained to find named objects in synthetic scenes, bundled (demo only)",
        _load_demo_sam3,
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
