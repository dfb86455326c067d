"""SAM 3 on the inference side: the family and tiny-sam3 preset, segmenting by name, the
strategies on SAM 3, ``samtune segment --text`` and ``samtune eval --prompt text``.

Oracles: transformers' own SAM 3 pipeline (``Sam3Processor`` + ``Sam3Model`` +
``post_process_instance_segmentation``) for :func:`samtune.segment_by_name`, and pycocotools'
COCOeval rerun on the files ``eval --prompt text`` saves.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Sam3ImageProcessor, Sam3Model, Sam3Processor
from typer.testing import CliRunner

from samtune.cli import app
from samtune.errors import ConfigError, InputError
from samtune.models.family import SAM3, family_of
from samtune.models.identity import fingerprint, preprocess_config, samtune_info
from samtune.models.loading import load_model
from samtune.segment.by_name import segment_by_name


@pytest.fixture(scope="module")
def sam3():
    return load_model("tiny-sam3")


def _image(seed: int = 0, size=(90, 130)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- family, preset


def test_tiny_sam3_is_a_seeded_sam3_with_its_tokenizer(sam3):
    assert type(sam3) is Sam3Model and family_of(sam3) is SAM3
    assert family_of("sam3") is SAM3 and samtune_info(sam3).family == "sam3"
    assert preprocess_config(sam3).to_dict() == {
        "image_size": 112, "mean": [127.5] * 3, "std": [127.5] * 3, "square": True,
    }  # fmt: skip
    assert fingerprint(load_model("tiny-sam3", seed=0)) == fingerprint(sam3)
    assert fingerprint(load_model("tiny-sam3", seed=1)) != fingerprint(sam3)
    tokenizer = samtune_info(sam3).tokenizer
    ids = tokenizer("plastic bottle")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<|startoftext|>", "plastic</w>", "bottle</w>", "<|endoftext|>",
    ]  # fmt: skip
    assert sam3.config.text_config.eos_token_id == tokenizer.eos_token_id
    assert sam3.config.text_config.vocab_size == len(tokenizer)


def test_a_saved_folder_loads_again_with_its_tokenizer(sam3, tmp_path):
    from samtune.export.formats import save_hf_folder

    save_hf_folder(sam3, tmp_path / "hf")
    again = load_model(tmp_path / "hf")
    assert type(again) is Sam3Model and fingerprint(again) == fingerprint(sam3)
    assert preprocess_config(again) == preprocess_config(sam3)
    texts = ["bottle", "rusty can lid"]
    assert (
        samtune_info(again).tokenizer(texts)["input_ids"]
        == (samtune_info(sam3).tokenizer(texts)["input_ids"])
    )
    processor = Sam3Processor.from_pretrained(tmp_path / "hf")  # transformers reads it too
    assert processor.image_processor.size["height"] == 112
    # save_pretrained alone keeps no tokenizer: the model loads, phrases are refused
    sam3.save_pretrained(tmp_path / "plain")
    plain = load_model(tmp_path / "plain")
    assert fingerprint(plain) == fingerprint(sam3)
    with pytest.raises(InputError, match="came without its tokenizer"):
        segment_by_name(plain, _image(), ["can"])


def test_samtune_info_names_the_family_and_text_encoder():
    result = CliRunner().invoke(app, ["info", "tiny-sam3"])
    assert result.exit_code == 0, result.output
    assert "family        sam3 (Sam3Model)" in result.output
    assert "text encoder  CLIP width 32, depth 2, heads 2, at most 32 tokens" in result.output
    assert "8 queries" in result.output


# --------------------------------------------------------------------------- segment_by_name


def test_segment_by_name_equals_transformers_sam3_pipeline(sam3):
    image, texts = _image(1), ["bottle", "plastic bottle", "can"]
    processor = Sam3Processor(
        image_processor=Sam3ImageProcessor(size={"height": 112, "width": 112}),
        tokenizer=samtune_info(sam3).tokenizer,
    )
    inputs = processor(images=[image] * len(texts), text=texts, return_tensors="pt")
    with torch.no_grad():
        outputs = sam3(**{k: inputs[k] for k in ("pixel_values", "input_ids", "attention_mask")})
    expected = processor.post_process_instance_segmentation(
        outputs, threshold=0.2, mask_threshold=0.5, target_sizes=[image.shape[:2]] * len(texts)
    )
    found = segment_by_name(sam3, image, texts, score_threshold=0.2)
    assert len(found) == sum(len(r["scores"]) for r in expected) > 0
    for index, result in enumerate(expected):
        mine = [f for f in found if f.category_id == index]
        order = torch.argsort(result["scores"], descending=True)
        assert [f.score for f in mine] == pytest.approx(result["scores"][order].tolist(), abs=1e-6)
        for f, j in zip(mine, order.tolist(), strict=True):
            assert np.array_equal(f.mask, result["masks"][j].numpy().astype(bool))
            assert f.text == texts[index]
            np.testing.assert_allclose(f.box, result["boxes"][j].numpy(), atol=1e-4)


def test_segment_by_name_shapes_order_and_determinism(sam3):
    image = _image(2, size=(70, 150))
    texts = ["can", "bag", "cardboard", "paper", "glass"]
    first = segment_by_name(sam3, image, texts, score_threshold=0.0, text_batch=4)
    again = segment_by_name(sam3, image, texts, score_threshold=0.0, text_batch=1)
    queries = sam3.config.detr_decoder_config.num_queries
    assert len(first) == len(texts) * queries  # threshold 0: every query of every phrase
    for f in first:
        assert f.mask.shape == (70, 150) and f.mask.dtype == bool
        assert 0.0 <= f.score <= 1.0 and f.box.shape == (4,)
    assert [f.category_id for f in first] == sorted(f.category_id for f in first)
    for index in range(len(texts)):
        scores = [f.score for f in first if f.category_id == index]
        assert scores == sorted(scores, reverse=True)
    # one encoding, phrases in chunks: the chunk size changes nothing
    assert [f.category_id for f in again] == [f.category_id for f in first]
    for a, b in zip(first, again, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-6)
        assert np.array_equal(a.mask, b.mask)
    assert segment_by_name(sam3, image, texts, score_threshold=0.99) == []


@pytest.mark.parametrize(
    ("texts", "words"),
    [
        ([""], "is empty"),
        (["  "], "is empty"),
        ([], "no phrase given"),
        (["x " * 40], "42 tokens long"),
        (["can", "Can"], "given twice"),
    ],
)
def test_bad_phrases_are_refused(sam3, texts, words):
    with pytest.raises(InputError, match=words):
        segment_by_name(sam3, _image(), texts)


def test_a_model_without_text_encoder_is_refused(tiny_model):
    with pytest.raises(InputError, match="sam .SamModel., which has no text encoder"):
        segment_by_name(tiny_model, _image(), ["can"])


def test_point_and_box_prompting_of_sam3_is_refused_with_what_to_use(sam3):
    from samtune.segment.automatic import generate_masks
    from samtune.segment.predictor import Predictor

    with pytest.raises(InputError, match="prompted by name: use `samtune segment IMAGES --text"):
        Predictor(sam3)
    with pytest.raises(InputError, match="automatic mask generation needs a SAM, SAM-HQ or SAM 2"):
        generate_masks(sam3, _image())


def test_public_api_exports_segment_by_name():
    import samtune

    assert samtune.segment_by_name is segment_by_name
    assert "segment_by_name" in samtune.__all__


# --------------------------------------------------------------------------- strategies


def _loss(model: torch.nn.Module) -> torch.Tensor:
    from samtune.models.text import tokenize_phrases

    tokens = tokenize_phrases(model, ["bottle", "can"])
    pixels = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    out = model(pixel_values=pixels, **tokens)
    return out.pred_masks.mean() + out.pred_logits.mean() + out.presence_logits.mean()


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("strategy", "options"),
    [
        ("decoder", {}),
        ("lora", {"decoder_attention": True, "proj": True}),
        ("adapter", {}),
        ("full", {}),
        ("peft", {"method": "loha", "options": {"r": 2}}),
    ],
)
def test_every_strategy_applies_to_sam3_and_trains_a_step(strategy, options):
    import samtune

    model = samtune.get_strategy(strategy, **options).apply(load_model("tiny-sam3"))
    trained = _trainable(model)
    roots = {n.split(".")[0] for n in trained}
    if strategy == "decoder":
        assert roots == {"detr_decoder", "mask_decoder", "dot_product_scoring"}
    elif strategy == "lora":
        lora = {n.rsplit(".lora_", 1)[0] for n in trained if ".lora_" in n}
        assert any(n.startswith("vision_encoder.backbone.layers.0.attention.q_proj") for n in lora)
        assert any(n.startswith("vision_encoder.backbone.layers.1.attention.o_proj") for n in lora)
        assert any(".self_attn.k_proj" in n and n.startswith("text_encoder.") for n in lora)
        assert any(n.startswith("detr_decoder.layers.0.text_cross_attn.v_proj") for n in lora)
        assert any(n.startswith("detr_encoder.layers.0.cross_attn.q_proj") for n in lora)
        assert not any(n.startswith("detr_decoder") and ".base_layer." in n for n in trained)
    elif strategy == "adapter":
        assert {n.split(".adapter_")[0] for n in trained if ".adapter_" in n} == {
            "vision_encoder.backbone.layers.0", "vision_encoder.backbone.layers.1",
        }  # fmt: skip
    elif strategy == "full":
        assert trained == {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(("vision_encoder.neck", "text_projection")) for n in trained) or (
        strategy == "full"
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    _loss(model).backward()
    optimizer.step()
    moved = {
        n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])
    }
    assert moved, "no trainable tensor moved"
    frozen = [p.grad for n, p in model.named_parameters() if not p.requires_grad]
    assert all(g is None for g in frozen)


def test_adapter_hooks_the_sam3_attention(sam3):
    import samtune

    model = samtune.get_strategy("adapter", mlp_adapter=False).apply(load_model("tiny-sam3"))
    pixels = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        start = model.get_vision_features(pixel_values=pixels).last_hidden_state
        model.vision_encoder.backbone.layers[0].adapter_attn.up.bias.fill_(0.5)
        changed = model.get_vision_features(pixel_values=pixels).last_hidden_state
    assert torch.equal(start, sam3.get_vision_features(pixel_values=pixels).last_hidden_state)
    assert not torch.allclose(start, changed)


def test_adapters_of_sam3_round_trip(tmp_path):
    import samtune

    model = samtune.get_strategy("lora").apply(load_model("tiny-sam3"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    samtune.save_adapter(model, tmp_path / "adapter")
    loaded = samtune.load_adapter("tiny-sam3", tmp_path / "adapter")
    image = _image(3)
    a = segment_by_name(model, image, ["can"], score_threshold=0.0)
    b = segment_by_name(loaded, image, ["can"], score_threshold=0.0)
    assert [x.score for x in a] == pytest.approx([x.score for x in b], abs=1e-6)


# --------------------------------------------------------------------------- samtune segment


def test_cli_segment_by_text_writes_class_labelled_files(tmp_path):
    Image.fromarray(_image(4)).save(tmp_path / "scene.png")
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "scene.png"), "-m", "tiny-sam3", "--text",
            "plastic bottle", "--text", "can", "--score-threshold", "0.2", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = out / "scene"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "scene.json", "scene_labels.png", "scene_overlay.png",
    ]  # fmt: skip
    doc = json.loads((folder / "scene.json").read_text())
    assert doc["categories"] == [{"id": 1, "name": "plastic bottle"}, {"id": 2, "name": "can"}]
    found = segment_by_name(load_model("tiny-sam3"), _image(4), ["plastic bottle", "can"],
                            score_threshold=0.2)  # fmt: skip
    assert len(doc["annotations"]) == len(found) > 0
    from pycocotools import mask as mask_utils

    labels = np.array(Image.open(folder / "scene_labels.png"))
    expected = np.zeros(labels.shape, np.int64)
    best = np.full(labels.shape, -1.0)
    for ann, f in zip(doc["annotations"], found, strict=True):
        assert ann["category_id"] == f.category_id + 1 and ann["text"] == f.text
        assert ann["score"] == pytest.approx(f.score)
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert np.array_equal(mask, f.mask)
        wins = mask & (ann["score"] >= best)
        expected[wins], best[wins] = ann["category_id"], ann["score"]
    assert np.array_equal(labels, expected)
    overlay = np.array(Image.open(folder / "scene_overlay.png"))
    assert overlay.shape == (90, 130, 3) and not np.array_equal(overlay, _image(4))


@pytest.mark.slow  # generates the demo dataset on a first run
def test_cli_segment_by_recipe_classes_uses_its_category_ids(tmp_path):
    Image.fromarray(_image(5)).save(tmp_path / "scene.png")
    args = ["segment", str(tmp_path / "scene.png"), "-m", "tiny-sam3", "--classes", "demo",
            "--score-threshold", "0.2", "-o", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "scene" / "scene.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["bottle", "can", "cardboard", "bag"]
    assert {a["category_id"] for a in doc["annotations"]} <= {c["id"] for c in doc["categories"]}


# --------------------------------------------------------------------------- eval --prompt text


def _dataset_of_its_own_masks(root: Path, model) -> tuple[Path, Path]:
    """A COCO dataset whose 'bottle' instances are the model's best 'bottle' masks (so AP is
    not 0) and whose 'can' instance is a square the model does not find."""
    from samtune.data.masks import encode_mask

    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(2):
        image = _image(10 + i, size=(80, 96))
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 80, "width": 96})
        found = segment_by_name(model, image, ["bottle"], score_threshold=0.05)
        square = np.zeros((80, 96), bool)
        square[10:30, 20:44] = True
        for mask, category in ((found[0].mask, 1), (found[i + 1].mask, 1), (square, 2)):
            rle = encode_mask(mask)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": category, "segmentation": rle,
                                "area": float(mask.sum()), "iscrowd": 0,
                                "bbox": [0.0, 0.0, 1.0, 1.0]})  # fmt: skip
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "bottle"}, {"id": 2, "name": "can"}]}  # fmt: skip
    (root / "annotations.json").write_text(json.dumps(coco))
    return root / "images", root / "annotations.json"


def test_eval_prompt_text_reports_what_cocoeval_gives_on_its_saved_files(sam3, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations = _dataset_of_its_own_masks(tmp_path / "data", sam3)
    out = tmp_path / "eval"
    args = ["eval", "-m", "tiny-sam3", "-d", "coco", "--images", str(images), "--annotations",
            str(annotations), "--prompt", "text", "-o", str(out), "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "text"
    m = metrics["metrics"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / "coco_ground_truth.json"))
        dt = gt.loadRes(str(out / "coco_results.json"))
        ev = COCOeval(gt, dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for key, index in {"ap": 0, "ap50": 1, "ap75": 2, "ar100": 8}.items():
        assert m[key] == pytest.approx(ev.stats[index], abs=1e-12), key
    assert m["per_class"]["bottle"]["ap"] > 0.3  # its own masks are found
    assert m["per_class"]["can"]["ap"] == 0.0
    assert m["ap"] == pytest.approx((m["per_class"]["bottle"]["ap"] + 0.0) / 2)
    assert {"semantic_miou", "cgf1", "il_mcc", "num_predictions"} <= set(m)
    results = json.loads((out / "coco_results.json").read_text())
    assert {r["category_id"] for r in results} <= {1, 2}
    assert len(results) == m["num_predictions"] > 0
    report = (out / "report.md").read_text()
    assert "| bottle |" in report and "cgF1" in report


def test_evaluate_text_on_a_sam_model_or_box_on_sam3_is_refused(sam3, tiny_model):
    from samtune.evaluation import evaluate

    samples = [object()]
    with pytest.raises(ConfigError, match="--prompt text needs a model with a text encoder"):
        evaluate(tiny_model, samples, "text")
    with pytest.raises(ConfigError, match="evaluate it with prompt 'text', not 'box'"):
        evaluate(sam3, samples, "box")


def test_text_reports_compare_side_by_side_per_class(sam3, tmp_path):
    from samtune.data import load_dataset
    from samtune.evaluation import evaluate
    from samtune.evaluation.report import EvalReport, format_comparison

    images, annotations = _dataset_of_its_own_masks(tmp_path / "data", sam3)
    data = load_dataset("coco", "train", images=str(images), annotations=str(annotations))
    reports = {
        "seed 0": evaluate(sam3, data, "text", progress=False),
        "seed 1": evaluate(load_model("tiny-sam3", seed=1), data, "text", progress=False),
    }
    assert reports["seed 0"].metrics["per_class"]["bottle"]["ap"] > 0.3
    table = format_comparison(reports)
    assert "| AP seed 0 | AP seed 1 |" in table and "| cgF1 seed 0 | cgF1 seed 1 |" in table
    rows = [line for line in table.splitlines() if line.startswith(("| bottle", "| can", "| mean"))]
    assert len(rows) == 3
    again = EvalReport.from_dict(reports["seed 0"].to_dict())  # rebuilt from metrics.json
    assert "| bottle |" in again.to_markdown()


def test_text_protocol_gathered_through_rle_scores_the_same(sam3, tmp_path):
    """The several-process path (predictions sent as RLE, scored in image order) gives the
    numbers of the one-process path; with one process, gather_object hands the list back."""
    from samtune.data import load_dataset
    from samtune.evaluation.named import evaluate_text

    images, annotations = _dataset_of_its_own_masks(tmp_path / "data", sam3)
    data = load_dataset("coco", "train", images=str(images), annotations=str(annotations))
    direct, _ = evaluate_text(sam3, data, [0, 1])
    gathered, _ = evaluate_text(sam3, data, [1, 0, 1], gather=True)  # a padded shard
    assert gathered.results == direct.results
    a, b = direct.compute(), gathered.compute()
    assert {k: a[k] for k in ("ap", "ap50", "semantic_miou", "cgf1")} == {
        k: b[k] for k in ("ap", "ap50", "semantic_miou", "cgf1")
    }


def test_a_suite_takes_the_text_protocol_and_still_refuses_auto():
    """Suites rank text cells by class-aware AP (tests/test_suite_text.py); ``auto`` has no
    per-cell headline they could rank, so it stays refused."""
    from samtune.suite.spec import _parse_protocols

    assert _parse_protocols(["box", "text"]) == ("box", "text")
    with pytest.raises(ConfigError, match="auto"):
        _parse_protocols(["box", "auto"])
