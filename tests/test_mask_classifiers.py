"""The class-head extension point: a classifier on crops gives each automatic mask a class."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.errors import InputError, UnknownNameError
from samtune.segment.automatic import AutoMasks
from samtune.segment.mask_classifiers import (
    Classes,
    CropClassifier,
    MaskClassifier,
    classify_masks,
    get_mask_classifier,
    list_mask_classifiers,
    register_mask_classifier,
    semantic_map,
)

CATEGORIES = {1: "red", 2: "green"}


def _scene():
    image = np.full((40, 60, 3), 30, np.uint8)
    image[5:20, 5:25] = (220, 20, 20)
    image[22:38, 30:55] = (20, 220, 20)
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 22:38, 30:55] = True  # green first: order must follow the masks, not the colours
    masks[1, 5:20, 5:25] = True
    n = len(masks)
    found = AutoMasks(masks, np.array([0.9, 0.8], np.float32), np.ones(n, np.float32),
                      np.zeros((n, 4), np.float32), np.zeros((n, 2), np.float32),
                      np.zeros((n, 4), np.float32))  # fmt: skip
    return image, found


def _by_colour(crops):
    """A real (if simple) crop classifier: the dominant channel of the non-grey pixels."""
    ids, scores = [], []
    for crop in crops:
        pixels = crop.reshape(-1, 3)[(crop.reshape(-1, 3) != 128).any(1)].astype(float)
        red, green = pixels[:, 0].mean(), pixels[:, 1].mean()
        ids.append(1 if red > green else 2)
        scores.append(max(red, green) / (red + green))
    return ids, scores


def test_crop_classifier_labels_each_mask_and_paints_a_semantic_map():
    image, found = _scene()
    classifier = get_mask_classifier("crops", predict=_by_colour, categories=CATEGORIES)
    records = classify_masks(found, image, classifier)
    assert [r["category_id"] for r in records] == [2, 1]
    assert all(0.5 < r["class_score"] <= 1 for r in records)
    crops = classifier.crops(image, found.masks)
    assert crops[1].shape == (15 + 2, 20 + 4, 3)  # the box padded by 10% of its side (int)
    labels = semantic_map(found, [r["category_id"] for r in records])
    assert (labels[found.masks[0]] == 2).all() and (labels[found.masks[1]] == 1).all()
    assert (labels[~found.masks.any(0)] == 0).all()


def test_a_registered_classifier_is_found_by_name_and_checked():
    @register_mask_classifier
    class Constant(MaskClassifier):
        name = "test-constant"
        categories = {7: "object"}

        def __init__(self, answers: int = 1):
            self.answers = answers

        def classify(self, image, masks):
            return Classes(np.full(self.answers, 7), np.ones(self.answers))

    image, found = _scene()
    assert {"crops", "test-constant"} <= set(list_mask_classifiers())
    assert {r["category_id"] for r in classify_masks(found, image, Constant(2))} == {7}
    with pytest.raises(InputError, match="1 classes and 1 scores for 2 masks"):
        classify_masks(found, image, get_mask_classifier("test-constant"))
    with pytest.raises(InputError, match=r"category ids \[1\]"):
        classify_masks(
            found, image, CropClassifier(lambda c: ([1] * len(c), [1] * len(c)), {2: "g"})
        )
    with pytest.raises(UnknownNameError, match="not installed; installed: .*crops"):
        get_mask_classifier("no-such-head")
    with pytest.raises(TypeError, match="not a MaskClassifier"):
        register_mask_classifier(dict)
