"""``tools/pretrain_demo_sam3.py``: its generic scenes are a valid COCO dataset named with the
demo's vocabulary, and a training step by name runs on them with the demo SAM 3 architecture."""

from __future__ import annotations

import numpy as np
from conftest import pretrain_demo_sam3_tool

import samtune
from samtune.data.phrases import dataset_phrases
from samtune.models.demo import demo_sam3_config
from samtune.models.identity import samtune_info
from samtune.models.presets import sam_from_config
from samtune.models.text import tiny_clip_tokenizer


def test_scenes_are_coco_named_with_the_demo_phrases(tmp_path):
    tool = pretrain_demo_sam3_tool()
    tool.write_dataset(tmp_path, {"train": 6, "test": 2}, seed=0)
    train = samtune.load_dataset("coco", "train", root=tmp_path)
    assert len(train) == 6
    assert list(train.categories.values()) == list(tool.CLASSES)
    phrases = dataset_phrases(train, tool.PHRASES, recipe="coco")
    assert phrases[3] == "piece of cardboard" and phrases[4] == "plastic bag"
    sample = train[0]
    assert sample.image.shape == (128, 128, 3) and len(sample.masks) >= 1
    assert all(m.sum() >= 20 for m in sample.masks)  # visible parts, occlusion applied
    again = tool.make_scene(np.random.default_rng([0, 0]))[0]
    assert np.array_equal(again, sample.image)  # deterministic from the seed


def test_the_demo_sam3_architecture_trains_by_name_on_them(tmp_path):
    tool = pretrain_demo_sam3_tool()
    tool.write_dataset(tmp_path / "data", {"train": 2, "val": 1, "test": 1}, seed=0)
    model = sam_from_config(demo_sam3_config(), 0)
    assert sum(p.numel() for p in model.parameters()) == 523_422
    samtune_info(model).tokenizer = tiny_clip_tokenizer()
    result = samtune.fit(model, "full", "coco", tmp_path / "run", dataset_root=str(tmp_path / "data"),
                         prompt="text", prompt_map=tool.PHRASES, max_steps=1, batch_size=2,
                         quiet=True, compare=False, log_with="none")  # fmt: skip
    assert result.steps == 1
    assert (tmp_path / "run" / "adapter" / "adapter.safetensors").is_file()
