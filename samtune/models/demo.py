"""The demo models bundled with samtune.

* ``demo``: a small SAM (128 px input, 0.7 M parameters) pretrained by
  ``tools/pretrain_demo_model.py`` on procedurally drawn generic shapes. It exists so that the
  quick start can fine-tune and evaluate offline in a couple of minutes on a CPU.
* ``demo-sam3``: a small SAM 3 (128 px input, 0.5 M parameters, with the tiny offline CLIP
  tokenizer of :mod:`samtune.models.text`) that ``tools/pretrain_demo_sam3.py`` pretrains to
  find objects named by a phrase ("bottle", "plastic bag", "tire"...) in generic scenes, so
  that training by name (``--prompt text``) can show its lift offline.

They are demo models: for real work use Meta's (``facebook/sam-vit-base|large|huge``, a
``sam_vit_*.pth`` checkpoint, ``facebook/sam3``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from transformers import Sam3Config, SamConfig, SamModel

from ..errors import MissingFileError

DEMO_MODEL_DIR = "assets/demo_model"
DEMO_SAM3_DIR = "assets/demo_sam3_model"


def demo_config() -> SamConfig:
    """The demo model's architecture: SAM's structure, scaled to 128 px and 0.7 M parameters."""
    return SamConfig(
        vision_config=dict(
            hidden_size=96,
            output_channels=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=128,
            patch_size=8,
            mlp_dim=384,
            window_size=8,
            global_attn_indexes=[1, 3],
            num_pos_feats=32,
        ),
        prompt_encoder_config=dict(hidden_size=64, image_size=128, patch_size=8),
        mask_decoder_config=dict(
            hidden_size=64,
            mlp_dim=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            iou_head_hidden_dim=64,
        ),
    )


def demo_model_path(folder: str = DEMO_MODEL_DIR) -> Path:
    return Path(str(resources.files("samtune").joinpath(folder)))


def _bundled_weights(folder: str, tool: str) -> dict:
    """The fp16 weights bundled in ``samtune/<folder>``, as fp32; one clear error if absent."""
    from safetensors.torch import load_file

    weights = demo_model_path(folder) / "model.safetensors"
    if not weights.is_file():
        raise MissingFileError(
            f"the bundled demo model is missing ({weights}); reinstall samtune, or rebuild it "
            f"with `python tools/{tool}`"
        )
    return {k: v.float() for k, v in load_file(weights).items()}


def load_bundled_demo_model() -> SamModel:
    """Load the bundled demo model (fp32)."""
    model = SamModel(demo_config())
    sd = _bundled_weights(DEMO_MODEL_DIR, "pretrain_demo_model.py")
    sd["prompt_encoder.shared_embedding.positional_embedding"] = sd[
        "shared_image_embedding.positional_embedding"
    ]
    model.load_state_dict(sd, strict=True)
    return model.eval()


def demo_sam3_config() -> Sam3Config:
    """The ``demo-sam3`` architecture: SAM 3's structure at 128 px and 0.5 M parameters.

    A 4-layer 64-wide ViT with patch 8 (a 16 x 16 grid; layers 2 and 4 global, the others in
    8 x 8 windows) and its FPN (64, 32 and 16 px levels, 32 wide); a 2-layer 32-wide CLIP text
    encoder over the tiny tokenizer's vocabulary; one geometry layer, two DETR encoder layers,
    three DETR decoder layers with 16 queries, and a 32-wide mask decoder (64 x 64 masks).
    Sized so that a training step by name on 2 images and 4 phrases takes well under a
    second on one CPU core.
    """
    from .text import tiny_vocabulary

    vocab, _ = tiny_vocabulary()
    width, grid = 32, 16
    layer = dict(hidden_size=width, num_attention_heads=4, intermediate_size=2 * width)
    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model",
                hidden_size=64,
                intermediate_size=256,
                num_hidden_layers=4,
                num_attention_heads=4,
                image_size=128,
                patch_size=8,
                window_size=grid // 2,
                global_attn_indexes=[1, 3],
                pretrain_image_size=128,
            ),
            fpn_hidden_size=width,
            backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
        ),
        text_config=dict(
            vocab_size=len(vocab),
            **layer,
            projection_dim=width,
            num_hidden_layers=2,
            max_position_embeddings=32,  # Sam3Processor pads phrases to 32 tokens
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        geometry_encoder_config=dict(**layer, num_layers=1),
        detr_encoder_config=dict(**layer, num_layers=2),
        detr_decoder_config=dict(**layer, num_layers=3, num_queries=16),
        mask_decoder_config=dict(hidden_size=width, num_attention_heads=4),
    )


def load_bundled_demo_sam3() -> torch.nn.Module:
    """Load the bundled ``demo-sam3`` model (fp32), its tiny offline tokenizer attached."""
    from transformers import Sam3Model

    from .identity import samtune_info
    from .text import tiny_clip_tokenizer

    model = Sam3Model(demo_sam3_config())
    model.load_state_dict(_bundled_weights(DEMO_SAM3_DIR, "pretrain_demo_sam3.py"), strict=True)
    samtune_info(model).tokenizer = tiny_clip_tokenizer()
    return model.eval()
