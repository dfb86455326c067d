"""Meta's module built from a config keeps that config's LayerNorm epsilons (Meta's own code,
``segment_anything``, is the oracle: samtune's model and the Meta module must give the same
mask logits)."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_
from transformers import SamModel

from samtune.models.convert import sam as convert
from samtune.models.presets import tiny_config

pytest.importorskip("segment_anything")


def _pair(decoder_eps: float, prompt_eps: float, seed: int = 0):
    config = tiny_config()
    config.mask_decoder_config.layer_norm_eps = decoder_eps
    config.prompt_encoder_config.layer_norm_eps = prompt_eps
    hf = randomize_(SamModel(config), seed=seed).eval()
    meta = convert.build_meta_sam(hf.config).eval()
    meta.load_state_dict(convert.hf_to_meta_state_dict(hf.state_dict()), strict=True)
    return hf, meta


def _logits(hf, meta, seed: int = 1):
    size = hf.config.vision_config.image_size
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, size, size, generator=g)
    box = torch.tensor([[0.1 * size, 0.2 * size, 0.7 * size, 0.9 * size]])
    mask_input = torch.randn(1, 1, size // 4, size // 4, generator=g)  # low-res logits
    with torch.no_grad():
        emb = hf.get_image_embeddings(image)
        out = hf(image_embeddings=emb, input_boxes=box[None], input_masks=mask_input,
                 multimask_output=True)  # fmt: skip
        sparse, dense = meta.prompt_encoder(points=None, boxes=box, masks=mask_input)
        low_res, iou = meta.mask_decoder(
            image_embeddings=emb,
            image_pe=meta.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    return out.pred_masks[0], low_res, out.iou_scores[0], iou


@pytest.mark.parametrize(
    "decoder_eps, prompt_eps",
    [(1e-6, 1e-6), (1e-2, 1e-3)],  # HF's defaults (Meta's decoder has 1e-5), and unusual ones
    ids=["hf-defaults", "non-default"],
)
def test_meta_module_uses_the_config_layer_norm_eps(decoder_eps, prompt_eps):
    hf, meta = _pair(decoder_eps, prompt_eps)
    norms = [b.norm1 for b in meta.mask_decoder.transformer.layers]
    assert all(n.eps == decoder_eps for n in norms)
    assert meta.prompt_encoder.mask_downscaling[1].eps == prompt_eps
    hf_masks, meta_masks, hf_iou, meta_iou = _logits(hf, meta)
    assert hf_masks.abs().max() > 1e-2  # a real signal
    torch.testing.assert_close(meta_masks, hf_masks, atol=1e-5, rtol=0)
    torch.testing.assert_close(meta_iou, hf_iou, atol=1e-5, rtol=0)
