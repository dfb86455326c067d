"""SAM 3's original ``sam3.pt`` <-> ``Sam3Model`` (samtune.models.convert.sam3).

Fast tests on the ``tiny-sam3`` size: samtune -> Meta -> samtune is tensor-equal and
output-equal, Meta -> samtune -> Meta gives the same file content (the tracker and every tensor
``Sam3Model`` has no place for included), and the key names agree with transformers' own
conversion script. The oracle test against Meta's ``sam3`` package is in
``test_convert_sam3_oracle.py`` (skipped where the package is not installed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import samtune
from samtune.errors import AssumptionWarning
from samtune.models import fingerprint, preprocess_config
from samtune.models.convert import load_original_checkpoint, sam3, save_original_checkpoint
from samtune.models.identity import samtune_info
from samtune.models.presets import sam_from_config, tiny_sam3_config
from samtune.models.text import tokenize_phrases

_TRUNK = "detector.backbone.vision_backbone.trunk."


@pytest.fixture(scope="module")
def tiny():
    return samtune.load_model("tiny-sam3")


def _outputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detections of ``model`` for one image, one phrase and one box (fixed inputs)."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, 112, 112, generator=g)
    phrase = tokenize_phrases(model, ["plastic bottle"])
    with torch.no_grad():
        out = model(
            pixel_values=pixels,
            **phrase,
            input_boxes=torch.tensor([[[0.4, 0.5, 0.3, 0.2]]]),
            input_boxes_labels=torch.tensor([[1]]),
        )
    return {k: out[k] for k in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits")}


def _meta_file(tiny, path: Path) -> dict[str, torch.Tensor]:
    """A sam3.pt of the tiny size as Meta writes one: the detector plus what Sam3Model has
    no place for (tracker, SAM 2-style neck, point projections, a class-token row)."""
    g = torch.Generator().manual_seed(3)
    sd = sam3.hf_to_sam3_state_dict(tiny.state_dict())
    sd = {k: v.clone() for k, v in sd.items()} | sam3.rope_tables(tiny.config)
    sd[_TRUNK + "pos_embed"][:, :1] = torch.randn(1, 1, 32, generator=g)
    extra = {
        "tracker.no_mem_embed": (1, 1, 32),
        "tracker.sam_mask_decoder.iou_token.weight": (1, 32),
        "detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight": (32, 8, 1, 1),
        "detector.geometry_encoder.points_direct_project.weight": (32, 2),
    }
    sd |= {k: torch.randn(shape, generator=g) for k, shape in extra.items()}
    torch.save(sd, path)
    return sd


def test_samtune_to_meta_to_samtune_is_exact(tiny, tmp_path):
    path = save_original_checkpoint(tiny, tmp_path / "sam3.pt")
    written = torch.load(path, weights_only=True)
    assert all(k.startswith("detector.") for k in written)  # a transformers model: no tracker
    with warnings.catch_warnings():
        warnings.simplefilter("error", AssumptionWarning)  # the sidecar records everything
        back = samtune.load_model(path)
    assert type(back) is type(tiny)
    a, b = tiny.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert fingerprint(back) == fingerprint(tiny)
    assert preprocess_config(back) == preprocess_config(tiny)
    assert (
        samtune_info(back).tokenizer("plastic bottle")["input_ids"]
        == (samtune_info(tiny).tokenizer("plastic bottle")["input_ids"])
    )
    for name, value in _outputs(tiny).items():
        assert torch.equal(_outputs(back)[name], value), name


def test_meta_to_samtune_to_meta_gives_the_same_tensors(tiny, tmp_path):
    original = _meta_file(tiny, tmp_path / "sam3.pt")
    with pytest.warns(AssumptionWarning, match="no tokenizer"):
        model = sam3.load_original(
            tmp_path / "sam3.pt", text_num_attention_heads=2, num_attention_heads=2
        )
    save_original_checkpoint(model, tmp_path / "again.pt")
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert again.keys() == original.keys()
    for key, value in original.items():
        assert again[key].dtype == value.dtype and torch.equal(again[key], value), key
    # the same weights as the transformers model they were written from
    a = tiny.state_dict()
    assert all(torch.equal(model.state_dict()[k], a[k]) for k in a)


def test_a_model_wrapper_is_accepted(tiny, tmp_path):
    sd = _meta_file(tiny, tmp_path / "flat.pt")
    torch.save({"model": sd}, tmp_path / "wrapped.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumptionWarning)
        model = load_original_checkpoint(tmp_path / "wrapped.pt", {})
    assert type(model).__name__ == "Sam3Model"


# Verified by running transformers' own src/transformers/models/sam3/convert_sam3_to_hf.py
# (commit 0d7e95d9: its ORIGINAL_TO_CONVERTED_KEY_MAPPING through convert_old_keys_to_new_keys)
# on the 'detector.'-stripped state dict of Meta's sam3 0.1.4 image model built at a small
# size; the whole converted state dict was tensor-equal with samtune's (378 tensors).
SCRIPT_KEYS = [
    (
        "detector.backbone.vision_backbone.trunk.blocks.1.attn.proj.weight",
        "vision_encoder.backbone.layers.1.attention.o_proj.weight",
    ),  # fmt: skip
    (
        "detector.backbone.vision_backbone.convs.1.dconv_2x2.bias",
        "vision_encoder.neck.fpn_layers.1.scale_layers.0.bias",
    ),  # fmt: skip
    (
        "detector.backbone.vision_backbone.convs.0.dconv_2x2_1.weight",
        "vision_encoder.neck.fpn_layers.0.scale_layers.2.weight",
    ),  # fmt: skip
    (
        "detector.backbone.language_backbone.encoder.transformer.resblocks.0.attn.out_proj.weight",
        "text_encoder.text_model.encoder.layers.0.self_attn.out_proj.weight",
    ),  # fmt: skip
    ("detector.backbone.language_backbone.resizer.weight", "text_projection.weight"),
    (
        "detector.geometry_encoder.encode.1.cross_attn_image.out_proj.bias",
        "geometry_encoder.layers.1.cross_attn.o_proj.bias",
    ),  # fmt: skip
    (
        "detector.geometry_encoder.img_pre_norm.weight",
        "geometry_encoder.vision_layer_norm.weight",
    ),  # fmt: skip
    (
        "detector.transformer.encoder.layers.0.norm2.weight",
        "detr_encoder.layers.0.layer_norm2.weight",
    ),  # fmt: skip
    (
        "detector.transformer.decoder.layers.1.catext_norm.bias",
        "detr_decoder.layers.1.text_cross_attn_layer_norm.bias",
    ),  # fmt: skip
    (
        "detector.transformer.decoder.layers.0.norm2.weight",
        "detr_decoder.layers.0.self_attn_layer_norm.weight",
    ),  # fmt: skip
    (
        "detector.transformer.decoder.bbox_embed.layers.2.weight",
        "detr_decoder.box_head.layer3.weight",
    ),  # fmt: skip
    (
        "detector.transformer.decoder.presence_token_out_norm.weight",
        "detr_decoder.presence_layer_norm.weight",
    ),  # fmt: skip
    ("detector.dot_prod_scoring.hs_proj.weight", "dot_product_scoring.query_proj.weight"),
    (
        "detector.segmentation_head.mask_predictor.mask_embed.layers.1.bias",
        "mask_decoder.mask_embedder.layers.1.bias",
    ),  # fmt: skip
    (
        "detector.segmentation_head.cross_attend_prompt.out_proj.weight",
        "mask_decoder.prompt_cross_attn.o_proj.weight",
    ),  # fmt: skip
]


def test_key_names_agree_with_transformers_conversion_script():
    marker = _TRUNK + "patch_embed.proj.weight"
    sd = {marker: torch.zeros(4, 3, 2, 2)}
    sd |= {meta: torch.full((2,), float(i)) for i, (meta, _) in enumerate(SCRIPT_KEYS)}
    hf, aside = sam3.sam3_to_hf_state_dict(sd)
    assert not aside
    for i, (meta, name) in enumerate(SCRIPT_KEYS):
        assert torch.equal(hf[name], torch.full((2,), float(i))), (meta, name)
    back = sam3.hf_to_sam3_state_dict(hf | {"vision_encoder.backbone.embeddings.position_embeddings": torch.zeros(1, 4, 4)})  # fmt: skip
    assert {meta for meta, _ in SCRIPT_KEYS} <= set(back)


def test_fused_projections_class_row_and_text_projection_convert_as_the_script_does():
    """The script's tensor steps: q/k/v cut from ``qkv``/``in_proj_*`` (torch.chunk), the
    position embedding's first (class-token) row dropped, ``text_projection`` transposed."""
    g = torch.Generator().manual_seed(1)
    enc = "detector.backbone.language_backbone.encoder."
    sd = {
        _TRUNK + "patch_embed.proj.weight": torch.zeros(4, 3, 2, 2),
        _TRUNK + "pos_embed": torch.randn(1, 5, 4, generator=g),
        _TRUNK + "blocks.0.attn.qkv.weight": torch.randn(12, 4, generator=g),
        enc + "transformer.resblocks.0.attn.in_proj_bias": torch.randn(12, generator=g),
        enc + "text_projection": torch.randn(4, 6, generator=g),
    }
    hf, aside = sam3.sam3_to_hf_state_dict(sd)
    q, k, v = sd[_TRUNK + "blocks.0.attn.qkv.weight"].chunk(3)
    attn = "vision_encoder.backbone.layers.0.attention."
    assert torch.equal(hf[attn + "q_proj.weight"], q) and torch.equal(hf[attn + "v_proj.weight"], v)
    assert torch.equal(hf[attn + "k_proj.weight"], k)
    text = "text_encoder.text_model.encoder.layers.0.self_attn."
    assert torch.equal(hf[text + "k_proj.bias"], sd[enc + "transformer.resblocks.0.attn.in_proj_bias"][4:8])  # fmt: skip
    pos = hf["vision_encoder.backbone.embeddings.position_embeddings"]
    assert torch.equal(pos, sd[_TRUNK + "pos_embed"][:, 1:])
    assert torch.equal(hf["text_encoder.text_projection.weight"], sd[enc + "text_projection"].T)
    assert set(aside) == {_TRUNK + "pos_embed"}  # the class-token row
    back = sam3.hf_to_sam3_state_dict(hf, aside)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_architecture_is_read_off_the_weights(tiny, tmp_path):
    _meta_file(tiny, tmp_path / "sam3.pt")
    with pytest.warns(AssumptionWarning) as record:
        model = samtune.load_model(tmp_path / "sam3.pt")
    note = str(record[0].message)
    # what the weights cannot show, at a size other than Meta's, is named
    assert "text_num_attention_heads=1" in note and note.count("num_attention_heads=1") == 2
    assert "no tokenizer" in note
    want, got = tiny.config, model.config
    vit, vit_got = want.vision_config.backbone_config, got.vision_config.backbone_config
    for name in ("hidden_size", "num_attention_heads", "num_hidden_layers", "window_size",
                 "global_attn_indexes", "image_size", "pretrain_image_size", "patch_size"):  # fmt: skip
        assert getattr(vit_got, name) == getattr(vit, name), name
    assert got.vision_config.scale_factors == want.vision_config.scale_factors
    assert (
        got.detr_decoder_config.num_attention_heads == want.detr_decoder_config.num_attention_heads
    )
    assert got.detr_decoder_config.num_queries == want.detr_decoder_config.num_queries
    assert got.text_config.vocab_size == want.text_config.vocab_size
    # Meta's LayerNorm epsilon and GELU, not transformers' config defaults
    assert vit_got.layer_norm_eps == 1e-5 and got.text_config.hidden_act == "gelu"


def test_window_of_an_all_global_vit_is_read_off_its_rope_scale(tmp_path):
    config = tiny_sam3_config()
    config.vision_config.backbone_config.global_attn_indexes = [0, 1]
    config.vision_config.backbone_config.window_size = 3  # only scales the RoPE positions
    model = sam_from_config(config, 0)
    sd = sam3.hf_to_sam3_state_dict(model.state_dict()) | sam3.rope_tables(model.config)
    read = sam3.sam3_config_from_state_dict(sd).vision_config.backbone_config
    assert read.global_attn_indexes == [0, 1] and read.window_size == 3
