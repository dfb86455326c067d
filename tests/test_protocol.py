"""The paper's protocol: box prompts from the annotation's COCO bbox (``box_source``) and the
per-image IoU metrics, against hand-computed values and segmentation_models_pytorch's formula."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samtune.data import InstanceDataset
from samtune.data.batching import PromptedDataset
from samtune.data.masks import encode_mask
from samtune.data.prompts import jitter_boxes, prompt_boxes
from samtune.data.transforms import AugmentConfig, augment_sample
from samtune.errors import ConfigError, DataError
from samtune.evaluation import EvalConfig, evaluate
from samtune.evaluation.metrics import mask_counts, summarize_instances
from samtune.models.identity import PreprocessConfig
from samtune.train.config import FitConfig

ROOT = Path(__file__).resolve().parents[1]
H, W = 48, 64


# --------------------------------------------------------------------------- fabricated COCO


def _mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


# (mask rows, mask columns) and the file's bbox [x, y, w, h]: the first agrees with its mask,
# the second is 6 px wider on each side, as hand-drawn boxes can be
OBJECTS = [
    ((5, 20), (8, 30), [8, 5, 22, 15]),
    ((25, 40), (30, 50), [24, 19, 32, 27]),
]


def _coco(tmp_path: Path, *, bbox: bool = True, image_ids=None) -> InstanceDataset:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in (1, 2):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / name)
        images.append({"id": i, "file_name": name, "height": H, "width": W})
        for k, ((y0, y1), (x0, x1), box) in enumerate(OBJECTS):
            ann = {"id": 10 * i + k, "image_id": i, "category_id": 1, "iscrowd": 0,
                   "segmentation": encode_mask(_mask(y0, y1, x0, x1)), "area": 1}  # fmt: skip
            if bbox:
                ann["bbox"] = box
            anns.append(ann)
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "can"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return InstanceDataset(tmp_path / "ann.json", folder, name="fabricated", image_ids=image_ids)


@pytest.fixture
def coco(tmp_path) -> InstanceDataset:
    return _coco(tmp_path)


def test_samples_carry_the_files_bbox_as_xyxy_beside_the_mask_boxes(coco):
    sample = coco[0]
    np.testing.assert_array_equal(sample.boxes, [[8, 5, 30, 20], [30, 25, 50, 40]])
    np.testing.assert_array_equal(sample.annotation_boxes, [[8, 5, 30, 20], [24, 19, 56, 46]])
    assert sample.annotation_boxes.dtype == np.float32
    np.testing.assert_array_equal(sample.subset(np.array([1])).annotation_boxes, [[24, 19, 56, 46]])


def test_prompt_boxes_by_source_and_its_errors(tmp_path, coco):
    sample = coco[0]
    np.testing.assert_array_equal(prompt_boxes(sample, "mask"), sample.boxes)
    np.testing.assert_array_equal(prompt_boxes(sample, "annotation"), sample.annotation_boxes)
    with pytest.raises(ConfigError, match="mask, annotation"):
        prompt_boxes(sample, "bbox")
    (tmp_path / "plain").mkdir()
    no_bbox = _coco(tmp_path / "plain", bbox=False)
    assert np.isnan(no_bbox[0].annotation_boxes).all()
    with pytest.raises(DataError, match=r"annotation\(s\) \[10, 11\] have none"):
        prompt_boxes(no_bbox[0], "annotation")
    bare = dataclasses.replace(sample, annotation_boxes=None)
    with pytest.raises(DataError, match="without annotation boxes"):
        prompt_boxes(bare, "annotation")


def test_augmentation_moves_the_annotation_boxes_with_the_image(coco):
    flip_and_double = AugmentConfig(hflip=1.0, vflip=1.0, scale=(2.0, 2.0), color=0, hue=0)
    out = augment_sample(coco[0], flip_and_double, torch.Generator().manual_seed(0))
    # x -> W - x, y -> H - y (corners swap), then x2: (64 - 24) * 2 = 80 ...
    np.testing.assert_allclose(out.annotation_boxes[1], [2 * 8, 2 * 2, 2 * 40, 2 * 29])
    np.testing.assert_allclose(out.boxes[1], [2 * 14, 2 * 8, 2 * 34, 2 * 23])


def test_prompted_dataset_takes_the_boxes_from_box_source_and_jitters_either(coco):
    cfg = PreprocessConfig(image_size=128, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    ann_item = PromptedDataset(coco, cfg, box_source="annotation")[0]
    mask_item = PromptedDataset(coco, cfg)[0]  # the default: today's boxes, from the masks
    geom = ann_item["geometry"]
    expected = geom.coords_to_model(coco[0].annotation_boxes)
    np.testing.assert_allclose(ann_item["boxes"].numpy(), expected)
    np.testing.assert_allclose(mask_item["boxes"].numpy(), geom.coords_to_model(coco[0].boxes))
    assert not np.allclose(ann_item["boxes"].numpy(), mask_item["boxes"].numpy())

    jittered = PromptedDataset(coco, cfg, jitter=0.1, seed=3, box_source="annotation")
    item = jittered[1]
    rng = np.random.default_rng(jittered_seed(3, 0, 1))
    want = jitter_boxes(coco[1].annotation_boxes, 0.1, 20.0, rng, coco[1].size)
    np.testing.assert_allclose(item["boxes"].numpy(), item["geometry"].coords_to_model(want))
    with pytest.raises(ConfigError, match="box_source"):
        PromptedDataset(coco, cfg, box_source="bbox")


def jittered_seed(seed: int, epoch: int, index: int) -> int:
    from samtune.data.batching import _seed

    return _seed(seed, epoch, index)


# --------------------------------------------------------------------------- options


def test_options_refuse_an_unknown_box_source_and_keep_eval_config_light():
    assert FitConfig().box_source == "mask" and EvalConfig().box_source == "mask"
    for cls in (FitConfig, EvalConfig):
        with pytest.raises(ConfigError, match="box_source must be one of mask, annotation"):
            cls(box_source="bbox")
    import subprocess
    import sys

    code = (
        "import sys; from samtune.evaluation.config import EvalConfig;"
        "EvalConfig(box_source='annotation'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


# --------------------------------------------------------------------------- evaluation


def test_evaluate_prompts_with_the_annotation_boxes(coco, tiny_model):
    ann = evaluate(tiny_model, coco, "box", box_source="annotation", max_images=1)
    mask = evaluate(tiny_model, coco, "box", max_images=1)
    # oracle: the same image with the file's boxes put where the mask boxes were
    oracle = evaluate(tiny_model, [dataclasses.replace(coco[0], boxes=coco[0].annotation_boxes)])
    assert [r["intersection"] for r in ann.records] == [r["intersection"] for r in oracle.records]
    assert [r["union"] for r in ann.records] == [r["union"] for r in oracle.records]
    assert [r["union"] for r in ann.records] != [r["union"] for r in mask.records]
    assert ann.options["box_source"] == "annotation" and mask.options["box_source"] == "mask"
    with pytest.raises(ConfigError, match="box protocol only"):
        evaluate(tiny_model, coco, "point", box_source="annotation")
    with pytest.raises(ConfigError, match="box_source must be one of"):
        evaluate(tiny_model, coco, "box", box_source="bbox")


def test_fit_uses_box_source_for_training_validation_and_the_comparison(tmp_path, monkeypatch):
    from samtune.strategies.decoder import DecoderStrategy
    from samtune.train import fit, loop

    seen = []
    real = loop.evaluate

    def spy(*args, **kwargs):
        seen.append((kwargs.get("name"), kwargs.get("prompt"), kwargs.get("box_source")))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", spy)
    one = _coco(tmp_path, image_ids=[1])  # one image per split keeps it fast
    splits = {"train": one, "val": one, "test": one}
    fit("tiny", DecoderStrategy(), splits, tmp_path / "run", max_steps=1, batch_size=1,
        box_source="annotation", compare_point=True, quiet=True, log_with=None)  # fmt: skip
    assert sorted(seen) == [
        ("fine-tuned", "box", "annotation"),
        ("fine-tuned", "point", "mask"),  # a point prompt has no box to take from anywhere
        ("validation", "box", "annotation"),
        ("zero-shot", "box", "annotation"),
        ("zero-shot", "point", "mask"),
    ]
    # training itself reads the file's boxes: without them it stops and says so
    plain = tmp_path / "plain"
    plain.mkdir()
    no_bbox = _coco(plain, bbox=False, image_ids=[1])
    with pytest.raises(DataError, match="bbox"):
        fit("tiny", DecoderStrategy(), {"train": no_bbox}, tmp_path / "run2", max_steps=1,
            box_source="annotation", val_split=None, test_split=None, quiet=True,
            log_with=None)  # fmt: skip


# --------------------------------------------------------------------------- metrics


def _record(image: int, inter: int, union: int) -> dict:
    return {"image_index": image, "category_id": 1, "intersection": inter, "union": union,
            "pred_area": inter, "target_area": union}  # fmt: skip


def test_image_pooled_iou_by_hand():
    records = [_record(0, 1, 4), _record(0, 9, 10), _record(1, 0, 5)]
    m = summarize_instances(records)
    assert m["image_miou"] == pytest.approx(((0.25 + 0.9) / 2 + 0.0) / 2)  # 0.2875
    assert m["image_pooled_iou"] == pytest.approx((10 / 14 + 0 / 5) / 2)  # 0.357...
    assert m["pooled_iou"] == pytest.approx(10 / 19)
    assert m["miou"] == pytest.approx((0.25 + 0.9 + 0.0) / 3)
    # an image whose every union is 0 (empty prediction, empty target) counts 1.0, as samtune's IoU
    assert summarize_instances([_record(0, 0, 0)])["image_pooled_iou"] == 1.0


# segmentation_models_pytorch 0.5 (smp/metrics/functional.py), transcribed: get_stats in
# "binary" mode thresholds then sums over the dims after the first two (N, C, ...);
# iou_score(reduction="micro-imagewise") sums tp/fp/fn over dim 1, takes tp / (tp + fp + fn)
# per row of dim 0 (NaN -> 0, zero_division's default) and averages the rows.
def _smp_get_stats_binary(output, target, threshold):
    output = torch.where(output >= threshold, 1, 0)
    target = torch.where(target >= threshold, 1, 0)
    batch_size, num_classes, *_ = target.shape
    output = output.view(batch_size, num_classes, -1)
    target = target.view(batch_size, num_classes, -1)
    tp = (output * target).sum(2)
    return tp, output.sum(2) - tp, target.sum(2) - tp


def _smp_iou_micro_imagewise(tp, fp, fn):
    tp, fp, fn = tp.sum(1), fp.sum(1), fn.sum(1)
    score = tp / (tp + fp + fn)
    return torch.where(torch.isnan(score), torch.zeros_like(score), score).mean()


def _random_images(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = []
    for n in (3, 1, 4):
        # instances of different sizes and qualities, so that pooling changes the weights
        density = torch.linspace(0.1, 0.8, n)[:, None, None]
        target = torch.rand(n, 20, 24, generator=g) < density
        target[:, 0, 0] = True  # never empty: evaluation skips empty targets
        logits = torch.randn(n, 20, 24, generator=g) * 3 + torch.linspace(-2, 2, n)[:, None, None]
        images.append((logits, target))
    return images


def test_lightning_sams_smp_micro_imagewise_is_image_miou_not_a_pooled_iou():
    images = _random_images()
    records = []
    for index, (logits, target) in enumerate(images):
        counts = mask_counts(logits >= 0.5, target)
        for i, u in zip(counts["intersection"], counts["union"], strict=True):
            records.append(_record(index, int(i), int(u)))
    m = summarize_instances(records)
    # lightning-sam's validate(): one image's (N, H, W) logits and masks go to get_stats as
    # they are, so smp's "images" are the instances and its "classes" the rows
    per_image = [
        _smp_iou_micro_imagewise(*_smp_get_stats_binary(logits, target.int(), 0.5))
        for logits, target in images
    ]
    assert float(torch.stack(per_image).mean()) == pytest.approx(m["image_miou"], abs=1e-6)
    # one (1, N, H, W) item per image: the instances are the classes, pooled per image
    pooled = [
        _smp_iou_micro_imagewise(*_smp_get_stats_binary(logits[None], target[None].int(), 0.5))
        for logits, target in images
    ]
    assert float(torch.stack(pooled).mean()) == pytest.approx(m["image_pooled_iou"], abs=1e-6)
    assert abs(m["image_pooled_iou"] - m["image_miou"]) > 1e-3  # the two differ here


def test_the_reports_json_holds_the_new_key(coco, tiny_model):
    report = evaluate(tiny_model, coco, "box", max_images=1)
    assert "image_pooled_iou" in json.loads(json.dumps(report.to_dict()))["metrics"]


# --------------------------------------------------------------------------- the suite


def test_the_paper_suite_has_a_lightning_sam_row_and_tests_with_annotation_boxes():
    from samtune.suite.spec import load_spec

    spec = load_spec(ROOT / "examples" / "suites" / "dont-waste-sam.yaml")
    rows = {s.label: s for s in spec.strategies}
    assert set(rows) == {"full", "lightning-sam"}
    ls = rows["lightning-sam"]
    assert ls.name == "decoder" and ls.options == {}  # image and prompt encoders frozen
    assert ls.train["box_source"] == "annotation" and ls.train["box_jitter"] == 0.0
    assert (ls.train["focal_weight"], ls.train["dice_weight"], ls.train["iou_weight"]) == (20, 1, 1)
    assert (ls.train["lr"], ls.train["warmup_steps"], ls.train["epochs"]) == (8e-4, 250, 19)
    assert ls.train["batch_size"] * ls.train["grad_accum"] == 48
    assert spec.eval["box_source"] == "annotation"
    text = (ROOT / "examples" / "suites" / "dont-waste-sam.yaml").read_text()
    assert "ASSUMED: full fine-tuning" in text  # the strategy is an assumption too


def test_suite_eval_box_source_is_checked_and_mask_keeps_old_settings():
    from samtune.suite.spec import _parse_eval

    assert _parse_eval({"box_source": "mask"}) == {"prompt_batch": 32, "max_images": None}
    assert _parse_eval({"box_source": "annotation"})["box_source"] == "annotation"
    with pytest.raises(ConfigError, match="eval.box_source must be one of mask, annotation"):
        _parse_eval({"box_source": "bbox"})


def test_a_suite_folder_trained_before_box_source_existed_is_not_refused(tmp_path):
    from samtune.suite.plan import _check_same

    recorded = {"epochs": 2, "lr": 1e-4}  # written by a samtune without the option
    _check_same(tmp_path, recorded, {"epochs": 2, "lr": 1e-4, "box_source": "mask"})
    with pytest.raises(ConfigError, match="box_source: 'mask' there, 'annotation' in the spec"):
        _check_same(tmp_path, recorded, {"epochs": 2, "lr": 1e-4, "box_source": "annotation"})
    with pytest.raises(ConfigError, match="epochs: 2 there, 3 in the spec"):
        _check_same(tmp_path, recorded, {"epochs": 3, "lr": 1e-4, "box_source": "mask"})
