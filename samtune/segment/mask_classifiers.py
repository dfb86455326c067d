"""Classes for automatic masks: the extension point for a class head.

SAM's automatic masks carry no class. samtune does not invent one: a class comes from a model
the user provides, plugged in as a :class:`MaskClassifier`:

- subclass :class:`MaskClassifier`, set ``name`` and ``categories`` and implement
  :meth:`~MaskClassifier.classify` (image + masks -> a category id and a confidence per mask);
- or use :class:`CropClassifier`, which cuts each mask's box out of the image (the background
  around the object greyed out) and hands the crops to any image classifier the user has, e.g. a
  fine-tuned timm or transformers classifier wrapped in a function.

Classifiers are found like strategies: :func:`register_mask_classifier` in this process, or the
``samtune.segment.mask_classifiers`` entry-point group for an installed package::

    [project.entry-points."samtune.segment.mask_classifiers"]
    waste-material = "my_package:MaterialClassifier"

:func:`classify_masks` applies one and returns COCO results with ``category_id`` and
``class_score``; :func:`semantic_map` paints them into a class-index map.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from ..data.masks import semantic_label_map
from ..errors import InputError, UnknownNameError

if TYPE_CHECKING:
    from .automatic import AutoMasks

GROUP = "samtune.segment.mask_classifiers"


class Classes(NamedTuple):
    """One class per mask: ``category_ids`` (N,) int64 (keys of the classifier's
    ``categories``) and ``scores`` (N,) float32 in [0, 1], the classifier's confidence."""

    category_ids: np.ndarray
    scores: np.ndarray


class MaskClassifier(ABC):
    """Gives every automatic mask a class. Subclasses set ``name`` and ``categories``."""

    name: ClassVar[str] = ""
    categories: dict[int, str] = {}  # noqa: RUF012 (a subclass sets its own)

    @abstractmethod
    def classify(self, image: np.ndarray, masks: np.ndarray) -> Classes:
        """Classify N masks of one image.

        Args:
            image: HxWx3 uint8 RGB.
            masks: (N, H, W) bool.

        Returns:
            :class:`Classes`, one entry per mask, in mask order.
        """


class CropClassifier(MaskClassifier):
    """A classifier on image crops, applied to each mask's box (a class head for any
    image classifier).

    Args:
        predict: ``crops -> (category_ids, scores)``: a list of HxWx3 uint8 crops in, one
            category id (a key of ``categories``) and one confidence per crop out.
        categories: ``{category_id: name}``.
        padding: the box is enlarged by this fraction of its side on each side (context).
        grey_background: pixels of the crop outside the mask are set to grey (128), so the
            classifier sees the object, not its neighbours.
    """

    name = "crops"

    def __init__(
        self,
        predict: Callable[[list[np.ndarray]], tuple[Sequence[int], Sequence[float]]],
        categories: dict[int, str],
        *,
        padding: float = 0.1,
        grey_background: bool = True,
    ) -> None:
        self.predict = predict
        self.categories = dict(categories)
        self.padding = float(padding)
        self.grey_background = grey_background

    def crops(self, image: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        """The crop of each mask (its box, padded, clipped to the image)."""
        height, width = image.shape[:2]
        out = []
        for mask in masks:
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                out.append(np.full((1, 1, 3), 128, np.uint8))
                continue
            pad_y = int(self.padding * (ys.max() - ys.min() + 1))
            pad_x = int(self.padding * (xs.max() - xs.min() + 1))
            y0, y1 = max(0, ys.min() - pad_y), min(height, ys.max() + 1 + pad_y)
            x0, x1 = max(0, xs.min() - pad_x), min(width, xs.max() + 1 + pad_x)
            crop = image[y0:y1, x0:x1].copy()
            if self.grey_background:
                crop[~mask[y0:y1, x0:x1]] = 128
            out.append(crop)
        return out

    def classify(self, image: np.ndarray, masks: np.ndarray) -> Classes:
        ids, scores = self.predict(self.crops(image, masks))
        return Classes(np.asarray(ids, np.int64), np.asarray(scores, np.float32))


_registered: dict[str, type[MaskClassifier]] = {"crops": CropClassifier}


def register_mask_classifier(cls: type[MaskClassifier]) -> type[MaskClassifier]:
    """Register a :class:`MaskClassifier` subclass in this process; returns ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, MaskClassifier)) or not cls.name:
        raise TypeError(f"{cls!r} is not a MaskClassifier subclass with a `name`")
    _registered[cls.name] = cls
    return cls


def list_mask_classifiers() -> list[str]:
    """The names of the classifiers registered here or installed through entry points."""
    return sorted({*_registered, *(ep.name for ep in entry_points(group=GROUP))})


def get_mask_classifier(name: str, **config: Any) -> MaskClassifier:
    """The classifier ``name``, built with ``config``.

    Raises:
        UnknownNameError: no classifier of that name (the message lists the installed ones).
    """
    cls = _registered.get(name)
    if cls is None:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
        if not found:
            installed = ", ".join(list_mask_classifiers()) or "(none)"
            raise UnknownNameError(
                f"mask classifier {name!r} is not installed; installed: {installed}. Register "
                f"one with register_mask_classifier or a '{GROUP}' entry point"
            )
        cls = found[0].load()
        if not (isinstance(cls, type) and issubclass(cls, MaskClassifier)):
            raise TypeError(f"entry point {name!r} is {cls!r}, not a MaskClassifier subclass")
    return cls(**config)


def classify_masks(found: AutoMasks, image: np.ndarray, classifier: MaskClassifier) -> list[dict]:
    """``found.to_coco()`` with each record's ``category_id`` and ``class_score`` from
    ``classifier``.

    Raises:
        InputError: the classifier gave a wrong number of answers or an unknown category.
    """
    classes = classifier.classify(image, found.masks)
    n = len(found)
    if len(classes.category_ids) != n or len(classes.scores) != n:
        raise InputError(
            f"mask classifier {classifier.name!r} returned {len(classes.category_ids)} classes "
            f"and {len(classes.scores)} scores for {n} masks; it must answer once per mask"
        )
    unknown = sorted(set(classes.category_ids.tolist()) - set(classifier.categories))
    if unknown:
        raise InputError(
            f"mask classifier {classifier.name!r} returned category ids {unknown} that are not "
            f"in its categories {sorted(classifier.categories)}"
        )
    records = found.to_coco()
    for rec, cid, score in zip(records, classes.category_ids, classes.scores, strict=True):
        rec.update(category_id=int(cid), class_score=float(score))
    return records


def semantic_map(found: AutoMasks, category_ids: Sequence[int]) -> np.ndarray:
    """(H, W) int64 category ids (0 background; ids must be >= 1), the smaller mask painted
    over the larger."""
    areas = found.masks.reshape(len(found), -1).sum(1)
    return semantic_label_map(found.masks, list(category_ids), -areas)


__all__ = [
    "Classes",
    "CropClassifier",
    "MaskClassifier",
    "classify_masks",
    "get_mask_classifier",
    "list_mask_classifiers",
    "register_mask_classifier",
    "semantic_map",
]
