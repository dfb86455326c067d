"""A SAM 3 built untrained (presets, ``sam_from_config``) starts as Meta's ``sam3`` code starts
it, not at transformers' N(0, 0.02) everywhere (see ``presets._original_sam3_init``)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers.models.sam3")

from samtune.models.demo import demo_sam3_config  # noqa: E402
from samtune.models.presets import sam_from_config  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return sam_from_config(demo_sam3_config(), seed=3)


def _std(t: torch.Tensor) -> float:
    return float(t.detach().float().std())


def test_detr_follows_metas_transformer_wrapper(model):
    decoder = model.detr_decoder
    last = decoder.box_head.layer3  # box_refine: the last box layer starts at zero
    assert not last.weight.detach().any() and not last.bias.detach().any()
    assert 0.8 < _std(decoder.query_embed.weight) < 1.2  # nn.init.normal_
    d = decoder.config.hidden_size
    for attn in (decoder.layers[0].self_attn, model.detr_encoder.layers[0].cross_attn):
        # nn.MultiheadAttention: q, k, v one Xavier-uniform (3d, d) matrix, zero biases
        bound = math.sqrt(6 / (d + 3 * d))
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            assert float(proj.weight.detach().abs().max()) <= bound + 1e-6
            assert _std(proj.weight) == pytest.approx(bound / math.sqrt(3), rel=0.15)
            assert not proj.bias.detach().any()
    # every other DETR matrix Xavier-uniform: fc1 (2d x d) has std sqrt(2 / (3d))
    fc1 = decoder.layers[0].mlp.fc1.weight
    assert _std(fc1) == pytest.approx(math.sqrt(2 / (fc1.shape[0] + fc1.shape[1])), rel=0.15)


def test_the_rest_is_pytorch_default_and_the_vit_is_vitdet(model):
    conv = model.vision_encoder.neck.fpn_layers[0].proj1  # PyTorch default: std 1/sqrt(3 fan_in)
    fan_in = conv.weight[0].numel()
    assert _std(conv.weight) == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.15)
    proj = model.mask_decoder.instance_projection
    fan_in = proj.weight[0].numel()
    assert _std(proj.weight) == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.2)
    q = model.vision_encoder.backbone.layers[0].attention.q_proj  # ViTDet: trunc N(0, 0.02)
    assert 0.015 < _std(q.weight) < 0.025 and not q.bias.detach().any()


def test_the_text_encoder_keeps_transformers_clip_init(model):
    from transformers import Sam3Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        plain = Sam3Model(demo_sam3_config())
    for (name, got), want in zip(
        model.text_encoder.state_dict().items(),
        plain.text_encoder.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(got, want), name


def test_image_features_are_not_dwarfed_by_the_position_encoding(model):
    """The point of the change: at transformers' init the FPN level the DETR encoder reads has
    0.11 of the std of the sine position encoding added to it (0.3 here), so little
    downstream tells images apart for thousands of steps."""
    pixels = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        vision = model.get_vision_features(pixel_values=pixels)
    features, position = vision.fpn_hidden_states[-1], vision.fpn_position_encoding[-1]
    assert _std(features) > 0.2 * _std(position)
