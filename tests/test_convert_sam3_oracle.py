"""SAM 3's original format against Meta's own ``sam3`` package (skipped where it is not
installed; ``pip install sam3`` beside samtune, or put its unpacked wheel on PYTHONPATH).

Meta's builders cannot make the model here: ``build_sam3_image_model`` hard-codes the 1008 px,
1024-wide model (no size arguments) and, on a machine without CUDA, stops at its first line of
work: ``PositionEmbeddingSine(precompute_resolution=1008)`` allocates on ``device="cuda"``
(``sam3/model/position_encoding.py:47``; ``TransformerDecoder(resolution=, stride=)`` does the
same at ``sam3/model/decoder.py:281``); sam3 0.1.4's wheel also lacks the BPE vocabulary its
default ``bpe_path`` names (``tokenizer_ve.py:138``: FileNotFoundError). So :func:`_meta_model`
builds Meta's modules directly, at a small unusual size (ViT 48 wide, 3 heads, 126 px input
tiled from a 70 px position grid, 3x3 windows; a 40-wide detector with 5 heads), leaving those
caches out (they hold nothing the model's outputs depend on). Detection then pins memory
(``geometry_encoders.py:659``), which needs CUDA: on a CPU-only machine the test makes
``pin_memory`` a no-op.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("sam3.model.sam3_image")

from samtune.models.convert import sam3  # noqa: E402
from samtune.models.presets import sam_from_config  # noqa: E402
from samtune.models.text import tiny_clip_tokenizer  # noqa: E402

D, HEADS, FFN, CONTEXT, SIZE = 40, 5, 56, 24, 126


def _vit():
    from sam3.model.vitdet import ViT

    return ViT(img_size=SIZE, pretrain_img_size=70, patch_size=14, embed_dim=48, depth=3,
               num_heads=3, mlp_ratio=2.5, drop_path_rate=0.0, use_abs_pos=True,
               tile_abs_pos=True, global_att_blocks=(2,), rel_pos_blocks=(), use_rope=True,
               use_interp_rope=True, window_size=3, pretrain_use_cls_token=True,
               retain_cls_token=False, ln_pre=True, bias_patch_embed=False,
               use_act_checkpoint=False)  # fmt: skip


def _mha(batch_first: bool):
    """As the builder makes them: batch first in the DETR encoder only."""
    from sam3.model.model_misc import MultiheadAttentionWrapper

    return MultiheadAttentionWrapper(
        num_heads=HEADS, dropout=0.0, embed_dim=D, batch_first=batch_first
    )


def _encoder_layer(**pos):
    from sam3.model.encoder import TransformerEncoderLayer

    batch_first = pos.pop("batch_first")
    return TransformerEncoderLayer(
        activation="relu", d_model=D, dim_feedforward=FFN, dropout=0.0, pre_norm=True,
        self_attention=_mha(batch_first), cross_attention=_mha(batch_first), **pos,
    )  # fmt: skip


def _meta_model(tokenizer, vocab_size: int, seed: int):
    """Meta's ``Sam3Image`` wired as ``build_sam3_image_model`` wires it, at a small size,
    every parameter random (Meta zero-initialises some, which would hide a swapped pair)."""
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.vl_combiner import SAM3VLBackbone

    torch.manual_seed(seed)
    sine = lambda: PositionEmbeddingSine(num_pos_feats=D, normalize=True)  # noqa: E731
    neck = Sam3DualViTDetNeck(position_encoding=sine(), d_model=D, trunk=_vit(),
                              scale_factors=[4.0, 2.0, 1.0, 0.5], add_sam2_neck=True)  # fmt: skip
    text = VETextEncoder(d_model=D, tokenizer=tokenizer, width=32, heads=2, layers=2,
                         context_length=CONTEXT, vocab_size=vocab_size, use_act_checkpoint=False)  # fmt: skip
    encoder = TransformerEncoderFusion(
        layer=_encoder_layer(pos_enc_at_attn=True, pos_enc_at_cross_attn_keys=False,
                             pos_enc_at_cross_attn_queries=False, batch_first=True),
        num_layers=2, d_model=D, num_feature_levels=1, frozen=False, use_act_checkpoint=False,
        add_pooled_text_to_img_feat=False, pool_text_with_mask=True)  # fmt: skip
    decoder = TransformerDecoder(
        layer=TransformerDecoderLayer(activation="relu", d_model=D, dim_feedforward=FFN,
                                      dropout=0.0, cross_attention=_mha(False), n_heads=HEADS,
                                      use_text_cross_attention=True),
        num_layers=2, num_queries=6, return_intermediate=True, box_refine=True, dac=True,
        boxRPB="log", d_model=D, frozen=False, interaction_layer=None, presence_token=True,
        use_act_checkpoint=False)  # fmt: skip
    scoring = DotProductScoring(d_model=D, d_proj=D, prompt_mlp=MLP(
        D, FFN, D, 2, dropout=0.0, residual=True, out_norm=nn.LayerNorm(D)))  # fmt: skip
    segmentation = UniversalSegmentationHead(
        hidden_dim=D, upsampling_stages=3, aux_masks=False, presence_head=False,
        dot_product_scorer=None, act_ckpt=False, cross_attend_prompt=_mha(False),
        pixel_decoder=PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest",
                                   hidden_dim=D))  # fmt: skip
    geometry = SequenceGeometryEncoder(
        pos_enc=sine(), encode_boxes_as_points=False, points_direct_project=True,
        points_pool=True, points_pos_enc=True, boxes_direct_project=True, boxes_pool=True,
        boxes_pos_enc=True, d_model=D, num_layers=2, use_act_ckpt=False, add_cls=True,
        add_post_encode_proj=True,
        layer=_encoder_layer(pos_enc_at_attn=False, pos_enc_at_cross_attn_keys=True,
                             pos_enc_at_cross_attn_queries=False, batch_first=False))  # fmt: skip
    model = Sam3Image(
        backbone=SAM3VLBackbone(visual=neck, text=text, scalp=1),
        transformer=TransformerWrapper(encoder=encoder, decoder=decoder, d_model=D),
        input_geometry_encoder=geometry, segmentation_head=segmentation,
        num_feature_levels=1, o2m_mask_predict=True, dot_prod_scoring=scoring,
        use_instance_query=False, multimask_output=True, inst_interactive_predictor=None,
        matcher=None)  # fmt: skip
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            one = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(one + 0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture
def cpu_pinning(monkeypatch):
    if not torch.cuda.is_available():  # geometry_encoders.py:659 pins a 4-number tensor
        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer()


def _ids(tokenizer, phrase: str) -> torch.Tensor:
    """The phrase's token ids, padded with 0 as Meta's tokenizer pads (mask: ids != 0)."""
    enc = tokenizer([phrase], padding="max_length", max_length=CONTEXT, return_tensors="pt")
    return enc["input_ids"] * enc["attention_mask"]


def _meta_detect(meta, tokenizer, pixels, box=None) -> dict[str, torch.Tensor]:
    from sam3.model.data_misc import FindStage

    meta.backbone.language_backbone.tokenizer = lambda texts, context_length: _ids(
        tokenizer, texts[0]
    )
    stage = FindStage(img_ids=torch.tensor([0]), text_ids=torch.tensor([0]), input_boxes=None,
                      input_boxes_mask=None, input_boxes_label=None, input_points=None,
                      input_points_mask=None)  # fmt: skip
    prompt = meta._get_dummy_prompt()
    if box is not None:
        prompt.append_boxes(box.view(1, 1, 4), torch.tensor([[True]]))
    with torch.no_grad():
        backbone = meta.backbone.forward_image(pixels)
        backbone.update(meta.backbone.forward_text(["plastic bottle"], device="cpu"))
        out = meta.forward_grounding(backbone_out=backbone, find_input=stage,
                                     find_target=None, geometric_prompt=prompt)  # fmt: skip
    return {
        "fpn": backbone["backbone_fpn"],
        "pred_logits": out["pred_logits"].squeeze(-1),
        "pred_boxes": out["pred_boxes_xyxy"],
        "pred_masks": out["pred_masks"],
        "presence_logits": out["presence_logit_dec"],
    }


def _samtune_detect(model, tokenizer, pixels, box) -> dict[str, torch.Tensor]:
    ids = _ids(tokenizer, "plastic bottle")
    with torch.no_grad():
        fpn = model.vision_encoder(pixels).fpn_hidden_states[:-1]  # Meta's scalp=1 drops 0.5x
        # a box, or a padded one (label -10): both keep the geometry encoder's CLS token in
        # the prompt, as Meta's model always does
        boxes = box if box is not None else torch.full((1, 1, 4), 0.5)
        labels = torch.tensor([[1 if box is not None else -10]])
        out = model(pixel_values=pixels, input_ids=ids, attention_mask=(ids != 0).long(),
                    input_boxes=boxes, input_boxes_labels=labels)  # fmt: skip
    return {"fpn": fpn, **{k: out[k] for k in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits")}}  # fmt: skip


# max abs difference allowed (float32; measured on CPU: 5e-5 features, 6e-6 logits and
# boxes, 2.3e-4 on mask logits of magnitude 21)
TOLERANCE = {"fpn": 5e-4, "pred_logits": 1e-4, "pred_boxes": 1e-4, "pred_masks": 3e-3,
             "presence_logits": 1e-4}  # fmt: skip


def _assert_same(meta_out, ours) -> None:
    for name, tol in TOLERANCE.items():
        a, b = meta_out[name], ours[name]
        pairs = zip(a, b, strict=True) if name == "fpn" else [(a, b)]
        for x, y in pairs:
            assert (x - y).abs().max().item() <= tol, name


@pytest.mark.parametrize("prompt", ["phrase and box", "phrase"])
def test_meta_checkpoint_converts_to_the_same_detections(prompt, tokenizer, cpu_pinning, tmp_path):
    meta = _meta_model(None, len(tokenizer), seed=0)
    original = {f"detector.{k}": v for k, v in meta.state_dict().items()}
    original["tracker.no_mem_embed"] = torch.randn(1, 1, D)  # the video tracker rides along
    torch.save(original, tmp_path / "sam3.pt")

    with pytest.warns(match="no tokenizer"):
        model = sam3.load_original(
            tmp_path / "sam3.pt", text_num_attention_heads=2, num_attention_heads=HEADS
        )
    pixels = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    box = torch.tensor([[[0.45, 0.5, 0.4, 0.3]]]) if prompt == "phrase and box" else None
    _assert_same(_meta_detect(meta, tokenizer, pixels, box), _samtune_detect(model, tokenizer, pixels, box))  # fmt: skip

    sam3.save_sam3_checkpoint(model, tmp_path / "again.pt")
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert again.keys() == original.keys()
    assert all(torch.equal(again[k], original[k]) for k in original)


def test_samtune_export_loads_in_meta_with_the_same_detections(tokenizer, cpu_pinning, tmp_path):
    """A model that never was a Meta checkpoint (transformers' own init) written as sam3.pt:
    Meta's loader (build_sam3_image_model's) takes it, RoPE tables computed as Meta does."""
    from sam3.model_builder import _load_checkpoint

    meta = _meta_model(None, len(tokenizer), seed=0)
    sd = {f"detector.{k}": v for k, v in meta.state_dict().items()}
    config = sam3.sam3_config_from_state_dict(
        sd, text_num_attention_heads=2, num_attention_heads=HEADS
    )
    ours = sam_from_config(config, 7)
    sam3.save_sam3_checkpoint(ours, tmp_path / "sam3.pt")
    written = torch.load(tmp_path / "sam3.pt", weights_only=True)
    rope = [k for k in written if k.endswith("freqs_cis")]
    assert rope and all(torch.equal(written[k], sd[k]) for k in rope)

    _load_checkpoint(meta, tmp_path / "sam3.pt")  # Meta's own loader, 'detector.' stripped
    loaded = meta.state_dict()
    assert all(torch.equal(loaded[k[len("detector.") :]], v) for k, v in written.items())
    pixels = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    box = torch.tensor([[[0.3, 0.6, 0.2, 0.5]]])
    _assert_same(_meta_detect(meta, tokenizer, pixels, box), _samtune_detect(ours, tokenizer, pixels, box))  # fmt: skip
