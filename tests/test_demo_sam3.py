"""The bundled ``demo-sam3`` preset: a pretrained small SAM 3 that loads offline, finds the
objects it was pretrained to name, and refuses clearly when its weights are missing."""

from __future__ import annotations

import pytest
import torch
from conftest import pretrain_demo_sam3_tool

import samtune
from samtune.data.phrases import dataset_phrases
from samtune.errors import MissingFileError
from samtune.models import demo
from samtune.models.family import family_of
from samtune.models.presets import list_presets, preset_family


@pytest.fixture(scope="module")
def model():
    return samtune.load_model("demo-sam3")


def test_demo_sam3_is_a_listed_sam3_preset_with_an_offline_tokenizer(model):
    from samtune.models.text import tokenize_phrases

    assert "demo-sam3" in list_presets()
    assert family_of(model).name == preset_family("demo-sam3") == "sam3"
    assert sum(p.numel() for p in model.parameters()) == 523_422
    assert all(p.dtype.is_floating_point and p.element_size() == 4 for p in model.parameters())
    ids = tokenize_phrases(model, ["plastic bag", "tire"])["input_ids"]
    assert ids.shape == (2, 32) and not ids[0].equal(ids[1])


@pytest.fixture(scope="module")
def held_out_scenes(tmp_path_factory):
    """Pretraining-world scenes the model never saw (another seed)."""
    root = tmp_path_factory.mktemp("scenes")
    tool = pretrain_demo_sam3_tool()
    tool.write_dataset(root, {"test": 12}, seed=1234)
    dataset = samtune.load_dataset("coco", "test", root=root)
    return dataset, dataset_phrases(dataset, tool.PHRASES, recipe="coco")


MIN_HELD_OUT_AP = 0.045
"""About half of what the bundled model measures on these 12 scenes (AP 0.094; random 0.0)."""


def test_the_bundled_weights_are_pretrained_not_random(model, held_out_scenes):
    """Zero-shot by name on unseen scenes of its pretraining world, the bundled model scores
    class-aware AP well above the same architecture untrained (``sam_from_config``)."""
    from samtune.models.demo import demo_sam3_config
    from samtune.models.identity import samtune_info
    from samtune.models.presets import sam_from_config
    from samtune.models.text import tiny_clip_tokenizer

    dataset, phrases = held_out_scenes
    random = sam_from_config(demo_sam3_config(), 0)
    samtune_info(random).tokenizer = tiny_clip_tokenizer()
    ap = {
        name: samtune.evaluate(m, dataset, "text", phrases=phrases, progress=False).metrics["ap"]
        for name, m in (("bundled", model), ("random", random))
    }
    assert ap["random"] < 0.01
    assert ap["bundled"] >= MIN_HELD_OUT_AP, ap


def test_missing_weights_name_the_file_and_the_tool(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "demo_model_path", lambda folder=demo.DEMO_MODEL_DIR: tmp_path)
    with pytest.raises(MissingFileError) as info:
        samtune.load_model("demo-sam3")
    message = str(info.value)
    assert "model.safetensors" in message and "tools/pretrain_demo_sam3.py" in message
    assert "\n" not in message


def test_the_demo_sam3_weights_are_fp16_and_small():
    from safetensors.torch import load_file

    weights = load_file(demo.demo_model_path(demo.DEMO_SAM3_DIR) / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float16}
    size = (demo.demo_model_path(demo.DEMO_SAM3_DIR) / "model.safetensors").stat().st_size
    assert size < 1_200_000


def test_demo_by_name_defaults_to_its_own_learning_rate():
    from samtune.train.config import FitConfig

    assert FitConfig(dataset="demo", prompt="text").resolved().lr == 1e-3
    assert FitConfig(dataset="demo").resolved().lr == 3e-4  # the demo SAM's, unchanged
    assert FitConfig(dataset="demo", prompt="text", lr=2e-4).resolved().lr == 2e-4
