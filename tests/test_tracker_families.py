"""SAM 3's tracker (``Sam3TrackerModel``) and EdgeTAM (``EdgeTamModel``) go through samtune as
SAM 2 does: loading (presets, save_pretrained folders, processor settings, fingerprints),
preprocessing, sam_ops, every strategy that applies, the embedding cache, evaluation, predict,
the Predictor, automatic masks and adapters; each checked against the transformers classes
and processors. EdgeTAM's image encoder is a convolutional RepViT (timm): the strategies that
need encoder attention or transformer blocks refuse it with a ConfigError that says why.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoProcessor,
    EdgeTamModel,
    Sam2ImageProcessor,
    Sam3ImageProcessor,
    Sam3TrackerModel,
)
from typer.testing import CliRunner

pytest.importorskip("timm")  # EdgeTAM's backbone; in the dev extra

from samtune.adapters import load_adapter, load_tuned, save_adapter  # noqa: E402
from samtune.cli import app  # noqa: E402
from samtune.data import load_dataset  # noqa: E402
from samtune.data.transforms import preprocess_image  # noqa: E402
from samtune.errors import (  # noqa: E402
    AdapterMismatchError,
    ConfigError,
    InputError,
    MissingDependencyError,
)
from samtune.evaluation import evaluate  # noqa: E402
from samtune.export.formats import export_adapter, save_hf_folder  # noqa: E402
from samtune.models.convert import save_original_checkpoint  # noqa: E402
from samtune.models.family import EDGETAM, SAM3_TRACKER, family_of  # noqa: E402
from samtune.models.identity import PreprocessConfig, fingerprint, preprocess_config  # noqa: E402
from samtune.models.loading import load_model  # noqa: E402
from samtune.models.sam_ops import decode, encode_images, select_embeddings  # noqa: E402
from samtune.segment.automatic import AutoMaskConfig, generate_masks  # noqa: E402
from samtune.segment.predictor import Predictor  # noqa: E402
from samtune.segment.prompted import predict  # noqa: E402
from samtune.strategies import get_strategy  # noqa: E402
from samtune.train import fit  # noqa: E402

PRESETS = {"sam3-tracker": "tiny-sam3-tracker", "edgetam": "tiny-edgetam"}
CLASSES = {"sam3-tracker": Sam3TrackerModel, "edgetam": EdgeTamModel}
DECODER_ATTENTION = r"mask_decoder\.transformer\.layers\.\d+\.self_attn\.(?:q_proj|v_proj)"
# (family, strategy, options): every strategy that applies to each family
APPLICABLE = [
    ("sam3-tracker", "decoder", {}),
    ("sam3-tracker", "full", {}),
    ("sam3-tracker", "lora", {}),
    ("sam3-tracker", "adapter", {}),
    ("sam3-tracker", "peft", {}),
    ("edgetam", "decoder", {}),
    ("edgetam", "full", {}),
    ("edgetam", "lora", {"decoder_attention": True}),
    ("edgetam", "peft", {"target_modules": DECODER_ATTENTION}),
]


@pytest.fixture(scope="module")
def models():
    return {family: load_model(preset) for family, preset in PRESETS.items()}


@pytest.fixture(scope="module")
def demo():
    counts = {"train": 2, "val": 1, "test": 1}
    return {s: load_dataset("demo", s, counts=counts) for s in ("train", "val")}


def _masks(model: torch.nn.Module) -> torch.Tensor:
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return decode(
            model, encode_images(model, pixels), boxes=torch.tensor([[10.0, 12, 90, 100]])
        ).pred_masks


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(("family", "preset"), list(PRESETS.items()))
def test_presets_folders_and_info_name_their_family(family, preset, models, tmp_path):
    model = models[family]
    assert type(model) is CLASSES[family]
    assert family_of(model).name == family == family_of(model.config).name
    assert model.samtune_info.family == family
    model.save_pretrained(tmp_path / "plain")  # no processor: the family's preprocessing
    again = load_model(tmp_path / "plain")
    assert type(again) is CLASSES[family] and again.samtune_info.family == family
    assert fingerprint(again) == fingerprint(model)
    assert preprocess_config(again) == preprocess_config(model)
    result = CliRunner().invoke(app, ["info", preset])
    assert result.exit_code == 0, result.output
    assert f"family        {family} ({CLASSES[family].__name__})" in result.output


@pytest.mark.parametrize("family", list(PRESETS))
def test_a_folder_keeps_the_preprocessing_its_processor_declares(family, models, tmp_path):
    model = load_model(PRESETS[family])
    declared = PreprocessConfig(128, (120.0, 110.0, 100.0), (60.0, 50.0, 40.0), square=True)
    model.samtune_info.preprocess = declared
    save_hf_folder(model, tmp_path / "hf")
    again = load_model(tmp_path / "hf")
    assert preprocess_config(again) == declared
    assert fingerprint(again) == fingerprint(model) != fingerprint(models[family])


def test_each_family_has_its_own_fingerprint(models):
    assert len({fingerprint(m) for m in models.values()}) == 2


def test_random_init_follows_the_original_code(models):
    tracker, edgetam = models["sam3-tracker"], models["edgetam"]
    for model in models.values():  # SAM 2's rules: one Fourier matrix, a drawn no-memory token
        image_pe = model.shared_image_embedding.positional_embedding
        assert torch.equal(image_pe, model.prompt_encoder.shared_embedding.positional_embedding)
        assert float(model.no_memory_embedding.detach().abs().sum()) > 0
    # SAM 3's ViT: N(0, 0.02) linears, zero biases (PyTorch's default would give std 0.1)
    q = tracker.vision_encoder.backbone.layers[0].attention.q_proj
    assert 0.015 < float(q.weight.detach().std()) < 0.025 and not q.bias.detach().any()
    # RepViT as timm builds it: each residual MLP's last batch norm starts at zero
    zeros = [
        p
        for n, p in edgetam.vision_encoder.backbone.named_parameters()
        if re.search(r"channel_mixer\..*conv2\.bn\.weight$", n)
    ]
    assert zeros and all(not p.detach().any() for p in zeros)


def test_edgetam_without_timm_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match=r'pip install "samtune\[edgetam\]"'):
        load_model("tiny-edgetam")


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("family", list(PRESETS))
def test_preprocessing_equals_the_familys_image_processor(family, models):
    cfg = preprocess_config(models[family])
    if family == "sam3-tracker":  # Sam3ImageProcessor: 0.5/0.5, stretched to the square
        assert cfg == PreprocessConfig(128, (127.5,) * 3, (127.5,) * 3, square=True)
        processor = Sam3ImageProcessor(size={"height": 128, "width": 128})
    else:  # transformers gives EdgeTAM SAM 2's processor
        assert cfg == PreprocessConfig(128, square=True)
        processor = Sam2ImageProcessor(size={"height": 128, "width": 128})
    rng = np.random.default_rng(0)
    for shape in [(300, 200, 3), (97, 160, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        want = processor(images=image, return_tensors="pt")["pixel_values"][0]
        got, _ = preprocess_image(image, cfg)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- sam_ops


@pytest.mark.parametrize("family", list(PRESETS))
def test_encode_then_decode_equals_the_models_forward(family, models):
    model = models[family]
    pixels = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[10.0, 10, 60, 60], [5, 5, 100, 100], [20, 30, 90, 110]])
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        embeddings = encode_images(model, pixels)
        per_prompt = decode(model, select_embeddings(embeddings, index), boxes=boxes)
        shared = decode(model, select_embeddings(embeddings, index[1:2]), boxes=boxes[1:])
        want = model(pixel_values=pixels[index], input_boxes=boxes[:, None], multimask_output=False)
    assert len(embeddings) == 3  # SAM 3's fourth (0.5x) level is not what the decoder reads
    torch.testing.assert_close(per_prompt.pred_masks, want.pred_masks[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(per_prompt.iou_scores, want.iou_scores[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(shared.pred_masks, per_prompt.pred_masks[1:], atol=1e-5, rtol=0)


def test_a_three_level_sam3_neck_gets_the_no_memory_embedding():
    """With SAM 3's four-level neck Sam3TrackerModel's no-memory sum lands on the level it
    drops; with three levels it reaches the decoder, and samtune follows both."""
    from samtune.models.presets import sam_from_config, tiny_sam3_tracker_config

    config = tiny_sam3_tracker_config()
    config.vision_config.scale_factors = [4.0, 2.0, 1.0]
    model = sam_from_config(config)
    with torch.no_grad():
        model.no_memory_embedding.fill_(0.5)
        pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
        box = torch.tensor([[10.0, 10, 60, 60]])
        got = decode(model, encode_images(model, pixels), boxes=box).pred_masks
        want = model(pixel_values=pixels, input_boxes=box[:, None], multimask_output=False)
        model.no_memory_embedding.zero_()
        without = decode(model, encode_images(model, pixels), boxes=box).pred_masks
    torch.testing.assert_close(got, want.pred_masks[:, 0], atol=1e-5, rtol=0)
    assert not torch.allclose(got, without)


# --------------------------------------------------------------------------- strategies


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", list(PRESETS))
def test_full_and_decoder_train_exactly_their_parts(family):
    full = get_strategy("full").apply(load_model(PRESETS[family]))
    names = {n for n, _ in full.named_parameters()}
    assert _trainable(full) == names - {"shared_image_embedding.positional_embedding"}
    decoder = get_strategy("decoder").apply(load_model(PRESETS[family]))
    assert _trainable(decoder) == {n for n in names if n.startswith("mask_decoder.")}
    for part in ("obj_score_token", "pred_obj_score_head", "conv_s0", "conv_s1"):
        assert any(n.startswith(f"mask_decoder.{part}.") for n in _trainable(decoder)), part


def test_lora_adapter_and_peft_cover_every_sam3_vit_block():
    model = load_model("tiny-sam3-tracker")
    blocks = [f"vision_encoder.backbone.layers.{i}" for i in range(2)]
    get_strategy("lora", proj=True, mlp=True, decoder_attention=True).apply(model)
    lora = {n.split(".lora_")[0] for n in _trainable(model) if ".lora_" in n}
    leaves = ("q_proj", "k_proj", "v_proj", "o_proj")
    encoder = {f"{b}.attention.{leaf}" for b in blocks for leaf in leaves}
    encoder |= {f"{b}.mlp.{fc}" for b in blocks for fc in ("fc1", "fc2")}
    assert {n for n in lora if n.startswith("vision_encoder.")} == encoder
    assert len(lora - encoder) == 14  # the decoder's q_proj/v_proj: 2 layers x 3 + final
    last = get_strategy("lora", blocks="last:1").apply(load_model("tiny-sam3-tracker"))
    assert {n.split(".attention.")[0] for n in _trainable(last) if ".lora_" in n} == {blocks[1]}
    base = load_model("tiny-sam3-tracker")
    before = _masks(base)
    get_strategy("adapter").apply(base)
    for kind in ("adapter_mlp", "adapter_attn"):
        assert {n.split(f".{kind}.")[0] for n in _trainable(base) if f".{kind}." in n} == set(
            blocks
        )
    assert torch.equal(_masks(base), before)  # zero-initialised: starts at the base
    ia3 = get_strategy("peft").apply(load_model("tiny-sam3-tracker"))
    found = {n.split(".ia3_l")[0] for n in _trainable(ia3) if ".ia3_l" in n}
    assert found == {f"{b}.attention.{p}" for b in blocks for p in ("q_proj", "k_proj", "v_proj")}


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("lora", {}),
        ("lora", {"decoder_attention": True, "mlp": True}),
        ("lora", {"decoder_attention": True, "blocks": "last:1"}),
        ("adapter", {}),
        ("peft", {}),
    ],
)
def test_edgetam_refuses_what_its_convolutional_encoder_lacks(strategy, options):
    with pytest.raises(ConfigError, match=r"edgetam family's image encoder \(RepViT.*'decoder'"):
        get_strategy(strategy, **options).apply(load_model("tiny-edgetam"))


def test_edgetam_lora_on_the_decoder_attention_leaves_the_encoder_alone():
    model = get_strategy("lora", decoder_attention=True).apply(load_model("tiny-edgetam"))
    lora = {n.split(".lora_")[0] for n in _trainable(model) if ".lora_" in n}
    assert len(lora) == 14 and all(n.startswith("mask_decoder.transformer.") for n in lora)
    assert not any(n.startswith("vision_encoder.") for n in _trainable(model))
    assert model.samtune_info.strategy.freezes_image_encoder  # so the embedding cache applies
    assert (
        not get_strategy("lora")
        .apply(load_model("tiny-sam3-tracker"))
        .samtune_info.strategy.freezes_image_encoder
    )


# --------------------------------------------------------------------------- training


# the fast tier trains lora (encoder or decoder attention) on each family; the slow tier all
FAST_STRATEGY = "lora"


@pytest.mark.parametrize(
    ("family", "name", "options"),
    [a if a[1] == FAST_STRATEGY else pytest.param(*a, marks=pytest.mark.slow) for a in APPLICABLE],
)
def test_every_applicable_strategy_fits_two_steps(family, name, options, demo, tmp_path):
    preset = PRESETS[family]
    result = fit(preset, name, {"train": demo["train"]}, tmp_path / "run", max_steps=2,
                 batch_size=1, lr=1e-3, val_split=None, test_split=None, compare=False,
                 quiet=True, log_with=None, strategy_options=options)  # fmt: skip
    assert result.steps == 2
    tuned = load_file(result.adapter_dir / "adapter.safetensors")
    assert tuned and all(t.isfinite().all() for t in tuned.values())
    fresh = get_strategy(name, **options).apply(load_model(preset))
    untouched = fresh.samtune_info.strategy.trainable_state_dict(fresh)
    assert set(tuned) == set(untouched)
    assert any(not torch.equal(tuned[k], untouched[k]) for k in tuned)  # it did train
    loaded = load_tuned(result.adapter_dir)  # onto the base the adapter records
    assert (_masks(loaded) - _masks(result.model.eval())).abs().max().item() <= 1e-5


def test_training_edgetam_keeps_its_batch_norm_statistics(demo, tmp_path):
    """A batch of one image cannot estimate RepViT's statistics, and the adapter carries
    parameters only: the encoder's batch norms keep the base's running statistics."""
    base = load_model("tiny-edgetam")
    result = fit("tiny-edgetam", "full", {"train": demo["train"]}, tmp_path / "run",
                 max_steps=2, batch_size=1, lr=1e-3, val_split=None, test_split=None,
                 compare=False, quiet=True, log_with=None)  # fmt: skip
    stats = {n: b for n, b in base.named_buffers() if "running_" in n}
    trained = dict(result.model.named_buffers())
    assert stats and all(torch.equal(trained[n], b) for n, b in stats.items())


@pytest.mark.slow
@pytest.mark.parametrize("family", list(PRESETS))
def test_cached_and_uncached_training_give_the_same_adapter(family, demo, tmp_path):
    def run(name: str, cache: str) -> dict[str, torch.Tensor]:
        fit(PRESETS[family], "decoder", demo, tmp_path / name, epochs=2, batch_size=1,
            cache=cache, cache_dir=str(tmp_path / "cache"), quiet=True, log_with=None,
            compare=False, eval_every=100)  # fmt: skip
        return load_file(tmp_path / name / "adapter" / "adapter.safetensors")

    uncached = run("off", "off")
    cached = run("on", "on")  # epoch 1 encodes and writes, epoch 2 reads memory
    from_disk = run("disk", "on")  # every epoch reads the files the last run wrote
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2
    for other in (cached, from_disk):
        assert other.keys() == uncached.keys()
        assert all(torch.equal(other[k], uncached[k]) for k in uncached)


# --------------------------------------------------------------------------- eval, predict


@pytest.mark.parametrize("family", list(PRESETS))
def test_every_protocol_evaluates(family, models, demo):
    for protocol in ("box", "point", "clicks:2"):
        report = evaluate(models[family], demo["val"], protocol, progress=False)
        assert 0.0 <= report.metrics["miou"] <= 1.0
        assert report.metrics["num_instances"] > 0


@pytest.mark.parametrize("family", list(PRESETS))
def test_predictor_encodes_once_and_matches_predict(family, models):
    model, calls = models[family], []
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    clicks = [([[10.0, 8, 60, 50]], None, None), (None, [[[40.0, 30], [90, 70]]], [[1, 0]])]
    hook = model.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        predictor = Predictor(model)
        predictor.set_image(image)
        answers = [predictor.predict(b, p, lab) for b, p, lab in clicks]
        assert len(calls) == 1
        alone = [predict(model, image, boxes=b, points=p, point_labels=lab) for b, p, lab in clicks]
    finally:
        hook.remove()
    for answer, one_shot in zip(answers, alone, strict=True):
        assert answer.masks.shape == (1, 90, 120)
        np.testing.assert_array_equal(answer.masks, one_shot.masks)
        assert np.abs(answer.low_res_logits).max() <= 32.0  # fed back clamped, as SAM 2's


@pytest.mark.parametrize("family", list(PRESETS))
def test_automatic_masks_run(family, models):
    image = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    config = AutoMaskConfig(points_per_side=4, pred_iou_thresh=-1.0, stability_score_thresh=-1.0)
    masks = generate_masks(models[family], image, config)
    assert len(masks) > 0 and masks.masks.shape[1:] == (64, 80)
    assert masks.predicted_iou.tolist() == sorted(masks.predicted_iou.tolist(), reverse=True)


# --------------------------------------------------------------------------- adapters


@pytest.mark.parametrize(("family", "options"), [("sam3-tracker", {}), ("edgetam", {"decoder_attention": True})])  # fmt: skip
def test_adapters_round_trip_and_refuse_another_family(family, options, tmp_path):
    model = get_strategy("lora", **options).apply(load_model(PRESETS[family]))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    save_adapter(model, tmp_path / "adapter")
    loaded = load_adapter(PRESETS[family], tmp_path / "adapter")
    assert torch.equal(_masks(loaded), _masks(model))
    export_adapter(loaded, tmp_path / "hf", "hf")
    processor = AutoProcessor.from_pretrained(tmp_path / "hf")  # what transformers users get
    want = {"sam3-tracker": "Sam3TrackerProcessor", "edgetam": "Sam2Processor"}[family]
    assert type(processor).__name__ == want
    merged = load_model(tmp_path / "hf")
    assert type(merged) is CLASSES[family]
    assert preprocess_config(merged) == preprocess_config(model)
    torch.testing.assert_close(_masks(merged), _masks(model), atol=1e-5, rtol=0)
    with pytest.raises(AdapterMismatchError, match=f"trained on a {family} model .* is sam2 "):
        load_adapter("tiny-sam2", tmp_path / "adapter")


@pytest.mark.parametrize("family", [SAM3_TRACKER, EDGETAM])
def test_no_original_checkpoint_format_is_claimed(family, models, tmp_path):
    with pytest.raises(InputError, match=f"no converter .* this model is {family.name}.*'hf'"):
        save_original_checkpoint(models[family.name], tmp_path / "model.pt")
    assert not list(tmp_path.iterdir())
