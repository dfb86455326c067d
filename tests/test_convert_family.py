"""SAM-HQ and SAM 2 original checkpoints <-> transformers, with the reference packages as oracles.

A randomly initialised reference model of a small, unusual size (built by
``segment_anything_hq`` / ``sam2`` themselves) is saved in its original format, loaded through
samtune, and must give the reference's image embeddings, mask logits and IoU scores; exporting
back must reproduce the original file's tensors bit for bit.
"""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import torch
from typer.testing import CliRunner

from samtune.cli import app
from samtune.errors import AssumptionWarning, CheckpointError, ConfigError
from samtune.models.convert import hq as convert_hq
from samtune.models.convert import sam2 as convert_sam2
from samtune.models.loading import load_model

TOL = 1e-4
BOX = [8.0, 14.0, 52.0, 44.0]  # XYXY, pixels of the model's input image
POINT = [30.0, 22.0]


def _perturb_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every tensor off its initial value (zero biases, unit norms would hide renames)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return module


def _assert_same_tensors(expected: dict, actual: dict) -> None:
    assert sorted(expected) == sorted(actual)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype and torch.equal(actual[key], value), key


# --------------------------------------------------------------------------- SAM-HQ

HQ_IMAGE = 64


@pytest.fixture(scope="module")
def hq_reference(tmp_path_factory):
    """A reference SAM-HQ: 3 blocks (one global), width 40, 5 heads, patch 8, 64 px."""
    modeling = pytest.importorskip("segment_anything_hq.modeling")
    torch.manual_seed(0)
    grid = HQ_IMAGE // 8
    encoder = modeling.ImageEncoderViT(
        img_size=HQ_IMAGE,
        patch_size=8,
        embed_dim=40,
        depth=3,
        num_heads=5,
        mlp_ratio=3.0,
        out_chans=32,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=4,
        global_attn_indexes=(1,),
    )
    prompt = modeling.PromptEncoder(
        embed_dim=32,
        image_embedding_size=(grid, grid),
        input_image_size=(HQ_IMAGE, HQ_IMAGE),
        mask_in_chans=8,
    )
    decoder = modeling.MaskDecoderHQ(
        num_multimask_outputs=3,
        transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=48, num_heads=8),
        transformer_dim=32,
        iou_head_depth=3,
        iou_head_hidden_dim=24,
        vit_dim=40,
    )
    ref = _perturb_(modeling.Sam(encoder, prompt, decoder), seed=1).eval()
    path = tmp_path_factory.mktemp("hq") / "sam_hq_custom.pth"
    torch.save(ref.state_dict(), path)
    with pytest.warns(AssumptionWarning, match="SAM-HQ's \\(8 heads"):
        model = load_model(path)
    return ref, model, path


def _hq_reference_outputs(ref, image, prompt: str, multimask: bool):
    with torch.no_grad():
        embeddings, interm = ref.image_encoder(image)
        if prompt == "box":
            sparse, dense = ref.prompt_encoder(points=None, boxes=torch.tensor([BOX]), masks=None)
        else:
            points = (torch.tensor([[POINT]]), torch.tensor([[1]]))
            sparse, dense = ref.prompt_encoder(points=points, boxes=None, masks=None)
        masks, iou = ref.mask_decoder(
            image_embeddings=embeddings,
            image_pe=ref.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            hq_token_only=False,
            interm_embeddings=interm,
        )
    return embeddings, masks, iou


def _hq_samtune_outputs(model, image, prompt: str, multimask: bool):
    kwargs = (
        {"input_boxes": torch.tensor([[BOX]])}
        if prompt == "box"
        else {"input_points": torch.tensor([[[POINT]]]), "input_labels": torch.tensor([[[1]]])}
    )
    with torch.no_grad():
        out = model(pixel_values=image, multimask_output=multimask, **kwargs)
        embeddings = model.get_image_embeddings(image)[0]
    # the reference returns the best of the multimask outputs; transformers sorts them, best first
    return embeddings, out.pred_masks[0, :, :1], out.iou_scores[0, :, :1]


@pytest.mark.parametrize("prompt", ["box", "point"])
def test_hq_matches_the_reference(hq_reference, prompt):
    ref, model, _ = hq_reference
    assert type(model).__name__ == "SamHQModel"
    image = torch.randn(1, 3, HQ_IMAGE, HQ_IMAGE, generator=torch.Generator().manual_seed(2))
    for multimask in (False, True):
        emb_ref, masks_ref, iou_ref = _hq_reference_outputs(ref, image, prompt, multimask)
        emb, masks, iou = _hq_samtune_outputs(model, image, prompt, multimask)
        torch.testing.assert_close(emb, emb_ref, atol=TOL, rtol=0)
        torch.testing.assert_close(masks, masks_ref, atol=TOL, rtol=0)
        torch.testing.assert_close(iou, iou_ref, atol=TOL, rtol=0)


def test_hq_decoder_fix_survives_copies_and_trains(hq_reference):
    """transformers 5.24's SamHQMaskDecoder upscales the pre-transformer embedding; samtune's
    hooks (convert_hq.fix_hq_decoder) restore the reference computation, also in a deep copy,
    and gradients reach both the two-way transformer and the upscaling."""
    import copy

    ref, model, _ = hq_reference
    image = torch.randn(1, 3, HQ_IMAGE, HQ_IMAGE, generator=torch.Generator().manual_seed(5))
    _, masks_ref, _ = _hq_reference_outputs(ref, image, "box", multimask=False)
    twin = copy.deepcopy(model)
    assert twin.mask_decoder.upscale_conv1.__dict__[convert_hq._KEYS_SOURCE] is (
        twin.mask_decoder.transformer
    )
    _, masks, _ = _hq_samtune_outputs(twin, image, "box", multimask=False)
    torch.testing.assert_close(masks, masks_ref, atol=TOL, rtol=0)
    assert convert_hq.fix_hq_decoder(twin) is twin  # idempotent: no second pair of hooks
    assert len(twin.mask_decoder.upscale_conv1._forward_pre_hooks) == 1
    out = twin(pixel_values=image, input_boxes=torch.tensor([[BOX]]), multimask_output=False)
    out.pred_masks.sum().backward()
    decoder = twin.mask_decoder
    assert decoder.upscale_conv1.weight.grad.abs().sum() > 0
    assert decoder.transformer.layers[1].mlp.lin1.weight.grad.abs().sum() > 0


def test_hq_config_is_read_from_the_shapes(hq_reference):
    _, model, _ = hq_reference
    v, d = model.config.vision_config, model.config.mask_decoder_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads) == (40, 3, 5)
    assert (v.image_size, v.patch_size, v.window_size) == (HQ_IMAGE, 8, 4)
    assert list(v.global_attn_indexes) == [1] and v.mlp_dim == 120
    assert (d.hidden_size, d.mlp_dim, d.iou_head_hidden_dim, d.vit_dim) == (32, 48, 24, 40)


def test_hq_export_round_trips_bit_exactly(hq_reference, tmp_path):
    ref, model, path = hq_reference
    original = torch.load(path, weights_only=True)
    _assert_same_tensors(original, convert_hq.hf_to_hq_state_dict(model.state_dict()))
    result = CliRunner().invoke(
        app, ["convert", str(path), str(tmp_path / "back.pth"), "--to", "original"]
    )
    assert result.exit_code == 0, result.output
    written = torch.load(tmp_path / "back.pth", weights_only=True)
    _assert_same_tensors(original, written)
    ref.load_state_dict(written)  # strict: the reference takes the file as it is
    again = load_model(tmp_path / "back.pth")  # the sidecar states the config: no assumption
    assert type(again).__name__ == "SamHQModel"
    assert again.config.mask_decoder_config.vit_dim == 40


# --------------------------------------------------------------------------- SAM 2

S2_IMAGE = 64
# Unusual on purpose: width 24, 2 heads doubling per stage, stages 1-2-3-1, global blocks 2 and
# 4, windows 4-4-6-3, a 5x5 background position table, FPN width 64.
S2_OVERRIDES = [
    f"++model.image_size={S2_IMAGE}",
    "++model.image_encoder.trunk.embed_dim=24",
    "++model.image_encoder.trunk.num_heads=2",
    "++model.image_encoder.trunk.stages=[1,2,3,1]",
    "++model.image_encoder.trunk.global_att_blocks=[2,4]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[5,5]",
    "++model.image_encoder.trunk.window_spec=[4,4,6,3]",
    "++model.image_encoder.neck.backbone_channel_list=[192,96,48,24]",
    "++model.image_encoder.neck.d_model=64",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=64",
    "++model.memory_attention.num_layers=1",
]
S2_STATED = dict(
    num_attention_heads_per_stage=[2, 4, 8, 16],
    global_attention_blocks=[2, 4],
    window_size_per_stage=[4, 4, 6, 3],
    image_size=S2_IMAGE,
)
S2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(scope="module")
def sam2_reference(tmp_path_factory):
    build = pytest.importorskip("sam2.build_sam")
    torch.manual_seed(0)
    ref = build.build_sam2(S2_CONFIG, None, device="cpu", hydra_overrides_extra=S2_OVERRIDES)
    ref = _perturb_(ref, seed=3).eval()
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_custom.pt"
    torch.save({"model": ref.state_dict()}, path)
    model = convert_sam2.load_original(path, **S2_STATED)
    return ref, model, path


def _sam2_reference_outputs(ref, image, prompt: str, multimask: bool):
    """What ``SAM2ImagePredictor`` computes, at this model's feature sizes."""
    with torch.no_grad():
        _, feats, _, sizes = ref._prepare_backbone_features(ref.forward_image(image))
        feats[-1] = feats[-1] + ref.no_mem_embed
        levels = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(feats, sizes, strict=True)]
        if prompt == "box":  # the predictor's box: two corner points labelled 2 and 3
            points = (torch.tensor([BOX]).reshape(1, 2, 2), torch.tensor([[2, 3]]))
        else:
            points = (torch.tensor([[POINT]]), torch.tensor([[1]]))
        sparse, dense = ref.sam_prompt_encoder(points=points, boxes=None, masks=None)
        masks, iou, _, object_score = ref.sam_mask_decoder(
            image_embeddings=levels[-1],
            image_pe=ref.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=levels[:-1],
        )
    return levels, masks, iou, object_score


@pytest.mark.parametrize("prompt", ["box", "point"])
def test_sam2_matches_the_reference(sam2_reference, prompt):
    ref, model, _ = sam2_reference
    assert type(model).__name__ == "Sam2Model"
    image = torch.randn(1, 3, S2_IMAGE, S2_IMAGE, generator=torch.Generator().manual_seed(4))
    kwargs = (
        {"input_boxes": torch.tensor([[BOX]])}
        if prompt == "box"
        else {"input_points": torch.tensor([[[POINT]]]), "input_labels": torch.tensor([[[1]]])}
    )
    with torch.no_grad():
        embeddings = model.get_image_embeddings(image)
    for multimask in (False, True):
        levels, masks, iou, object_score = _sam2_reference_outputs(ref, image, prompt, multimask)
        for ours, theirs in zip(embeddings, levels, strict=True):
            torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)
        with torch.no_grad():
            out = model(image_embeddings=embeddings, multimask_output=multimask, **kwargs)
        torch.testing.assert_close(out.pred_masks[0], masks, atol=TOL, rtol=0)
        torch.testing.assert_close(out.iou_scores[0], iou, atol=TOL, rtol=0)
        torch.testing.assert_close(out.object_score_logits[0], object_score, atol=TOL, rtol=0)


def test_sam2_export_round_trips_bit_exactly(sam2_reference, tmp_path):
    ref, model, path = sam2_reference
    original = torch.load(path, weights_only=True)["model"]
    video = model.__dict__[convert_sam2.VIDEO_STATE_ATTR]
    _assert_same_tensors(original, convert_sam2.hf_to_sam2_state_dict(model.state_dict(), video))
    out = convert_sam2.save_sam2_checkpoint(model, tmp_path / "back.pt")
    written = torch.load(out, weights_only=True)
    assert list(written) == ["model"]
    _assert_same_tensors(original, written["model"])
    ref.load_state_dict(written["model"])  # strict, as sam2.build_sam._load_checkpoint does
    again = load_model(out)  # the sidecar states heads, windows and image size
    assert type(again).__name__ == "Sam2Model"
    assert again.config.vision_config.backbone_config.to_dict() == (
        model.config.vision_config.backbone_config.to_dict()
    )


def test_sam2_behind_a_training_wrapper_prefix_loads_the_same(sam2_reference, tmp_path):
    _, model, path = sam2_reference
    original = torch.load(path, weights_only=True)["model"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.items()}}, tmp_path / "w.pt")
    wrapped = convert_sam2.load_original(tmp_path / "w.pt", **S2_STATED)
    _assert_same_tensors(model.state_dict(), wrapped.state_dict())


def test_sam2_custom_size_without_statement_says_what_it_assumed(sam2_reference):
    _, _, path = sam2_reference
    with pytest.warns(AssumptionWarning, match="num_attention_heads_per_stage.*image_size"):
        model = convert_sam2.load_original(path)
    backbone = model.config.vision_config.backbone_config
    assert backbone.num_attention_heads_per_stage == [1, 2, 4, 8]  # Hiera's default: 1 head
    assert backbone.window_size_per_stage[0] == 4  # the first window is in the shapes


# Facts from transformers' own convert_sam2_to_hf.py (an independent record of the four sizes).
OFFICIAL = {
    "t": (96, [1, 2, 7, 2], [1, 2, 4, 8], [5, 7, 9], [8, 4, 14, 7], [7, 7]),
    "s": (96, [1, 2, 11, 2], [1, 2, 4, 8], [7, 10, 13], [8, 4, 14, 7], [7, 7]),
    "b+": (112, [2, 3, 16, 3], [2, 4, 8, 16], [12, 16, 20], [8, 4, 14, 7], [14, 14]),
    "l": (144, [2, 6, 36, 4], [2, 4, 8, 16], [23, 33, 43], [8, 4, 16, 8], [7, 7]),
}


@pytest.mark.parametrize("size", list(OFFICIAL))
@pytest.mark.parametrize("version", ["sam2", "sam2.1"])
def test_sam2_official_sizes_are_recognised_from_shapes(size, version, monkeypatch):
    build = pytest.importorskip("sam2.build_sam")
    linspace = torch.linspace  # Hiera reads its drop-path rates with .item(): keep them real
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    name = f"{version}_hiera_{size}.yaml"
    with torch.device("meta"):  # shapes only: the large model would take a minute to build
        ref = build.build_sam2(
            f"configs/sam2.1/{name}" if version == "sam2.1" else name, None, device="meta"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = convert_sam2.sam2_config_from_state_dict(ref.state_dict())
    b = config.vision_config.backbone_config
    width, stages, heads, global_blocks, windows, background = OFFICIAL[size]
    assert (b.hidden_size, b.blocks_per_stage, b.num_attention_heads_per_stage) == (
        width,
        stages,
        heads,
    )
    assert b.global_attention_blocks == global_blocks and b.window_size_per_stage == windows
    assert b.window_positional_embedding_background_size == background
    assert b.image_size == [1024, 1024]
    assert config.vision_config.backbone_channel_list == [width * 8, width * 4, width * 2, width]
    assert convert_sam2._sam2_config(ref.state_dict(), {})[1] == []  # nothing assumed


# --------------------------------------------------------------------------- safety


def test_a_file_that_is_not_a_checkpoint_is_one_clear_error(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    for loader in (convert_hq.load_original, convert_sam2.load_original):
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
            loader(junk)


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Exploit()}, path)
    with pytest.raises(CheckpointError):
        convert_sam2.load_original(path)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_the_wrong_family_is_refused_with_both_named(hq_reference, sam2_reference):
    _, _, hq_path = hq_reference
    _, _, sam2_path = sam2_reference
    with pytest.raises(CheckpointError, match="is not a SAM 2 checkpoint but a SAM-HQ one"):
        convert_sam2.load_original(hq_path)
    with pytest.raises(CheckpointError, match="is not a SAM-HQ checkpoint but a SAM 2 one"):
        convert_hq.load_original(sam2_path)
    with pytest.raises(ConfigError, match="SAM 2 checkpoint"):
        load_model(sam2_path, decoder_num_heads=8)


def test_an_incomplete_or_misshapen_checkpoint_is_refused(sam2_reference, tmp_path):
    _, _, path = sam2_reference
    sd = torch.load(path, weights_only=True)["model"]
    missing = {k: v for k, v in sd.items() if "conv_s0" not in k}
    torch.save({"model": missing}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="conv_s0"):
        convert_sam2.load_original(tmp_path / "missing.pt", **S2_STATED)
    wrong = dict(sd, **{"sam_mask_decoder.iou_token.weight": torch.zeros(1, 7)})
    torch.save({"model": wrong}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        convert_sam2.load_original(tmp_path / "wrong.pt", **S2_STATED)


def test_a_sidecar_of_another_family_is_refused(hq_reference, sam2_reference, tmp_path):
    _, hq_model, _ = hq_reference
    _, _, sam2_path = sam2_reference
    convert_hq.save_hq_checkpoint(hq_model, tmp_path / "x.pth")
    (tmp_path / "x.pth").write_bytes(sam2_path.read_bytes())  # SAM 2 weights, SAM-HQ sidecar
    with pytest.raises(CheckpointError, match="describes a 'sam_hq' model"):
        load_model(tmp_path / "x.pth")


@pytest.mark.parametrize("preset", ["tiny-hq", "tiny-sam2"])
def test_a_tuned_model_exports_to_its_family_original_format_and_loads_back(preset, tmp_path):
    from samtune.adapters import merge_adapter
    from samtune.export.formats import export_adapter
    from samtune.models.identity import fingerprint
    from samtune.models.loading import load_model
    from samtune.strategies import get_strategy

    model = get_strategy("lora").apply(load_model(preset))
    with torch.no_grad():  # a trained-looking adapter: LoRA's B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02, generator=torch.Generator().manual_seed(len(name)))
    suffix = ".pt" if preset == "tiny-sam2" else ".pth"
    out = export_adapter(model, tmp_path / f"merged{suffix}", "original")
    back = load_model(out)
    assert type(back) is type(model)
    assert fingerprint(back) == fingerprint(merge_adapter(model))
