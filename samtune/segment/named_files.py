"""``samtune segment --text`` / ``--classes``: segment images by name and write the results.

Per image, one folder ``<output>/<stem>/`` written as a whole (:func:`samtune.io.atomic_dir`,
replacing only an earlier samtune result folder):

- ``<stem>.json``: ``image``, ``height``, ``width``, ``options`` (thresholds),
  ``categories`` (``[{"id", "name"}]``: the phrases) and ``annotations``, COCO results
  (``image_id`` 0, ``category_id``, ``segmentation`` compressed RLE, ``score`` = SAM 3's joint
  score, ``bbox`` XYWH of the mask, ``area``, ``text``);
- ``<stem>_labels.png``: the class map, 0 background and a category id where an instance of
  it lies (the higher score wins an overlap; 16-bit when an id exceeds 255);
- ``<stem>_overlay.png``: the instances in one colour per category, each named at its box.

Phrases: ``--text`` phrases are categories 1..T in the order given; ``--classes RECIPE`` takes a
dataset recipe's category names and ids (``samtune data list``), read from its annotations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.images import load_image
from ..errors import InputError
from ..io import atomic_dir, dump_json, output_lock
from .by_name import check_texts, check_thresholds, label_map, segment_by_name
from .overlay import draw_labels
from .overlay import overlay as blend
from .prompted import check_outputs, expand_images, load_for_inference, output_folders

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]  # fmt: skip


def dataset_phrases(name: str, root: str | os.PathLike | None = None) -> dict[int, str]:
    """``{category id: name}`` of a dataset recipe (its first split's annotations).

    Raises:
        UnknownNameError: an unknown recipe. MissingFileError: its data is not there (the
            message says how to get it).
    """
    from ..data import load_dataset
    from ..data.recipes import check_dataset, get_recipe

    split = get_recipe(name).splits[0]
    check_dataset(name, [split], root)
    categories = dict(load_dataset(name, split, root).categories)
    if not categories:
        raise InputError(f"dataset {name!r} names no categories; give the phrases with --text")
    return categories


def phrase_table(
    texts: Sequence[str] | None = None,
    classes: str | None = None,
    root: str | os.PathLike | None = None,
) -> dict[int, str]:
    """``{category id: phrase}``: ``texts`` numbered 1..T, or the recipe ``classes``'s names.

    Raises:
        InputError: both or neither given, or an empty phrase.
    """
    if texts and classes:
        raise InputError(
            "give the phrases with --text or with --classes RECIPE, not both; a recipe's "
            "names and your own do not share category ids"
        )
    if not texts and not classes:
        raise InputError(
            "segmenting by name needs --text PHRASE (repeat it: --text 'plastic bottle' "
            "--text can) or --classes RECIPE (a dataset's category names)"
        )
    if classes:
        return dataset_phrases(classes, root)
    for text in texts:
        if not text.strip():
            raise InputError(f"--text {text!r} is empty; give a phrase such as 'plastic bottle'")
    return {i + 1: text for i, text in enumerate(texts)}


def write_named_segmentation(
    model: torch.nn.Module,
    path: Path,
    target: Path,
    phrases: dict[int, str],
    *,
    score_threshold: float,
    mask_threshold: float,
    protect: Sequence[Path] = (),
) -> int:
    """Segment the image ``path`` by the ``phrases`` and write the folder ``target`` (layout:
    the module docstring). Returns the number of instances."""
    image = load_image(path)
    ids = list(phrases)
    found = segment_by_name(model, image, list(phrases.values()),
                            score_threshold=score_threshold, mask_threshold=mask_threshold)  # fmt: skip
    doc = {
        "image": str(path),
        "height": image.shape[0],
        "width": image.shape[1],
        "options": {"score_threshold": score_threshold, "mask_threshold": mask_threshold},
        "categories": [{"id": cid, "name": name} for cid, name in phrases.items()],
        "annotations": [f.to_coco(0, ids[f.category_id]) for f in found],
    }
    indices = label_map(found, image.shape[:2])  # phrase index + 1
    lookup = np.array([0, *ids], dtype=np.int64)
    labels = lookup[indices]
    with atomic_dir(target, overwrite=True, protect=protect) as tmp:
        (tmp / f"{path.stem}.json").write_text(dump_json(doc))
        dtype = np.uint8 if max(ids, default=0) < 256 else np.uint16
        Image.fromarray(labels.astype(dtype)).save(tmp / f"{path.stem}_labels.png")
        Image.fromarray(_overlay(image, found, ids)).save(tmp / f"{path.stem}_overlay.png")
    return len(found)


def _overlay(image: np.ndarray, found: Sequence, ids: list[int]) -> np.ndarray:
    """The instances blended in their category's colour, each named at its box's corner."""
    colour = {cid: _PALETTE[i % len(_PALETTE)] for i, cid in enumerate(ids)}
    out = image
    for f in found:
        out = blend(out, {colour[ids[f.category_id]]: f.mask})
    names = [
        (f"{f.text} {f.score:.2f}", (float(f.box[0]), float(f.box[1])), colour[ids[f.category_id]])
        for f in found
    ]
    return draw_labels(out, names)


def segment_files_by_name(
    model: str | torch.nn.Module,
    images: list[str | os.PathLike],
    output: str | os.PathLike,
    phrases: dict[int, str],
    *,
    adapter: str | None = None,
    device: str = "cpu",
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    on_image: Callable[[Path, Path, int], None] | None = None,
) -> list[Path]:
    """``samtune segment --text`` as a function: one result folder ``<output>/<stem>/`` per
    image. Images, output folders, thresholds, the device and the adapter are checked before
    the model loads, the phrases against the model (a text encoder, their length) before
    anything is written. ``on_image(image, folder, number of instances)`` after each.

    Returns:
        The folders written, in image order.
    """
    check_thresholds(score_threshold, mask_threshold)
    paths, output = expand_images(images), Path(output)
    targets = output_folders(paths, output)
    check_outputs(paths, targets, output, paths)
    for path in paths:
        load_image(path)  # decodes it all: a file that is not an image fails here
    sam = load_for_inference(model, adapter, device)
    check_texts(sam, list(phrases.values()))
    with output_lock(output, command="segment"):  # one command writes a folder at a time
        for path, target in zip(paths, targets, strict=True):
            n = write_named_segmentation(sam, path, target, phrases, protect=paths,
                                         score_threshold=score_threshold,
                                         mask_threshold=mask_threshold)  # fmt: skip
            if on_image is not None:
                on_image(path, target, n)
    return targets


__all__ = [
    "dataset_phrases",
    "phrase_table",
    "segment_files_by_name",
    "write_named_segmentation",
]
