"""One schema check per COCO record, before any of it reaches pycocotools.

pycocotools trusts its input: a string where a number belongs raises a TypeError deep inside
it, a NaN coordinate is silently rasterised to nothing, a polygon with huge coordinates or an
RLE whose counts do not add up to the image makes its C code write out of bounds (the process
dies with a segmentation fault). Every record is checked here first, so a bad file is one
:class:`~samtune.errors.DataError` naming the record and the field.

Each ``*_problem`` function returns None for a good record, or a short text saying which field
is wrong, what was expected and what was found. Pure Python and numpy: no torch, no
pycocotools.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

# Coordinates beyond this many pixels from the origin are refused: no image samtune can read is
# that large (PIL refuses images over ~179 M pixels), and pycocotools casts 5 x coordinate to a
# C int without a check.
MAX_COORDINATE = 100_000
# pycocotools walks a polygon's outline at 5x resolution and allocates four int arrays of that
# many points: bound it (10 M points, 160 MB) so that a pathological polygon cannot exhaust memory.
MAX_OUTLINE = 10_000_000
# An RLE's height x width: pycocotools indexes pixels with 32-bit unsigned integers.
MAX_PIXELS = 2**31 - 1
POLYGON_SCALE = 5  # pycocotools' upsampling factor (rleFrPoly)


def is_int(value: object) -> bool:
    """An integer, not a bool (JSON ``true`` is no id)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: object) -> bool:
    """A finite int or float, not a bool or a string."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return False
    return math.isfinite(float(value))


def show(value: object, limit: int = 40) -> str:
    """``value`` for a message: its type and a short repr."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def record_name(kind: str, record: object, position: int) -> str:
    """``annotation 12`` (by id when the id is an integer), else ``annotation #3 (id [1, 2])``."""
    rid = record.get("id") if isinstance(record, Mapping) else None
    if is_int(rid):
        return f"{kind} {rid}"
    return f"{kind} #{position} in the file" + (f" (id {rid!r})" if rid is not None else "")


# --------------------------------------------------------------------------- records


def image_problem(rec: Mapping) -> str | None:
    """Why an image record (a dict with ``id`` and ``file_name``) is malformed, or None."""
    if not is_int(rec["id"]):
        return f"field 'id' must be an integer, found {show(rec['id'])}"
    if not isinstance(rec["file_name"], str) or not rec["file_name"]:
        return f"field 'file_name' must be a non-empty string, found {show(rec['file_name'])}"
    for key in ("height", "width"):
        value = rec.get(key)
        if value is not None and not (is_number(value) and float(value).is_integer() and value > 0):
            return f"field {key!r} must be a positive integer, found {show(value)}"
    return None


def category_problem(cat: object) -> str | None:
    """Why a category record is malformed, or None."""
    if not isinstance(cat, Mapping) or "id" not in cat or "name" not in cat:
        return f"every category needs 'id' and 'name', found {show(cat, 60)}"
    if not is_int(cat["id"]):
        return (
            f"category {cat.get('name')!r}: field 'id' must be an integer, found {show(cat['id'])}"
        )
    if not isinstance(cat["name"], str):
        return f"category {cat['id']}: field 'name' must be a string, found {show(cat['name'])}"
    return None


def annotation_problem(ann: Mapping) -> tuple[str, str] | None:
    """(reason, detail) when an annotation's fields have the wrong type, else None.

    Checks ``id``, ``image_id``, ``category_id`` (integers), ``bbox`` (4 finite numbers),
    ``area`` (a finite number >= 0), ``iscrowd`` (0 or 1) and ``segmentation``. Whether the
    ids refer to known images and categories is the dataset's check, not this one.
    """
    for key in ("id", "image_id", "category_id"):
        if not is_int(ann[key]):
            return (
                "malformed annotation",
                f"field {key!r} must be an integer, found {show(ann[key])}",
            )
    bbox = ann.get("bbox")
    if bbox is not None and (
        not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(map(is_number, bbox))
    ):
        return (
            "malformed annotation",
            f"field 'bbox' must be 4 finite numbers [x, y, width, height], found {show(bbox)}",
        )
    area = ann.get("area")
    if area is not None and not (is_number(area) and area >= 0):
        return "malformed annotation", f"field 'area' must be a number >= 0, found {show(area)}"
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or not (is_int(crowd) or isinstance(crowd, bool)):
        return "malformed annotation", f"field 'iscrowd' must be 0 or 1, found {show(crowd)}"
    if "segmentation" not in ann:
        return "annotation without segmentation", "no field 'segmentation'"
    bad = segmentation_problem(ann["segmentation"])
    return ("malformed segmentation", f"field 'segmentation': {bad}") if bad else None


# --------------------------------------------------------------------------- segmentations


def segmentation_problem(seg: object) -> str | None:
    """Why ``seg`` is not a COCO segmentation pycocotools can safely decode, or None.

    A segmentation is a list of polygons (flat lists ``[x0, y0, x1, y1, ...]`` of at least 3
    points, finite numbers within :data:`MAX_COORDINATE`), or an RLE dict (``size`` [h, w],
    ``counts`` a list of run lengths or COCO's compressed string, adding up to h x w).
    """
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list"
        for k, poly in enumerate(seg):
            bad = polygon_problem(poly)
            if bad:
                return f"polygon {k}: {bad}"
        return None
    if isinstance(seg, Mapping):
        return rle_problem(seg)
    return f"expected a polygon list or an RLE dict, found {show(seg)}"


def polygon_problem(poly: object) -> str | None:
    """Why one polygon is malformed (see :func:`segmentation_problem`), or None."""
    if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
        return "a polygon must be a flat list of at least 3 x,y pairs"
    for j, value in enumerate(poly):
        if not is_number(value):
            what = "a non-finite number" if isinstance(value, float) else "not a number"
            return f"coordinate {j} is {what}: {show(value)}"
        if abs(value) > MAX_COORDINATE:
            return f"coordinate {j} is {value}, beyond {MAX_COORDINATE} pixels"
    outline = polygon_outline(poly)
    if outline > MAX_OUTLINE:
        return (
            f"its outline would take {outline} points to rasterise (at most {MAX_OUTLINE}); "
            "it is not a drawn outline"
        )
    return None


def polygon_outline(poly: list) -> int:
    """How many boundary points pycocotools allocates for this polygon (``rleFrPoly``)."""
    xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    pts = np.trunc(POLYGON_SCALE * xy + 0.5).astype(np.int64)  # C's (int) cast truncates
    steps = np.abs(pts - np.roll(pts, -1, axis=0)).max(axis=1) + 1
    return int(steps.sum())


def rle_problem(rle: Mapping) -> str | None:
    """Why an RLE dict is malformed (see :func:`segmentation_problem`), or None."""
    if "counts" not in rle or "size" not in rle:
        return "an RLE needs 'counts' and 'size'"
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(map(is_int, size)):
        return f"RLE 'size' must be [height, width], two integers; found {show(size)}"
    h, w = int(size[0]), int(size[1])
    if h < 0 or w < 0 or h * w > MAX_PIXELS:
        return f"RLE 'size' {[h, w]} is not an image size"
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(is_int(c) and c >= 0 for c in counts):
            return "RLE 'counts' must be run lengths: integers >= 0"
        total = sum(int(c) for c in counts)
    elif isinstance(counts, (str, bytes)):
        try:
            runs = rle_counts_from_string(counts)
        except ValueError as exc:
            return f"RLE 'counts' is not a COCO compressed RLE string: {exc}"
        total = sum(runs)
    else:
        return f"RLE 'counts' must be a list of run lengths or a string, found {show(counts)}"
    if total != h * w:
        return f"RLE 'counts' cover {total} pixels, but its 'size' {[h, w]} has {h * w}"
    return None


def rle_counts_from_string(text: str | bytes) -> list[int]:
    """Run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, checked).

    Raises:
        ValueError: a character outside COCO's alphabet ('0' to 'o'), a string that ends in
            the middle of a number, or a negative run length.
    """
    data = text.encode("latin-1") if isinstance(text, str) else bytes(text)
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError("the string ends in the middle of a run length")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {chr(data[p])!r} at {p} is not in its alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise ValueError(f"run {len(counts)} has a negative length ({x})")
        counts.append(x)
    return counts
