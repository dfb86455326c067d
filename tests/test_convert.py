"""Meta segment_anything <-> HF SamModel conversion, with Meta's own code as the oracle."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_
from transformers import SamConfig

from samtune.models.convert import sam as convert
from samtune.models.loading import load_model
from samtune.models.presets import tiny_config, vit_config


def _meta_config(config: SamConfig) -> SamConfig:
    config.mask_decoder_config.layer_norm_eps = 1e-5  # Meta's nn.LayerNorm default
    return config


def _small_custom_config() -> SamConfig:
    """Deliberately unlike ViT-B/L/H: 3 blocks, 2 global ones, 96 px, odd widths."""
    return SamConfig(
        vision_config=dict(
            hidden_size=48,
            output_channels=32,
            num_hidden_layers=3,
            num_attention_heads=3,
            image_size=96,
            patch_size=16,
            mlp_dim=96,
            window_size=4,
            global_attn_indexes=[0, 2],
            num_pos_feats=16,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=96, patch_size=16),
        mask_decoder_config=dict(
            hidden_size=32,
            mlp_dim=48,
            num_hidden_layers=2,
            num_attention_heads=8,
            iou_head_hidden_dim=24,
            iou_head_depth=3,
        ),
    )


def _meta_forward(sam, emb, points=None, boxes=None):
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    low_res, iou = sam.mask_decoder(
        image_embeddings=emb,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
    return low_res, iou


def _check_parity(config: SamConfig, seed: int = 0, atol: float = 1e-4) -> None:
    meta = randomize_(convert.build_meta_sam(_meta_config(config)), seed=seed).eval()
    hf = convert.sam_model_from_meta_state_dict(meta.state_dict()).eval()
    size = config.vision_config.image_size
    g = torch.Generator().manual_seed(seed + 1)
    image = torch.randn(1, 3, size, size, generator=g)
    box = torch.tensor([[0.1 * size, 0.2 * size, 0.7 * size, 0.9 * size]])
    pts = torch.tensor([[[0.3 * size, 0.4 * size], [0.8 * size, 0.1 * size]]])
    labels = torch.tensor([[1, 0]])
    with torch.no_grad():
        emb_meta = meta.image_encoder(image)  # once: at ViT-B size it is most of the test's time
        masks_box_meta, iou_box_meta = _meta_forward(meta, emb_meta, boxes=box)
        masks_pt_meta, iou_pt_meta = _meta_forward(meta, emb_meta, points=(pts, labels))
        emb_hf = hf.get_image_embeddings(image)
        out_box = hf(image_embeddings=emb_hf, input_boxes=box[None], multimask_output=True)
        out_pt = hf(
            image_embeddings=emb_hf,
            input_points=pts[None],
            input_labels=labels[None],
            multimask_output=True,
        )
    assert emb_meta.abs().max() > 1e-2  # a real signal, not zeros on both sides
    torch.testing.assert_close(emb_hf, emb_meta, atol=atol, rtol=0)
    torch.testing.assert_close(out_box.pred_masks[0], masks_box_meta, atol=atol, rtol=0)
    torch.testing.assert_close(out_box.iou_scores[0], iou_box_meta, atol=atol, rtol=0)
    torch.testing.assert_close(out_pt.pred_masks[0], masks_pt_meta, atol=atol, rtol=0)
    torch.testing.assert_close(out_pt.iou_scores[0], iou_pt_meta, atol=atol, rtol=0)


@pytest.mark.parametrize("make_config", [tiny_config, _small_custom_config], ids=["tiny", "custom"])
def test_meta_parity_small(make_config):
    _check_parity(make_config())


@pytest.mark.slow
def test_meta_parity_vit_b():
    _check_parity(vit_config("b"), atol=1e-4)


def test_inferred_config_matches_architecture():
    config = _meta_config(_small_custom_config())
    meta = convert.build_meta_sam(config)
    inferred = convert.config_from_meta_state_dict(meta.state_dict())
    v, iv = config.vision_config, inferred.vision_config
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "image_size",
        "window_size",
        "output_channels",
        "num_pos_feats",
        "mlp_dim",
    ):
        assert getattr(iv, field) == getattr(v, field), field
    assert list(iv.global_attn_indexes) == [0, 2]
    d, idd = config.mask_decoder_config, inferred.mask_decoder_config
    for field in (
        "hidden_size",
        "mlp_dim",
        "num_hidden_layers",
        "iou_head_hidden_dim",
        "iou_head_depth",
        "num_multimask_outputs",
        "attention_downsample_rate",
    ):
        assert getattr(idd, field) == getattr(d, field), field


def test_round_trip_hf_meta_hf_is_exact():
    hf = load_model("tiny", seed=3)
    sd = hf.state_dict()
    meta_sd = convert.hf_to_meta_state_dict(sd)
    # Meta's own model accepts every key, strictly.
    meta = convert.build_meta_sam(hf.config)
    meta.load_state_dict(meta_sd, strict=True)
    back = convert.meta_to_hf_state_dict(meta_sd)
    assert set(back) == set(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k


def test_wrapper_prefix_is_stripped():
    meta = convert.build_meta_sam(tiny_config())
    wrapped = {f"model.{k}": v for k, v in meta.state_dict().items()}
    hf = convert.sam_model_from_meta_state_dict(wrapped)
    assert hf.config.vision_config.hidden_size == 32


def test_building_meta_sam_without_segment_anything_names_the_extra(monkeypatch):
    import sys

    from samtune.errors import MissingDependencyError
    from samtune.models.presets import tiny_config

    monkeypatch.setitem(sys.modules, "segment_anything.modeling", None)
    with pytest.raises(MissingDependencyError, match=r"samtune\[meta\]"):
        convert.build_meta_sam(tiny_config())
