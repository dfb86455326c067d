"""SAM-HQ and SAM 2 run through samtune like SAM: loading, preprocessing, sam_ops, strategies,
the embedding cache, evaluation, predict and adapters, each checked against transformers."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import Sam2ImageProcessor, Sam2Model, SamHQModel, SamModel
from typer.testing import CliRunner

from samtune.adapters import load_adapter, save_adapter
from samtune.cli import app
from samtune.data.transforms import preprocess_image
from samtune.errors import AdapterMismatchError, CheckpointError, ConfigError, OfflineError
from samtune.evaluation import evaluate
from samtune.export.formats import export_adapter
from samtune.models.family import FAMILIES, family_of
from samtune.models.identity import PreprocessConfig, preprocess_config
from samtune.models.loading import load_model
from samtune.models.sam_ops import NO_OBJECT_LOGIT, decode, encode_images, select_embeddings
from samtune.segment.prompted import predict
from samtune.strategies import Strategy, get_strategy
from samtune.train import fit

PRESETS = {"sam": "tiny", "sam-hq": "tiny-hq", "sam2": "tiny-sam2"}
CLASSES = {"sam": SamModel, "sam-hq": SamHQModel, "sam2": Sam2Model}
FAMILY_PRESETS = list(PRESETS.items())


@pytest.fixture(scope="module")
def models():
    return {family: load_model(preset) for family, preset in PRESETS.items()}


@pytest.fixture(scope="module")
def demo():
    from samtune.data import load_dataset

    counts = {"train": 2, "val": 1, "test": 1}
    return {s: load_dataset("demo", s, counts=counts) for s in ("train", "val")}


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(("family", "preset"), FAMILY_PRESETS)
def test_presets_folders_and_configs_name_their_family(family, preset, models, tmp_path):
    model = models[family]
    assert type(model) is CLASSES[family]
    assert family_of(model).name == family == family_of(model.config).name
    assert model.samtune_info.family == family
    model.save_pretrained(tmp_path)
    again = load_model(tmp_path)
    assert type(again) is CLASSES[family] and again.samtune_info.family == family
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values(), strict=True))  # fmt: skip
    result = CliRunner().invoke(app, ["info", preset])
    assert result.exit_code == 0
    assert f"family        {family} ({CLASSES[family].__name__})" in result.output


def test_same_weights_in_another_family_have_another_fingerprint(models):
    from samtune.models.identity import architecture, fingerprint

    assert architecture(models["sam"])["model_type"] == "sam"
    assert len({fingerprint(m) for m in models.values()}) == 3


def test_a_folder_of_another_model_type_names_the_families(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "dinov2"}')
    with pytest.raises(CheckpointError, match="'dinov2' model, not SAM, SAM-HQ, SAM 2"):
        load_model(tmp_path)


def test_offline_sam2_hub_id_fails_fast_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(OfflineError, match="facebook/sam2.1-hiera-small") as err:
        load_model("facebook/sam2.1-hiera-small")
    assert time.monotonic() - start < 10 and "\n" not in str(err.value)


def test_sam2_random_init_follows_the_original_code(models):
    sam2 = models["sam2"]
    # one Fourier matrix for image and prompts (transformers draws two), N(0, 1)
    image_pe = sam2.shared_image_embedding.positional_embedding
    assert torch.equal(image_pe, sam2.prompt_encoder.shared_embedding.positional_embedding)
    assert 0.5 < float(image_pe.std()) < 1.5
    # PyTorch default init, not transformers' N(0, 0.02)
    qkv = sam2.vision_encoder.backbone.blocks[0].attn.qkv.weight
    assert float(qkv.detach().abs().max()) > 0.1
    assert float(sam2.no_memory_embedding.detach().abs().sum()) > 0  # trunc_normal(0.02), not zeros


# --------------------------------------------------------------------------- preprocessing


def test_sam2_preprocessing_equals_sam2_image_processor(models):
    cfg = preprocess_config(models["sam2"])
    assert cfg == PreprocessConfig(128, square=True)
    assert preprocess_config(models["sam"]).square is False
    processor = Sam2ImageProcessor(size={"height": 128, "width": 128})
    rng = np.random.default_rng(0)
    for shape in [(300, 200, 3), (97, 160, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        want = processor(images=image, return_tensors="pt")["pixel_values"][0]
        got, geometry = preprocess_image(image, cfg)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        low = torch.randn(1, 2, 32, 32)
        back = processor.post_process_masks([low], [shape[:2]], binarize=False)[0]
        torch.testing.assert_close(geometry.logits_to_original(low[0]), back[0])
        corner = geometry.coords_to_model(np.array([shape[1], shape[0]], dtype=np.float32))
        assert corner.tolist() == pytest.approx([128, 128])


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
    torch.testing.assert_close(per_prompt.pred_masks, want.pred_masks[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(per_prompt.iou_scores, want.iou_scores[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(shared.pred_masks, per_prompt.pred_masks[1:], atol=1e-5, rtol=0)


def test_sam2_object_absent_is_an_empty_mask_in_evaluation_and_predict(demo):
    model = load_model("tiny-sam2")
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(-1e4)  # "no object" always
        emb = encode_images(model, torch.zeros(1, 3, 128, 128))
        box = torch.tensor([[10.0, 10, 60, 60]])
        raw = decode(model, emb, boxes=box).pred_masks
        empty = decode(model, emb, boxes=box, empty_absent=True).pred_masks
    assert (raw != NO_OBJECT_LOGIT).all() and (empty == NO_OBJECT_LOGIT).all()
    report = evaluate(model, demo["val"], "box", progress=False)
    assert report.metrics["miou"] == 0.0
    sample = demo["val"][0]
    assert not predict(model, sample.image, boxes=sample.boxes[:1]).masks.any()


# --------------------------------------------------------------------------- strategies


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _blocks(model) -> list[str]:
    pattern = family_of(model).targets["blocks"]
    return [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]


@pytest.mark.parametrize("family", list(PRESETS))
def test_full_and_decoder_train_exactly_their_parts(family):
    full = get_strategy("full").apply(load_model(PRESETS[family]))
    names = {n for n, _ in full.named_parameters()}
    assert _trainable(full) == names - {"shared_image_embedding.positional_embedding"}
    decoder = get_strategy("decoder").apply(load_model(PRESETS[family]))
    assert _trainable(decoder) == {n for n in names if n.startswith("mask_decoder.")}
    parts = {
        "sam-hq": ("hq_token", "hq_mask_mlp", "compress_vit_conv1", "encoder_conv1", "mask_conv1"),
        "sam2": ("obj_score_token", "pred_obj_score_head", "conv_s0", "conv_s1"),
    }.get(family, ())
    for part in parts:
        assert any(n.startswith(f"mask_decoder.{part}.") for n in _trainable(decoder)), part


@pytest.mark.parametrize("family", list(PRESETS))
def test_lora_adapts_every_encoder_block_and_the_decoder_attention(family):
    model = load_model(PRESETS[family])
    blocks = _blocks(model)
    assert len(blocks) == {"sam": 2, "sam-hq": 2, "sam2": 5}[family]
    decoder_attention = {
        n
        for n, m in model.named_modules()
        if re.search(r"^mask_decoder\.transformer\..*attn\w*\.(q_proj|v_proj)$", n)
        and isinstance(m, torch.nn.Linear)
    }
    get_strategy("lora", proj=True, mlp=True, decoder_attention=True).apply(model)
    lora = {n.split(".lora_")[0] for n in _trainable(model) if ".lora_" in n}
    mlp = ("mlp.lin1", "mlp.lin2") if family != "sam2" else ("mlp.proj_in", "mlp.proj_out")
    want = {f"{b}.{leaf}" for b in blocks for leaf in ("attn.qkv", "attn.proj", *mlp)}
    assert len(decoder_attention) == 14  # 2 layers x 3 attentions + final, q and v
    assert lora == want | decoder_attention
    out_names = "o_proj" if family == "sam2" else "out_proj"
    assert any(out_names in n for n, _ in model.named_modules())
    assert not any(out_names in n for n in lora)


@pytest.mark.parametrize("family", list(PRESETS))
def test_adapter_and_peft_cover_every_block_and_start_at_the_base(family):
    base = load_model(PRESETS[family])
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = decode(base, encode_images(base, pixels), boxes=torch.tensor([[9.0, 9, 99, 99]]))
    blocks = _blocks(base)
    get_strategy("adapter").apply(base)
    for kind in ("adapter_mlp", "adapter_attn"):
        found = {n.split(f".{kind}.")[0] for n in _trainable(base) if f".{kind}." in n}
        assert found == set(blocks)
    with torch.no_grad():
        after = decode(base, encode_images(base, pixels), boxes=torch.tensor([[9.0, 9, 99, 99]]))
    assert torch.equal(before.pred_masks, after.pred_masks)  # zero-initialised up projection
    ia3 = get_strategy("peft").apply(load_model(PRESETS[family]))
    found = {n.split(".ia3_l")[0] for n in _trainable(ia3) if ".ia3_l" in n}
    assert found == {f"{b}.attn.qkv" for b in blocks}


def test_a_plugin_without_families_is_refused_on_sam2():
    class BiasOnly(Strategy):
        name = "bias-only"

        def is_trainable(self, name: str) -> bool:
            return name.endswith(".bias")

    BiasOnly().apply(load_model("tiny"))
    with pytest.raises(ConfigError, match=r"supports the sam family; this model is sam2"):
        BiasOnly().apply(load_model("tiny-sam2"))

    class Everywhere(BiasOnly):
        families = tuple(FAMILIES)

    Everywhere().apply(load_model("tiny-sam2"))


# --------------------------------------------------------------------------- cache, eval, adapters


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sam-hq", "sam2"])
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


@pytest.mark.parametrize("family", ["sam-hq", "sam2"])
def test_every_protocol_evaluates(family, models, demo):
    for protocol in ("box", "point", "clicks:2"):
        report = evaluate(models[family], demo["val"], protocol, progress=False)
        assert 0.0 <= report.metrics["miou"] <= 1.0
        assert report.metrics["num_instances"] > 0


@pytest.mark.parametrize("family", ["sam-hq", "sam2"])
def test_adapters_round_trip_and_refuse_another_family(family, tmp_path):
    model = get_strategy("lora").apply(load_model(PRESETS[family]))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    box = torch.tensor([[10.0, 10, 80, 80]])

    def masks(m):
        with torch.no_grad():
            return decode(m, encode_images(m, pixels), boxes=box).pred_masks

    save_adapter(model, tmp_path / "adapter")
    assert load_file(tmp_path / "adapter" / "adapter.safetensors")  # written
    loaded = load_adapter(PRESETS[family], tmp_path / "adapter")
    assert torch.equal(masks(loaded), masks(model))
    export_adapter(loaded, tmp_path / "hf", "hf")
    merged = load_model(tmp_path / "hf")
    assert type(merged) is CLASSES[family]
    torch.testing.assert_close(masks(merged), masks(model), atol=1e-5, rtol=0)
    with pytest.raises(AdapterMismatchError, match=f"trained on a {family} model .* is sam "):
        load_adapter("tiny", tmp_path / "adapter")


@pytest.mark.slow
def test_eval_compare_puts_sam_sam_hq_and_sam2_adapters_in_one_table(tmp_path):
    from samtune.evaluation import EvalConfig, run_evaluation
    from samtune.evaluation.report import format_comparison

    adapters = []
    for family, preset in PRESETS.items():
        model = get_strategy("decoder").apply(load_model(preset))
        save_adapter(model, tmp_path / family)
        adapters.append(str(tmp_path / family))
    config = EvalConfig(model="tiny", adapter=adapters, compare=True, dataset="demo",
                        max_images=1, quiet=True, plots=False)  # fmt: skip
    reports = run_evaluation(config)
    assert list(reports) == ["tiny (zero-shot)", "sam", "sam-hq", "sam2"]
    # the SAM adapter (decoder untouched) scores exactly what its base does
    assert reports["sam"].metrics["miou"] == reports["tiny (zero-shot)"].metrics["miou"]
    table = format_comparison(reports)
    assert all(name in table for name in ("sam-hq", "sam2"))
