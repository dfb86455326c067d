"""Model, adapter and prediction inputs that used to crash, hang or pass silently (issue #22):
each is either handled correctly or refused with one message naming what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samtune.data.transforms import PreprocessConfig, preprocess_image
from samtune.errors import InputError

# --------------------------------------------------------------------------- extreme images


@pytest.mark.parametrize("shape", [(2, 4000), (4000, 2), (1, 1)])
def test_extreme_aspect_ratio_keeps_at_least_one_pixel(shape):
    image = np.full((*shape, 3), 200, np.uint8)
    pixels, geometry = preprocess_image(image, PreprocessConfig(image_size=128))
    assert pixels.shape == (3, 128, 128)
    assert min(geometry.resized_size) >= 1 and max(geometry.resized_size) == 128
    logits = geometry.logits_to_original(torch.zeros(1, 32, 32))
    assert tuple(logits.shape[-2:]) == shape


def test_predict_on_a_4000x2_image_gives_a_full_size_mask(tiny_model):
    import samtune

    image = np.random.default_rng(0).integers(0, 255, (2, 4000, 3), dtype=np.uint8)
    result = samtune.predict(tiny_model, image, boxes=[[0, 0, 4000, 2]])
    assert result.masks.shape == (1, 2, 4000)


# --------------------------------------------------------------------------- segment


def test_no_surviving_mask_gives_an_empty_label_map():
    from samtune.segment.automatic import AutoMasks

    empty = AutoMasks(
        masks=np.zeros((0, 5, 7), bool),
        predicted_iou=np.zeros(0, np.float32),
        stability_score=np.zeros(0, np.float32),
        boxes=np.zeros((0, 4), np.float32),
        point_coords=np.zeros((0, 2), np.float32),
        crop_boxes=np.zeros((0, 4), np.float32),
    )
    labels = empty.label_map()
    assert labels.shape == (5, 7) and not labels.any()
    assert empty.to_coco() == []


# --------------------------------------------------------------------------- prompt files


@pytest.mark.parametrize(
    "doc, words",
    [
        ({"points": [[["a", 5]]]}, ["points", "[0][0][0]", "numbers", "'a'"]),
        ({"points": [[[True, 5]]]}, ["points", "[0][0][0]", "numbers", "True"]),
        ({"boxes": [[1, 2, 30, 40], ["1", 2, 30, 40]]}, ["boxes", "[1][0]", "'1'"]),
        ({"boxes": [[1, None, 30, 40]]}, ["boxes", "[0][1]", "None"]),
        ({"points": [[[3, 5]]], "labels": [[True]]}, ["labels", "[0][0]", "True"]),
        ({"points": [[[3, 5]]], "labels": [["1"]]}, ["labels", "[0][0]", "'1'"]),
        ({"points": [[[3, 5]]], "labels": [[1.0]]}, ["labels", "integer", "1.0"]),
    ],
)
def test_prompt_file_entries_must_be_numbers(tmp_path, doc, words):
    from samtune.segment.prompted import read_prompts_file

    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_prompts_file(path)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_prompt_file_with_numbers_still_reads(tmp_path):
    from samtune.segment.prompted import read_prompts_file

    path = tmp_path / "p.json"
    path.write_text(json.dumps({"points": [[[3, 5.5], [1, 2]]], "labels": [[1, 0]]}))
    table = read_prompts_file(path)
    assert table["*"]["points"].tolist() == [[[3, 5.5], [1, 2]]]


def test_library_prompts_refuse_booleans():
    from samtune.segment.prompted import prepare_prompts

    with pytest.raises(InputError, match="numbers"):
        prepare_prompts(boxes=[[True, 0, 5, 5]])
    with pytest.raises(InputError, match="point labels"):
        prepare_prompts(points=[[[1, 1]]], point_labels=[[True]])
    assert prepare_prompts(points=np.ones((1, 1, 2)), point_labels=np.ones((1, 1))).n == 1


# --------------------------------------------------------------------------- evaluation


def test_evaluation_refuses_nan_logits_instead_of_reporting_nan(tiny_model):
    from test_evaluate import make_dataset

    from samtune.errors import RunError
    from samtune.evaluation import evaluate

    with torch.no_grad():
        tiny_model.mask_decoder.iou_token.weight.fill_(float("nan"))
    with pytest.raises(RunError, match="NaN or infinite"):
        evaluate(tiny_model, make_dataset(1), "box")


def test_nan_weights_are_refused_at_load_naming_the_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    from samtune.errors import CheckpointError
    from samtune.export.formats import save_hf_folder
    from samtune.models.loading import load_model

    save_hf_folder(load_model("tiny"), tmp_path / "m")
    sd = load_file(tmp_path / "m" / "model.safetensors")
    sd["mask_decoder.iou_token.weight"][0, 1] = float("inf")
    save_file(sd, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'mask_decoder\.iou_token\.weight'.*NaN or inf"):
        load_model(tmp_path / "m")


# --------------------------------------------------------------------------- adapter regexes


@pytest.mark.parametrize(
    "pattern", [r".*\.qkv", r"vision_encoder\.layers\.\d+\.attn\.qkv", r".*\.(q|v)_proj"]
)
def test_ordinary_target_regexes_are_accepted(pattern):
    from samtune.strategies.base import check_regex

    assert check_regex("target_modules", pattern).pattern == pattern


@pytest.mark.parametrize(
    "pattern, words",
    [
        (r"(a+)+$", "repeat inside a repeat"),
        (r"(a|ab)*c", "alternation inside a repeat"),
        (r"(x)\1", "backreference"),
        (".*" * 5 + "x", "5 repeats"),
        ("a" * 501, "at most 500"),
    ],
)
def test_catastrophic_target_regexes_are_refused(pattern, words):
    from samtune.errors import ConfigError
    from samtune.strategies.base import check_regex

    with pytest.raises(ConfigError, match=words):
        check_regex("target_modules", pattern)


def test_adapter_shapes_are_checked_before_layers_are_built():
    import samtune

    model = samtune.load_model("tiny")
    shapes = samtune.get_strategy("lora", rank=10**12).trainable_shapes(model)
    assert shapes["vision_encoder.layers.0.attn.qkv.lora_A.default.weight"] == (10**12, 32)
    assert all(not hasattr(m, "lora_A") for m in model.modules())  # the model is untouched


@pytest.mark.parametrize("preset", ["tiny", "tiny-hq", "tiny-sam2"])
@pytest.mark.parametrize("strategy", ["lora", "adapter", "peft"])
def test_meta_twin_shapes_equal_what_the_strategy_trains(preset, strategy):
    """The pre-check is never skipped for built-ins: its shapes are exactly the real ones."""
    import samtune

    shapes = samtune.get_strategy(strategy).trainable_shapes(samtune.load_model(preset))
    model = samtune.get_strategy(strategy).apply(samtune.load_model(preset))
    assert shapes == {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
