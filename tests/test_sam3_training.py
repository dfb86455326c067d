"""SAM 3 training by category name (``prompt: text``) on a tiny ``Sam3Model`` built here.

The model is a small non-default ``Sam3Config`` (2-layer ViT on 56 px, 2-layer CLIP text
encoder, one DETR encoder layer, two decoder layers, 8 queries), so every test runs in about a
second. Phrases are tokenized by :func:`word_tokenize`, a real (if simple) tokenizer: a word's
id is a hash of its letters, between CLIP's start and end tokens, padded to 8.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data.sample import Sample
from samtune.errors import ConfigError, DataError
from samtune.train.sam3_step import (
    Sam3TextStep,
    TextPromptDataset,
    category_phrases,
    collate_text,
    exemplar_boxes,
    has_text_encoder,
    image_targets,
    mask_side,
    sam3_preprocess,
    shrink_masks,
    text_step_loss,
)

VOCAB, LENGTH, BOS, EOS = 100, 8, 98, 99


def tiny_sam3_config():
    from transformers import CLIPTextConfig, Sam3Config
    from transformers.models.sam3.configuration_sam3 import Sam3VisionConfig, Sam3ViTConfig

    vit = Sam3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, image_size=56, patch_size=14, window_size=2,
                        global_attn_indexes=[1], pretrain_image_size=28)  # fmt: skip
    vision = Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=32,
                              backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]])  # fmt: skip
    text = CLIPTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                          projection_dim=32, num_hidden_layers=2, num_attention_heads=2,
                          max_position_embeddings=LENGTH, bos_token_id=BOS,
                          eos_token_id=EOS)  # fmt: skip
    small = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, dropout=0.0)
    return Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config=dict(small, num_layers=1),
        detr_encoder_config=dict(small, num_layers=1),
        detr_decoder_config=dict(small, num_layers=2, num_queries=8),
        mask_decoder_config=dict(hidden_size=32, num_attention_heads=2),
    )


def tiny_sam3(seed: int = 0):
    from transformers import Sam3Model

    torch.manual_seed(seed)
    return Sam3Model(tiny_sam3_config()).train()


def word_tokenize(phrases: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(phrases), LENGTH, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, phrase in enumerate(phrases):
        words = [3 + sum(map(ord, w)) % (VOCAB - 5) for w in phrase.split()][: LENGTH - 2]
        tokens = torch.tensor([BOS, *words, EOS])
        ids[row, : len(tokens)], mask[row, : len(tokens)] = tokens, 1
    return ids, mask


def scene(seed: int, crowd: bool = False) -> Sample:
    """A 40 x 60 image: a bright category-1 box, a dark category-2 box (category 3 absent)."""
    rng = np.random.default_rng(seed)
    h, w = 40, 60
    image = rng.integers(60, 180, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((2, h, w), bool)
    masks[0, 5:20, 10:30] = True
    masks[1, 22:38, 35:55] = True
    image[masks[0]], image[masks[1]] = 250, 10
    boxes = np.array([[10, 5, 30, 20], [35, 22, 55, 38]], np.float32)
    return Sample(image, masks, boxes, np.array([1, 2]), np.array([False, crowd]),
                  np.array([1, 2]), seed, f"{seed}.png")  # fmt: skip


PHRASES = {1: "bottle", 2: "soft plastic", 3: "metal can"}


def batch_for(model, samples, exemplar=False):
    ds = TextPromptDataset(samples, sam3_preprocess(model), list(PHRASES), mask_side(model),
                           exemplar=exemplar)  # fmt: skip
    return collate_text([ds[i] for i in range(len(ds))])


# --------------------------------------------------------------------------- targets


def test_targets_absent_category_has_no_boxes_so_presence_zero():
    targets = image_targets(scene(0), [1, 2, 3], side=16)
    assert [len(t["boxes"]) for t in targets] == [1, 1, 0]
    assert targets[2]["masks"].shape == (0, 16, 16)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[10 / 60, 5 / 40, 30 / 60, 0.5]]))
    # The loss reads presence from the box count: the absent row's presence target is 0.
    model = tiny_sam3()
    batch = batch_for(model, [scene(0)])
    out = Sam3TextStep(model, list(PHRASES.values()), word_tokenize)(batch["pixel_values"])
    logits = torch.tensor([-3.0, 3.0, 3.0]).reshape(3, 1)  # only row 0 says "absent"
    out = {**out, "presence_logits": logits}
    weights = dict(weight_ce=0, weight_bbox=0, weight_giou=0, weight_mask=0, weight_dice=0)
    from samtune.train.sam3_losses import Sam3LossConfig

    loss = text_step_loss(out, batch["targets"], Sam3LossConfig(**weights))[2]["presence_loss"]
    expected = (
        torch.nn.functional.binary_cross_entropy_with_logits(
            logits.reshape(3), torch.tensor([1.0, 1.0, 0.0])
        )
        * 0.5
    )  # focal alpha 0.5, gamma 0
    torch.testing.assert_close(loss, expected)


def test_boxes_are_fractions_of_the_stretched_model_input():
    """SAM 3 stretches the image to the square: a box's place in pixel_values is its fraction."""
    model = tiny_sam3()
    sample = scene(0)
    ds = TextPromptDataset([sample], sam3_preprocess(model), [1, 2], mask_side(model))
    item = ds[0]
    side = item["pixel_values"].shape[-1]
    x1, y1, x2, y2 = (item["targets"][0]["boxes"][0] * side).round().int().tolist()
    inside = item["pixel_values"][:, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1]
    assert inside.min() > 0.9  # the bright object (250 -> ~0.96) fills its box
    assert item["pixel_values"][:, : y1 - 2].max() < 0.5  # nothing that bright above it


def test_crowd_and_empty_instances_are_not_targets():
    sample = scene(0, crowd=True)
    assert [len(t["boxes"]) for t in image_targets(sample, [1, 2], 16)] == [1, 0]


def test_masks_shrink_by_area():
    mask = np.zeros((1, 40, 60), bool)
    mask[0, :, :30] = True  # the left half
    small = shrink_masks(mask, 16)
    assert small.shape == (1, 16, 16)
    assert small[0, :, :8].all() and not small[0, :, 8:].any()


def test_exemplar_boxes_are_one_instance_each_cxcywh():
    targets = image_targets(scene(0), [1, 2, 3], 16)
    boxes, labels = exemplar_boxes(targets, torch.Generator().manual_seed(0))
    assert labels[:, 0].tolist() == [1, 1, -10]
    torch.testing.assert_close(boxes[0, 0], torch.tensor([20 / 60, 12.5 / 40, 20 / 60, 15 / 40]))


# --------------------------------------------------------------------------- the step


def test_one_vision_encode_per_image_and_rows_per_category():
    model = tiny_sam3()
    seen = {"vision": [], "detr": []}
    model.vision_encoder.register_forward_hook(
        lambda m, args, out: seen["vision"].append(args[0].shape[0])
    )
    model.detr_encoder.register_forward_pre_hook(
        lambda m, args, kw: seen["detr"].append(kw["vision_features"][0].shape[0]),
        with_kwargs=True,
    )
    batch = batch_for(model, [scene(0), scene(1)])
    out = Sam3TextStep(model, list(PHRASES.values()), word_tokenize)(batch["pixel_values"])
    assert seen == {"vision": [2], "detr": [6]}  # 2 images once; 2 x 3 (image, phrase) rows
    assert out["pred_masks"].shape == (6, 8, 16, 16)
    assert len(batch["targets"]) == 6


def test_rows_follow_image_then_category_order():
    """Row b * C + c is image b asked for category c: the same as running them one by one."""
    model = tiny_sam3().eval()
    batch = batch_for(model, [scene(0), scene(1)])
    step = Sam3TextStep(model, list(PHRASES.values()), word_tokenize)
    with torch.no_grad():
        rows = step(batch["pixel_values"])["pred_boxes"]
        one = Sam3TextStep(model, ["soft plastic"], word_tokenize)(batch["pixel_values"][1:])
    torch.testing.assert_close(rows[4], one["pred_boxes"][0], atol=1e-5, rtol=1e-5)


def test_negatives_cap_absent_rows_and_rows_equal_the_full_grid():
    model = tiny_sam3().eval()
    phrases = ["bottle", "soft plastic", "metal can", "glass jar"]  # 3 and 4 absent
    ds = TextPromptDataset([scene(0), scene(1)], sam3_preprocess(model), [1, 2, 3, 4],
                           mask_side(model), negatives=1)  # fmt: skip
    batch = collate_text([ds[0], ds[1]])
    assert batch["image_index"].tolist() == [0, 0, 0, 1, 1, 1]
    assert [p for p in batch["phrase_index"].tolist()[:2]] == [0, 1]  # present: always asked
    assert [len(t["boxes"]) for t in batch["targets"]] == [1, 1, 0, 1, 1, 0]
    step = Sam3TextStep(model, phrases, word_tokenize)
    with torch.no_grad():
        rows = step(batch["pixel_values"], batch["image_index"], batch["phrase_index"])
        grid = step(batch["pixel_values"])
    pairs = zip(batch["image_index"].tolist(), batch["phrase_index"].tolist(), strict=True)
    for row, (image, phrase) in enumerate(pairs):
        torch.testing.assert_close(
            rows["pred_logits"][row], grid["pred_logits"][image * 4 + phrase]
        )
    drawn = set()
    for epoch in range(8):  # the absent category asked changes with the epoch, not the read
        ds.set_epoch(epoch)
        assert ds[0]["phrase_index"].tolist() == ds[0]["phrase_index"].tolist()
        drawn.add(ds[0]["phrase_index"].tolist()[2])
    assert drawn == {2, 3}


def test_frozen_text_encoder_runs_once_per_phrase_per_run():
    model = tiny_sam3()
    model.text_encoder.requires_grad_(False)
    calls = []
    model.text_encoder.register_forward_hook(lambda m, a, k: calls.append(1))
    step = Sam3TextStep(model, list(PHRASES.values()), word_tokenize)
    batch = batch_for(model, [scene(0)])
    for _ in range(3):
        text_step_loss(step(batch["pixel_values"]), batch["targets"])[0].backward()
    assert (len(calls), step.text_encodings) == (1, 3)
    assert model.text_projection.weight.grad is not None  # the projection still trains


def test_trained_text_encoder_runs_every_step():
    model = tiny_sam3()
    step = Sam3TextStep(model, list(PHRASES.values()), word_tokenize)
    batch = batch_for(model, [scene(0)])
    for _ in range(2):
        text_step_loss(step(batch["pixel_values"]), batch["targets"])[0].backward()
    assert step.text_encodings == 6
    assert model.text_encoder.text_model.embeddings.token_embedding.weight.grad is not None


def _losses(seed: int, steps: int, exemplar: bool = False) -> list[float]:
    model = tiny_sam3(seed)
    step = Sam3TextStep(model, list(PHRASES.values()), word_tokenize)
    batch = batch_for(model, [scene(0), scene(1)], exemplar=exemplar)
    prompts = {k: batch[k] for k in ("input_boxes", "input_boxes_labels") if k in batch}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss, iou, _ = text_step_loss(step(batch["pixel_values"], **prompts), batch["targets"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert 0 <= iou.item() <= 1
    return losses


def test_steps_lower_the_loss_on_a_fixed_batch():
    losses = _losses(0, 4)
    assert losses[-1] < losses[0] - 1.0, losses


def test_exemplar_prompts_train_too():
    losses = _losses(0, 3, exemplar=True)
    assert losses[-1] < losses[0], losses
    assert losses[0] != _losses(0, 1)[0]  # the box prompt reaches the model


def test_same_seed_same_loss():
    assert _losses(3, 2) == _losses(3, 2)
    assert _losses(3, 1) != _losses(4, 1)


def test_has_text_encoder_tells_sam3_from_sam():
    import samtune

    assert has_text_encoder(tiny_sam3())
    assert not has_text_encoder(samtune.load_model("tiny"))


# --------------------------------------------------------------------------- phrases


def test_phrases_prompt_map_over_recipe_map_over_names():
    cats = {1: "trash_plastic", 2: "rov", 3: "animal_eel"}
    phrases = category_phrases(
        cats, {"rov": "  remotely  operated vehicle "}, {"trash_plastic": "plastic trash",
                                                          "trash_wood": "wood"}
    )  # fmt: skip
    assert phrases == {1: "plastic trash", 2: "remotely operated vehicle", 3: "animal_eel"}


@pytest.mark.parametrize(
    ("categories", "prompt_map", "error", "words"),
    [
        ({1: "a"}, {"b": "x"}, ConfigError, ["prompt_map names category 'b'", "lacks", "'a'"]),
        ({1: "a"}, {"a": "  "}, ConfigError, ["empty phrase"]),
        ({1: ""}, {}, DataError, ["no category names"]),
        ({}, {}, DataError, ["no category names"]),
        (
            {1: "a", 2: "b"},
            {"b": "a"},
            ConfigError,
            ["both be asked by the phrase", "category_map"],
        ),
    ],
)
def test_phrases_refuse(categories, prompt_map, error, words):
    with pytest.raises(error) as info:
        category_phrases(categories, prompt_map, dataset="dataset 'mine'")
    for word in words:
        assert word in str(info.value)


def test_recipe_prompt_maps_name_real_categories_with_plain_phrases():
    from samtune.data.recipes import RECIPES
    from samtune.data.synthetic import CATEGORIES

    demo = RECIPES["demo"].prompt_map
    assert set(demo) == set(CATEGORIES)
    assert set(RECIPES["zerowaste"].prompt_map) == {"rigid_plastic", "cardboard", "metal",
                                                    "soft_plastic"}  # fmt: skip
    assert RECIPES["trashcan-material"].prompt_map["trash_plastic"] == "plastic trash"
    assert len(RECIPES["taco"].prompt_map) == RECIPES["taco"].num_classes
    for name in ("demo", "zerowaste", "taco", "trashcan"):
        phrases = RECIPES[name].prompt_map.values()
        assert all(p == p.strip() and p and "_" not in p for p in phrases), name
    for name in ("demo", "zerowaste", "taco"):  # one version each: phrases unique
        assert len(set(RECIPES[name].prompt_map.values())) == len(RECIPES[name].prompt_map)


# --------------------------------------------------------------------------- options


def test_fit_config_text_options():
    from samtune.train.config import FitConfig
    from samtune.train.sam3_options import sam3_loss_config

    cfg = FitConfig(prompt="Text", prompt_map={"bag": "plastic bag"},
                    sam3_loss={"weight_mask": 100, "matcher": {"cost_class": 1}})  # fmt: skip
    assert cfg.prompt == "text"
    loss = sam3_loss_config(cfg.sam3_loss)
    assert (loss.weight_mask, loss.weight_dice, loss.matcher.cost_class) == (100, 10, 1)
    assert FitConfig(prompt="text+exemplar").prompt == "text+exemplar"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"prompt_map": {"bag": ""}}, ["empty phrase"]),
        ({"prompt_map": {"bag": 3}}, ["must be text"]),
        ({"sam3_loss": {"weight_maks": 1}}, ["no setting 'weight_maks'", "weight_mask"]),
        ({"sam3_loss": {"weight_mask": -1}}, ["weight_mask", ">= 0"]),
        ({"sam3_loss": {"matcher": {"cost": 1}}}, ["matcher has no setting 'cost'"]),
        ({"prompt": "text", "augment": True}, ["augment"]),
        ({"text_negatives": -1}, ["text_negatives", ">= 0"]),
        ({"prompt": "words"}, ["text"]),
    ],
)
def test_fit_config_refuses(options, words):
    from samtune.train.config import FitConfig

    with pytest.raises(ConfigError) as info:
        FitConfig(**options)
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- fit


def test_fit_by_name_end_to_end(tmp_path):
    """``samtune.fit`` with ``prompt="text"`` on the demo data: 2 LoRA steps, an adapter, and
    the zero-shot/fine-tuned table of the text protocol (class-aware AP, semantic mIoU)."""
    import samtune

    model = samtune.load_model("tiny-sam3")
    counts = {"train": 4, "val": 1, "test": 2}
    result = samtune.fit(model=model, strategy="lora", dataset="demo",
                         dataset_options={"counts": counts},
                         output_dir=tmp_path / "run", prompt="text",
                         max_steps=2, epochs=1, batch_size=2, quiet=True,
                         log_with="none")  # fmt: skip
    assert result.steps == 2
    assert "text prompts" in result.table and "zero-shot" in result.table
    assert {"ap", "semantic_miou"} <= set(result.comparison["fine_tuned"]["text"])
    assert (tmp_path / "run" / "adapter" / "adapter.safetensors").is_file()
    assert "prompt: text" in (tmp_path / "run" / "config.yaml").read_text()
