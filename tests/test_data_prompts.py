"""Prompts from masks, the prompt grammar, both click samplers, prompted batches, demo data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samtune.data import (
    PromptedDataset,
    collate_prompted,
    jitter_boxes,
    load_dataset,
    next_click,
    points_from_masks,
)
from samtune.data.prompts import boxes_from_masks
from samtune.data.synthetic import write_demo_dataset
from samtune.errors import ConfigError, UnknownNameError
from samtune.models.identity import PreprocessConfig
from samtune.prompting import (
    DATA_PROMPTS,
    EVAL_PROMPTS,
    PROMPT_FORMS,
    Prompt,
    center_point,
    parse_prompt,
    sample_clicks,
)


def test_boxes_and_center_point():
    m = np.zeros((1, 40, 60), bool)
    m[0, 10:31, 5:46] = True  # 21 rows, 41 cols: centre pixel (25, 20)
    assert boxes_from_masks(m).tolist() == [[5, 10, 46, 31]]
    assert center_point(m[0]) == (25, 20)
    # an L-shape: the centre lies in the thick part, never outside the mask
    L = np.zeros((50, 50), bool)
    L[0:50, 0:30] = True
    L[40:50, 0:50] = True
    x, y = center_point(L)
    assert L[y, x] and x < 30


def test_jitter_is_bounded_seeded_and_sam_sized():
    boxes = np.tile(np.array([[100, 100, 400, 200]], np.float32), (2000, 1))
    out = jitter_boxes(boxes, noise=0.1, max_px=20, rng=0)
    delta = out - boxes
    assert np.abs(delta).max() <= 20 + 1e-4
    # std 10% of the side: 30 px along x (clipped at 20), 10 px along y
    assert 8.5 < delta[:, 1].std() < 11.5 and delta[:, 0].std() > delta[:, 1].std()
    assert np.array_equal(out, jitter_boxes(boxes, 0.1, 20, rng=0))
    clipped = jitter_boxes(np.array([[0, 0, 10, 10]], np.float32), 1.0, 20, 1, image_size=(10, 10))
    assert clipped.min() >= 0 and clipped.max() <= 10
    assert np.array_equal(jitter_boxes(boxes[:3], noise=0.0), boxes[:3])


def test_points_positive_inside_negative_outside():
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:30, 10:40] = True
    points, labels = points_from_masks(masks, n_pos=3, n_neg=2, rng=0)
    assert points.shape == (2, 5, 2) and labels.shape == (2, 5)
    assert labels[0].tolist() == [1, 1, 1, 0, 0]
    for (x, y), lab in zip(points[0].astype(int), labels[0], strict=True):
        assert masks[0, y, x] == bool(lab)
    assert (labels[1] == -10).all()  # empty mask: padding only
    rand, _ = points_from_masks(masks[:1], n_pos=4, mode="random", rng=1)
    assert all(masks[0, y, x] for x, y in rand[0].astype(int))


def test_next_click_targets_largest_error_with_right_label():
    gt = np.zeros((50, 50), bool)
    gt[10:40, 10:40] = True
    pred = gt.copy()
    pred[10:40, 10:20] = False  # a 30x10 miss
    pred[0:4, 0:4] = True  # a small false alarm
    x, y, label = next_click(pred, gt)
    assert label == 1 and 10 <= x < 20 and 10 <= y < 40 and not pred[y, x]
    pred2 = gt.copy()
    pred2[42:50, 0:50] = True  # an 8x50 false alarm
    x, y, label = next_click(pred2, gt)
    assert label == 0 and pred2[y, x] and not gt[y, x]
    assert next_click(gt, gt) is None


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "demo"
    write_demo_dataset(root, seed=3, counts={"train": 12, "val": 4, "test": 4})
    return root


def test_demo_dataset_is_deterministic_and_valid(demo_root, tmp_path):
    again = write_demo_dataset(
        tmp_path / "again", seed=3, counts={"train": 12, "val": 4, "test": 4}
    )
    for split in ("train", "val", "test"):
        a = (demo_root / split / "annotations.json").read_bytes()
        assert a == (again / split / "annotations.json").read_bytes()
    other = write_demo_dataset(tmp_path / "other", seed=4, counts={"train": 12})
    assert (other / "train/annotations.json").read_bytes() != (
        demo_root / "train/annotations.json"
    ).read_bytes()
    ds = load_dataset("demo", "train", demo_root, seed=3, counts={"train": 12, "val": 4, "test": 4})
    assert len(ds) == 12 and ds.categories == {1: "bottle", 2: "can", 3: "cardboard", 4: "bag"}
    stats = ds.stats()
    assert stats["instances"] >= 12 and all(v > 0 for v in stats["per_class"].values())
    s = ds[0]
    assert s.image.shape == (128, 128, 3) and s.masks.any(axis=(1, 2)).all()
    # masks are visible parts: no pixel belongs to two instances
    assert s.masks.sum(axis=0).max() <= 1


def test_demo_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMTUNE_CACHE", str(tmp_path))
    counts = {"train": 3, "val": 2, "test": 2}
    ds = load_dataset("demo", "val", counts=counts)
    folder = tmp_path / "demo-1-0-128px-test2-train3-val2"  # counts of their own: no race
    assert len(ds) == 2 and json.loads((folder / "demo.json").read_text())["counts"] == counts
    stamp = (folder / "val" / "annotations.json").stat().st_mtime_ns
    load_dataset("demo", "test", counts=counts)
    assert (folder / "val" / "annotations.json").stat().st_mtime_ns == stamp
    # other counts get another folder and leave this one alone
    load_dataset("demo", "val", counts={"train": 2, "val": 1, "test": 1})
    assert (folder / "val" / "annotations.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo-1-0-128px-test1-train2-val1",
        folder.name,
    ]


def test_prompted_dataset_and_collate(demo_root):
    ds = load_dataset("demo", "train", demo_root, seed=3, counts={"train": 12, "val": 4, "test": 4})
    cfg = PreprocessConfig(image_size=64)
    full = PromptedDataset(ds, cfg, prompt="points:2,1")
    item = full[0]
    sample = ds[0]
    n = sample.num_instances
    assert item["pixel_values"].shape == (3, 64, 64)
    assert item["boxes"].shape == (n, 4) and item["points"].shape == (n, 3, 2)
    assert item["masks"].shape == (n, 128, 128) and item["masks"].dtype == torch.bool
    assert torch.allclose(item["boxes"], torch.from_numpy(sample.boxes) / 2)  # 128 -> 64 px
    # positive points lie inside their mask (back in original pixels)
    pts = item["geometry"].coords_to_original(item["points"]).long()
    for k in range(n):
        x, y = pts[k, 0]
        assert item["masks"][k, y, x] and item["point_labels"][k, 0] == 1
    capped = PromptedDataset(ds, cfg, prompt="box", max_instances=1, jitter=0.1, augment=True)
    counts = [len(capped[i]["boxes"]) for i in range(len(ds))]
    assert max(counts) == 1
    multi = [i for i in range(len(ds)) if ds[i].num_instances > 1]
    picks = set()
    for epoch in range(6):
        capped.set_epoch(epoch)
        picks.add(int(capped[multi[0]]["instance_ids"][0]))
    assert len(picks) > 1  # a different instance is drawn in different epochs
    capped.set_epoch(2)
    a, b = capped[multi[0]], capped[multi[0]]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    batch = collate_prompted([full[i] for i in range(4)], pad=True)
    assert batch["pixel_values"].shape == (4, 3, 64, 64)
    assert [len(b) for b in batch["boxes"]] == [ds[i].num_instances for i in range(4)]
    assert batch["instance_valid"].sum() == sum(ds[i].num_instances for i in range(4))
    assert (batch["labels_padded"][~batch["instance_valid"]] == -10).all()
    with pytest.raises(ConfigError, match="points:P,N"):
        PromptedDataset(ds, cfg, prompt="scribble")
    with pytest.raises(ConfigError, match="unknown prompt 'clicks:3'"):  # evaluation only
        PromptedDataset(ds, cfg, prompt="clicks:3")


def test_crowd_regions_are_left_out_of_prompts(tmp_path):
    from PIL import Image

    from samtune.data import InstanceDataset

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    poly = [[2, 2, 12, 2, 12, 12, 2, 12]]
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 20, "width": 20}],
        "annotations": [
            {
                "id": i,
                "image_id": 1,
                "category_id": 1,
                "segmentation": poly,
                "iscrowd": int(i == 13),
            }
            for i in (11, 12, 13)
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    ds = InstanceDataset(coco, tmp_path)
    item = PromptedDataset(ds, PreprocessConfig(64))[0]
    assert item["instance_ids"].tolist() == [11, 12]
    with_crowd = PromptedDataset(ds, PreprocessConfig(64), include_crowd=True)[0]
    assert with_crowd["instance_ids"].tolist() == [11, 12, 13]


# --------------------------------------------------------------------------- the prompt grammar


@pytest.mark.parametrize(
    ("text", "kind", "args", "canonical"),
    [
        ("box", "box", (), "box"),
        (" Point ", "point", (), "point"),
        ("points:3,1", "points", (3, 1), "points:3,1"),
        ("points: 2, 0", "points", (2, 0), "points:2,0"),
        ("clicks:5", "clicks", (5,), "clicks:5"),
        ("click:05", "clicks", (5,), "clicks:5"),
        ("interactive", "interactive", (), "interactive"),
    ],
)
def test_parse_prompt_round_trips(text, kind, args, canonical):
    prompt = parse_prompt(text)
    assert (prompt.kind, prompt.args, str(prompt), prompt.name) == (
        kind,
        args,
        canonical,
        canonical,
    )
    assert parse_prompt(str(prompt)) == prompt == parse_prompt(prompt)


def test_prompt_point_counts():
    counts = {
        f: (parse_prompt(f).n_pos, parse_prompt(f).n_neg, parse_prompt(f).clicks)
        for f in ("box", "point", "points:3,1", "clicks:4", "interactive")
    }
    assert counts == {
        "box": (0, 0, 0),
        "point": (1, 0, 0),
        "points:3,1": (3, 1, 0),
        "clicks:4": (1, 0, 4),
        "interactive": (1, 0, 0),
    }
    assert Prompt("clicks", (2,)) == parse_prompt("clicks:2")


@pytest.mark.parametrize(
    ("text", "allowed", "error", "match"),
    [
        ("scribble", PROMPT_FORMS, ConfigError, "unknown prompt 'scribble'; prompt must be one of"),
        ("box:2", PROMPT_FORMS, ConfigError, "unknown prompt 'box:2'"),
        ("clicks:3", DATA_PROMPTS, ConfigError, r"box, point, points:P,N \(e.g. 'points:3,1'\)"),
        ("interactive", EVAL_PROMPTS, ConfigError, "must be one of box, point, clicks:N"),
        ("clicks:0", EVAL_PROMPTS, ConfigError, "invalid click protocol 'clicks:0'"),
        ("clicks", EVAL_PROMPTS, ConfigError, "expected 'clicks:N' with N a positive integer"),
        ("points:0,1", DATA_PROMPTS, ConfigError, "P >= 1 positive and N >= 0 negative"),
        ("points:2", DATA_PROMPTS, ConfigError, "invalid points prompt 'points:2'"),
        ("points:1,-1", DATA_PROMPTS, ConfigError, "e.g. 'points:3,1'"),
    ],
)
def test_parse_prompt_errors(text, allowed, error, match):
    with pytest.raises(error, match=match):
        parse_prompt(text, allowed)


def test_parse_prompt_names_the_caller():
    with pytest.raises(UnknownNameError, match="unknown evaluation protocol 'boxes'; eval_prompt"):
        parse_prompt(
            "boxes", EVAL_PROMPTS, name="eval_prompt", what="evaluation protocol",
            unknown=UnknownNameError,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="unknown prompt 'clicks:2'"):
        parse_prompt(Prompt("clicks", (2,)), DATA_PROMPTS)


# --------------------------------------------------------------------------- training clicks


def test_sample_clicks_land_in_the_error():
    r = 8
    targets = torch.zeros(4, r, r, dtype=torch.bool)
    logits = torch.full((4, r, r), -1.0)
    targets[0, 2:4, 2:4] = True  # 0: missed object -> a positive click on it
    logits[1, 5:7, 1:3] = 1.0  # 1: false alarm -> a negative click on it
    targets[2, 0:3, 0:3] = True  # 2: perfect -> a positive click on the target
    logits[2, 0:3, 0:3] = 1.0
    # 3: empty target, empty prediction -> anywhere, labelled 0 (outside the empty target)
    gen = torch.Generator().manual_seed(0)
    xy, label = sample_clicks(logits, targets, gen)
    assert xy.shape == (4, 2) and xy.dtype == torch.long and label.dtype == torch.long
    x, y = xy.T.tolist()
    assert targets[0, y[0], x[0]] and label[0] == 1
    assert logits[1, y[1], x[1]] > 0 and label[1] == 0
    assert targets[2, y[2], x[2]] and label[2] == 1
    assert 0 <= x[3] < r and 0 <= y[3] < r and label[3] == 0
    again = sample_clicks(logits, targets, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], xy) and torch.equal(again[1], label)


def test_sample_clicks_are_uniform_over_the_error():
    r = 4
    targets = torch.zeros(2000, r, r, dtype=torch.bool)
    targets[:, 0, :2] = True  # two missed pixels: (0, 0) and (1, 0)
    xy, label = sample_clicks(
        torch.full((2000, r, r), -1.0), targets, torch.Generator().manual_seed(1)
    )
    assert (label == 1).all() and (xy[:, 1] == 0).all()
    assert 0.45 < (xy[:, 0] == 0).float().mean() < 0.55
