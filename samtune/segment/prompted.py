"""Masks for given prompts on new images: the library side of ``samtune predict``.

Prompts are in original image pixels: boxes ``(N, 4)`` XYXY, points ``(N, K, 2)`` (x, y) with
labels ``(N, K)`` (1 positive, 0 negative). Each box (or each group of K points, or each
box + point group) is one prompt and gives one mask. The image is encoded once; masks are
returned at the original resolution (logits upsampled, padding removed, thresholded at 0).

Prompts are checked before the model runs (:func:`prepare_prompts`): boxes must have
``x0 < x1`` and ``y0 < y1`` and, like points, lie inside the image (``0 <= x <= width``,
``0 <= y <= height``); labels must be 1 or 0. A prompt that breaks a rule is an
:class:`~samtune.errors.InputError` naming the image, the prompt and the rule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike
from PIL import Image

from ..adapters import load_adapter, read_adapter
from ..data.images import load_image, read_image
from ..data.masks import encode_mask
from ..errors import InputError, MissingFileError
from ..io import atomic_dir, check_replaceable, dump_json, output_lock, read_json
from ..models.loading import load_model
from ..models.text import check_geometric_prompts
from .overlay import overlay as blend

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


@dataclass
class Prediction:
    """``masks`` ``(N, H, W)`` bool, ``scores`` ``(N,)`` float32 (the IoU head's estimate)."""

    masks: np.ndarray
    scores: np.ndarray

    def to_coco(self) -> list[dict]:
        """One dict per mask: ``segmentation`` (COCO RLE, counts as str), ``area``, ``bbox``
        (XYWH), ``score``; ``pycocotools.mask.decode`` restores the mask exactly."""
        from pycocotools import mask as mask_utils

        out = []
        for m, s in zip(self.masks, self.scores, strict=True):
            rle = encode_mask(m)
            bbox = mask_utils.toBbox(rle).tolist()
            out.append({"segmentation": rle, "area": int(m.sum()), "bbox": bbox, "score": float(s)})
        return out


def _is_number(x: Any) -> bool:
    """A real number: ``bool`` is not one, nor is the string ``"1"``."""
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(
        x, bool | np.bool_
    )


def _is_label(x: Any) -> bool:
    """A prompts file's label: the integer 1 or 0 (not ``true``, ``"1"`` or ``1.0``)."""
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _first_bad(x: Any, ok: Callable[[Any], bool], index: tuple[int, ...] = ()):
    """The index and value of the first leaf of a nested list/array for which ``ok`` is
    false, or ``None`` when there is none."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "iuf" and ok(x.dtype.type(0)):
        return None
    if isinstance(x, list | tuple | np.ndarray):
        for i, item in enumerate(x):
            found = _first_bad(item, ok, (*index, i))
            if found is not None:
                return found
        return None
    return None if ok(x) else (index, x)


def _require(x: Any, name: str, what: str, ok: Callable[[Any], bool] = _is_number) -> None:
    """Raise an :class:`InputError` naming the first entry of ``x`` that is not ``what``."""
    found = _first_bad(x, ok)
    if found is not None:
        index, value = found
        where = "".join(f"[{i}]" for i in index)
        raise InputError(
            f"{name} must be {what}; entry {where} is {value!r} ({type(value).__name__})"
        )


def _prompt_array(x: ArrayLike | None, last: int, name: str) -> np.ndarray | None:
    if x is None:
        return None
    _require(x, name, "numbers")
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers, found {x!r}") from None
    if arr.size == 0 or arr.shape[-1] != last:
        raise InputError(
            f"{name} must have shape (..., {last}), found {arr.shape}; e.g. "
            + ("[[x0, y0, x1, y1]]" if last == 4 else "[[[x, y]]] (prompts, points, 2)")
        )
    return arr


VALID_LABELS = (0, 1)
"""Point labels ``predict`` accepts: 1 (positive, on the object) and 0 (negative, background)."""


class Prompts(NamedTuple):
    """Checked prompts: ``boxes`` ``(N, 4)``, ``points`` ``(N, K, 2)`` float32 and ``labels``
    ``(N, K)`` int64 (each None when absent); ``n`` prompts."""

    boxes: np.ndarray | None
    points: np.ndarray | None
    labels: np.ndarray | None
    n: int


def _fmt(values: ArrayLike) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in np.ravel(values)) + "]"


def prepare_prompts(
    boxes: ArrayLike | None = None,
    points: ArrayLike | None = None,
    point_labels: ArrayLike | None = None,
    *,
    size: tuple[int, int] | None = None,
    image: str = "the image",
) -> Prompts:
    """Normalise and check one image's prompts, before anything runs.

    Args:
        boxes: ``(N, 4)`` XYXY boxes (or one flat box).
        points: ``(N, K, 2)`` or ``(N, 2)`` (x, y) points.
        point_labels: ``(N, K)`` (or ``(N,)``) labels, 1 or 0 (default: all 1).
        size: ``(height, width)`` of the image; when given, every box and point must lie in
            ``0 <= x <= width``, ``0 <= y <= height``.
        image: how messages name the image (its path, say).

    Returns:
        :class:`Prompts`.

    Raises:
        InputError: no prompt; wrong shapes; unequal box and point-group counts; a
            non-finite coordinate; an inverted or empty box (``x1 <= x0`` or ``y1 <= y0``);
            a box or point outside the image; a label other than 1 or 0. The message names
            the image and the prompt (by its index, which is also its mask's index).
    """
    boxes = _prompt_array(boxes, 4, "boxes")
    points = _prompt_array(points, 2, "points")
    if boxes is None and points is None:
        raise InputError(f"no prompt given for {image}: pass boxes and/or points")
    labels = None
    if points is not None:
        points = points.reshape(len(points), -1, 2) if points.ndim != 3 else points
        labels = _point_labels(point_labels, points, image)
    if boxes is not None:
        boxes = boxes.reshape(-1, 4)
    if boxes is not None and points is not None and len(boxes) != len(points):
        raise InputError(
            f"{image}: boxes and points pair up into prompts, so their counts must match: "
            f"{len(boxes)} boxes, {len(points)} point groups"
        )
    if boxes is not None:
        _check_boxes(boxes, size, image)
    if points is not None:
        _check_points(points, size, image)
    n = len(boxes) if boxes is not None else len(points)
    return Prompts(boxes, points, labels, n)


def _point_labels(point_labels: ArrayLike | None, points: np.ndarray, image: str) -> np.ndarray:
    """(N, K) int64 labels for (N, K, 2) points: all 1 by default, else checked to be 1 or 0."""
    if point_labels is None:
        return np.ones(points.shape[:2], np.int64)
    _require(point_labels, f"point labels for {image}", "numbers, 1 (positive) or 0 (negative)")
    try:
        raw = np.asarray(point_labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"point labels for {image} must be numbers, 1 (positive) or 0 (negative); "
            f"found {point_labels!r}"
        ) from None
    if raw.size != points.shape[0] * points.shape[1]:
        raise InputError(
            f"{image}: {raw.size} point label(s) for {points.shape[0] * points.shape[1]} "
            "point(s); give one label per point"
        )
    raw = raw.reshape(points.shape[:2])
    bad = ~np.isin(raw, VALID_LABELS)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise InputError(
            f"{image}, prompt {i}, point {_fmt(points[i, k])}: label {raw[i, k]:g} is not "
            "valid; point labels are 1 (positive) or 0 (negative)"
        )
    return raw.astype(np.int64)


def _check_boxes(boxes: np.ndarray, size: tuple[int, int] | None, image: str) -> None:
    for i, b in enumerate(boxes):
        what = f"{image}, prompt {i}, box {_fmt(b)} (x0, y0, x1, y1)"
        if not np.isfinite(b).all():
            raise InputError(f"{what}: coordinates must be finite numbers")
        if b[2] <= b[0] or b[3] <= b[1]:
            raise InputError(
                f"{what}: x1 <= x0 or y1 <= y0; a box runs from its top-left (x0, y0) to its "
                "bottom-right (x1, y1) corner"
            )
        _check_inside(b, size, f"{what} reaches", "boxes")


def _check_points(points: np.ndarray, size: tuple[int, int] | None, image: str) -> None:
    for i, group in enumerate(points):
        for pt in group:
            what = f"{image}, prompt {i}, point {_fmt(pt)} (x, y)"
            if not np.isfinite(pt).all():
                raise InputError(f"{what}: coordinates must be finite numbers")
            _check_inside(pt, size, f"{what} lies", "points")


def _check_inside(xy: np.ndarray, size: tuple[int, int] | None, what: str, noun: str) -> None:
    """InputError unless every (x, y) of ``xy`` (a point, or a box's corners) is in the image."""
    if size is None:
        return
    height, width = size
    if xy.min() < 0 or xy[0::2].max() > width or xy[1::2].max() > height:
        raise InputError(
            f"{what} outside the image, which is {width}x{height} (width x height): {noun} "
            f"must lie in 0 <= x <= {width}, 0 <= y <= {height}"
        )


def predict(
    model: torch.nn.Module,
    image: np.ndarray | PILImage | str | os.PathLike,
    *,
    boxes: ArrayLike | None = None,
    points: ArrayLike | None = None,
    point_labels: ArrayLike | None = None,
    multimask: bool = False,
    prompt_batch: int = 32,
) -> Prediction:
    """Segment ``image`` with SAM for each prompt.

    Args:
        model: a ``SamModel`` (with or without an adapter).
        image: HxWx3 uint8 RGB array, PIL image, or a path to an image file.
        boxes: ``(N, 4)`` XYXY boxes in original pixels.
        points: ``(N, K, 2)`` or ``(N, 2)`` (one point per prompt) (x, y) in original pixels.
        point_labels: ``(N, K)`` labels, 1 positive / 0 negative (default: all 1).
        multimask: ask SAM for 3 candidates per prompt and keep the one the IoU head rates
            best (useful for single ambiguous points); otherwise the single-mask output.
        prompt_batch: prompts per decoder call.

    Returns:
        :class:`Prediction` with one mask per prompt, in prompt order.

    Raises:
        InputError: no prompt, prompts with the wrong shape or unequal counts, or a prompt that
            breaks a rule of :func:`prepare_prompts` (outside the image, an inverted box, a
            label other than 1 or 0); an image that is not HxWx3 uint8 RGB.
        MissingFileError: an image path that does not exist.
        DataError: an image file that cannot be read.
    """
    from .predictor import Predictor  # it builds on this module's prompt checks

    image, name = read_image(image)
    prepare_prompts(boxes, points, point_labels, size=image.shape[:2], image=name)
    if not isinstance(prompt_batch, int) or prompt_batch < 1:
        raise InputError(f"prompt_batch must be a whole number >= 1, found {prompt_batch!r}")
    predictor = Predictor(model)
    predictor.set_image(image, name=name)
    result = predictor.predict(
        boxes, points, point_labels, multimask=multimask, prompt_batch=prompt_batch
    )
    return Prediction(result.masks, result.scores)


# --------------------------------------------------------------------------- prompt parsing

_NUM = r"\s*-?\d+(?:\.\d+)?\s*"


def parse_boxes(text: str) -> np.ndarray:
    """``"x0,y0,x1,y1;x0,y0,x1,y1"`` -> ``(N, 4)`` float32 (x1 > x0 and y1 > y0 required)."""
    items = [t for t in text.split(";") if t.strip()]
    if not items or not all(re.fullmatch(",".join([_NUM] * 4), t) for t in items):
        raise InputError(
            f"malformed --boxes {text!r}: expected 'x0,y0,x1,y1' boxes separated by ';', "
            "e.g. '10,20,110,140;5,5,50,60'"
        )
    arr = np.array([[float(v) for v in t.split(",")] for t in items], np.float32)
    bad = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
    if bad.any():
        raise InputError(
            f"box {items[int(np.argmax(bad))]!r} has x1 <= x0 or y1 <= y0; boxes are "
            "x0,y0,x1,y1 (top-left, bottom-right)"
        )
    return arr


def parse_points(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``"x,y;x,y"`` -> points ``(N, 1, 2)`` and labels ``(N, 1)``: one positive point per prompt.

    ``"x,y,0"`` makes a (lone) negative point; multi-point prompts come from a prompts file.
    """
    items = [t for t in text.split(";") if t.strip()]
    pattern = rf"{_NUM},{_NUM}(?:,\s*[01]\s*)?"
    if not items or not all(re.fullmatch(pattern, t) for t in items):
        raise InputError(
            f"malformed --points {text!r}: expected 'x,y' points separated by ';' "
            "(optionally 'x,y,label' with label 1 or 0), e.g. '64,80;30,12'"
        )
    vals = [[float(v) for v in t.split(",")] for t in items]
    points = np.array([[v[:2]] for v in vals], np.float32)
    labels = np.array([[int(v[2]) if len(v) == 3 else 1] for v in vals], np.int64)
    return points, labels


def read_prompts_file(path: str | os.PathLike) -> dict:
    """Read a JSON prompts file.

    Either one prompt set for every image::

        {"boxes": [[x0, y0, x1, y1], ...], "points": [[[x, y], ...], ...], "labels": [[1, ...], ...]}

    or one per image, keyed by file name (or path as given on the command line)::

        {"images": {"a.jpg": {"boxes": [...]}, "b.jpg": {"points": [...]}}}

    Returns:
        ``{"*": prompts}`` or ``{name: prompts}``, each prompts dict with numpy ``boxes``,
        ``points``, ``labels`` (absent keys are None).

    Raises:
        MissingFileError: the file does not exist. InputError: not JSON or the wrong layout.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"prompts file {str(path)!r} does not exist")
    data = read_json(path, what="prompts file")
    if not isinstance(data, dict):
        raise InputError(
            f"prompts file {str(path)!r} must hold a JSON object with 'boxes'/'points' or "
            f"'images', found {type(data).__name__}"
        )
    if "images" in data:
        if not isinstance(data["images"], dict):
            raise InputError(f"'images' in {str(path)!r} must map file names to prompts")
        return {str(k): _prompt_set(v, f"{path}:{k}") for k, v in data["images"].items()}
    return {"*": _prompt_set(data, str(path))}


def _prompt_set(d: Any, where: str) -> dict:
    if not isinstance(d, dict) or not ({"boxes", "points"} & set(d)):
        raise InputError(f"prompts in {where!r} need 'boxes' and/or 'points'")
    unknown = set(d) - {"boxes", "points", "labels"}
    if unknown:
        raise InputError(
            f"unknown keys {sorted(unknown)} in {where!r}; expected boxes, points, labels"
        )
    out = {
        "boxes": _prompt_array(d.get("boxes"), 4, f"boxes in {where}"),
        "points": _prompt_array(d.get("points"), 2, f"points in {where}"),
        "labels": None,
    }
    if d.get("labels") is not None:
        if out["points"] is None:
            raise InputError(f"'labels' without 'points' in {where!r}")
        _require(d["labels"], f"labels in {where}", "numbers, the integers 1 or 0", _is_label)
        try:
            out["labels"] = np.asarray(d["labels"], np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"'labels' in {where!r} must be numbers, 1 (positive) or 0 (negative); "
                f"found {d['labels']!r}"
            ) from None
        if out["labels"].size != out["points"].reshape(-1, 2).shape[0]:
            raise InputError(f"'labels' in {where!r} must give one label per point")
    return out


# --------------------------------------------------------------------------- files


def prompt_table(
    boxes: str | None = None,
    points: str | None = None,
    prompts_file: str | os.PathLike | None = None,
) -> dict:
    """The prompts of ``samtune predict`` as a table keyed by image (``"*"``: every image).

    ``boxes``/``points`` are the command-line texts (:func:`parse_boxes`, :func:`parse_points`);
    ``prompts_file`` a JSON file (:func:`read_prompts_file`), which excludes the other two.

    Raises:
        InputError: no prompts, or a file combined with ``boxes``/``points``.
    """
    given = [x is not None for x in (boxes, points, prompts_file)]
    if not any(given):
        raise InputError("no prompts: give --boxes, --points or --prompts FILE")
    if prompts_file is not None and any(given[:2]):
        raise InputError("--prompts FILE cannot be combined with --boxes/--points")
    if prompts_file is not None:
        return read_prompts_file(prompts_file)
    pts, lbl = parse_points(points) if points is not None else (None, None)
    box = parse_boxes(boxes) if boxes is not None else None
    return {"*": {"boxes": box, "points": pts, "labels": lbl}}


def _prompts_for(table: dict, path: Path) -> dict:
    for key in (str(path), path.name, "*"):
        if key in table:
            return table[key]
    raise InputError(
        f"the prompts file has no entry for {str(path)!r} (keys: {', '.join(sorted(table))}); "
        "key prompts by file name or path"
    )


def output_folders(images: list[Path], output: Path) -> list[Path]:
    """``<output>/<stem>`` per image; two images that would share one are refused."""
    seen: dict[str, Path] = {}
    for path in images:
        key = path.stem.casefold()  # a.png and A.jpg share a folder on case-blind disks too
        if key in seen:
            first = seen[key]
            if first == path or first.resolve() == path.resolve():
                raise InputError(f"image {str(path)!r} is given twice; give each image once")
            raise InputError(
                f"images {str(first)!r} and {str(path)!r} would both write their results to "
                f"{str(output / path.stem)!r} (outputs are named after the file name without "
                "its extension); rename one, or predict them into different --output folders"
            )
        seen[key] = path
    return [output / path.stem for path in images]


def check_outputs(
    images: list[Path], targets: list[Path], output: Path, protect: Iterable[Path] = ()
) -> None:
    """Refuse, before anything is written, to replace anything samtune did not write."""
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {str(output)!r} is a file; give a folder")
    for path, target in zip(images, targets, strict=True):
        if not (target.exists() or target.is_symlink()):
            continue
        if target.is_symlink() or not target.is_dir():
            raise InputError(
                f"refusing to write the results for {str(path)!r}: {str(target)!r} exists and "
                "samtune did not write it; move it away or choose another --output"
            )
        check_replaceable(target, protect, context=f"the results for {str(path)!r}",
                          advice="move those files away or choose another --output")  # fmt: skip


def check_device(device: str) -> torch.device:
    """``device`` as a ``torch.device`` that can run a model on this machine.

    Raises:
        InputError: not a device name, ``meta``, or a GPU this machine does not have
            (:func:`samtune.train.config.check_device`, the one device check).
    """
    from ..options import check_device as check

    return check("--device", device)


def load_for_inference(
    model: str | torch.nn.Module, adapter: str | None = None, device: str = "cpu"
) -> torch.nn.Module:
    """The model of ``samtune predict``/``segment``: ``model`` (a source for
    :func:`samtune.load_model`, or a loaded model) with ``adapter`` applied, on ``device``.

    The device and the adapter's file are checked before the model loads.
    """
    dev = check_device(device)
    if adapter is not None:  # a missing or broken adapter fails before the model loads
        read_adapter(adapter)
    sam = load_model(model) if isinstance(model, str) else model
    if adapter is not None:
        sam = load_adapter(sam, adapter)
    return sam.to(dev)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""What a folder of images is searched for (case-insensitive)."""


def expand_images(items: list[str | os.PathLike]) -> list[Path]:
    """The image files named, a folder standing for its images (sorted, not recursive).

    Raises:
        MissingFileError: a path that does not exist. InputError: a folder without images.
    """
    out: list[Path] = []
    for item in map(Path, items):
        if not item.exists():
            raise MissingFileError(f"image {str(item)!r} does not exist")
        if not item.is_dir():
            out.append(item)
            continue
        found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InputError(
                f"folder {str(item)!r} holds no images (looked for "
                f"{', '.join(IMAGE_SUFFIXES)}); give image files or a folder of them"
            )
        out += found
    return out


_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def write_prediction(
    model: torch.nn.Module,
    path: Path,
    image: np.ndarray,
    prompts: Prompts,
    target: Path,
    *,
    overlay: bool = False,
    multimask: bool = False,
    protect: Iterable[Path] = (),
) -> int:
    """Predict, then write the folder ``target`` with ``<stem>_mask<i>.png``, ``<stem>.json``
    (and the overlay) as a whole: it replaces an earlier samtune result folder there (so no
    stale mask survives a rerun with fewer prompts) and never a folder samtune did not write.

    ``prompts`` come from :func:`prepare_prompts`. Returns the number of masks written.
    """
    pred = predict(model, image, boxes=prompts.boxes, points=prompts.points,
                   point_labels=prompts.labels, multimask=multimask)  # fmt: skip
    stem = path.stem
    records = pred.to_coco()
    for i, rec in enumerate(records):
        rec["prompt"] = {
            k: getattr(prompts, k)[i].tolist()
            for k in ("boxes", "points", "labels")
            if getattr(prompts, k) is not None
        }
    doc = {"image": str(path), "height": image.shape[0], "width": image.shape[1], "masks": records}
    with atomic_dir(target, overwrite=True, protect=protect) as tmp:
        for i, mask in enumerate(pred.masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / f"{stem}_mask{i}.png")
        (tmp / f"{stem}.json").write_text(dump_json(doc))
        if overlay:
            out = image
            for i, m in enumerate(pred.masks):
                out = blend(out, {_PALETTE[i % len(_PALETTE)]: m})
            Image.fromarray(out).save(tmp / f"{stem}_overlay.png")
    return len(records)


def predict_files(
    model: str | torch.nn.Module,
    images: list[str | os.PathLike],
    table: dict,
    output: str | os.PathLike,
    *,
    adapter: str | None = None,
    overlay: bool = False,
    multimask: bool = False,
    device: str = "cpu",
    protect: Iterable[Path] = (),
    on_image: Callable[[Path, Path, int], None] | None = None,
) -> list[Path]:
    """``samtune predict`` as a function: one result folder ``<output>/<stem>/`` per image.

    Every image, prompt, output folder, the device and the adapter are checked before the
    model loads and before anything is written, so a bad prompt of the last image leaves no
    results of the first images behind.

    Args:
        model: a source for :func:`samtune.load_model`, or a loaded model.
        images: image files.
        table: prompts per image (:func:`prompt_table`).
        output: the folder that receives one folder per image.
        adapter: an adapter folder or hub id to apply to ``model``.
        protect: paths no output may replace (the command's inputs; the images always are).
        on_image: called with ``(image, folder, number of masks)`` after each image.

    Returns:
        The folders written, in image order.
    """
    images, output = [Path(p) for p in images], Path(output)
    protect = [*images, *protect]
    targets = output_folders(images, output)
    check_outputs(images, targets, output, protect)
    jobs = []
    for path in images:
        size = load_image(path).shape[:2]  # decodes it all: corrupt files fail here
        p = _prompts_for(table, path)
        checked = prepare_prompts(p["boxes"], p["points"], p["labels"], size=size,
                                  image=f"image {str(path)!r}")  # fmt: skip
        jobs.append((path, checked))
    sam = load_for_inference(model, adapter, device)
    check_geometric_prompts(sam, "samtune predict")
    with output_lock(output, command="predict"):  # one command writes a folder at a time
        for (path, prompts), target in zip(jobs, targets, strict=True):
            image = load_image(path)  # read again, so that a long list never sits in memory
            n = write_prediction(sam, path, image, prompts, target, overlay=overlay,
                                 multimask=multimask, protect=protect)  # fmt: skip
            if on_image is not None:
                on_image(path, target, n)
    return targets


__all__ = [
    "VALID_LABELS",
    "Prediction",
    "Prompts",
    "check_device",
    "check_outputs",
    "expand_images",
    "load_for_inference",
    "output_folders",
    "parse_boxes",
    "parse_points",
    "predict",
    "predict_files",
    "prepare_prompts",
    "prompt_table",
    "read_prompts_file",
    "write_prediction",
]
