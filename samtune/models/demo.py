"""The demo SAM bundled with samtune.

A small SAM (128 px input, 0.7 M parameters) pretrained by ``tools/pretrain_demo_model.py`` on
procedurally drawn generic shapes. It exists so that the quick start can fine-tune and evaluate
offline in a couple of minutes on a CPU. It is a demo model: for real work use Meta's SAM
(``facebook/sam-vit-base|large|huge`` or a ``sam_vit_*.pth`` checkpoint).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from transformers import SamConfig, SamModel

from ..errors import MissingFileError

DEMO_MODEL_DIR = "assets/demo_model"


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


def demo_model_path() -> Path:
    return Path(str(resources.files("samtune").joinpath(DEMO_MODEL_DIR)))


def load_bundled_demo_model() -> SamModel:
    """Load the bundled demo model (fp32)."""
    from safetensors.torch import load_file

    weights = demo_model_path() / "model.safetensors"
    if not weights.is_file():
        raise MissingFileError(
            f"the bundled demo model is missing ({weights}); reinstall samtune, or rebuild it "
            "with `python tools/pretrain_demo_model.py`"
        )
    model = SamModel(demo_config())
    sd = {k: v.float() for k, v in load_file(weights).items()}
    sd["prompt_encoder.shared_embedding.positional_embedding"] = sd[
        "shared_image_embedding.positional_embedding"
    ]
    model.load_state_dict(sd, strict=True)
    return model.eval()
