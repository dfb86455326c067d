"""Annotation tools' exports read back as training data: CVAT and LabelMe / X-AnyLabeling.

``load_dataset("cvat:PATH")``, ``"cvat-xml:PATH"``, ``"cvat-coco:PATH"``, ``"labelme:DIR"``
and ``"x-anylabeling:DIR"`` come here (:data:`READERS`, prefix -> reader). Each reader turns
the export into a COCO instances dict in memory (:class:`ToolExport`) and the dataset is
samtune's own :class:`~samtune.data.coco.InstanceDataset` built on it, so every record passes
the same schema checks, and a polygon is rasterised by pycocotools exactly as it would be from
a COCO file, whichever tool drew it.

Formats read:

* CVAT "COCO 1.0" (``annotations/instances_<subset>.json``, images in ``images/<subset>/`` or
  ``images/``): the COCO reader as it is, plus CVAT's flavour: every mask CVAT exports is an
  uncompressed RLE marked ``iscrowd: 1`` (Datumaro marks any RLE instance so, and drops the
  ``is_crowd`` attribute that would tell a real crowd region apart), so these are read as
  ordinary instances unless ``keep_crowd=True``; the ``attributes`` field is ignored; a
  box-only annotation (empty ``segmentation``) follows ``boxes``.
* CVAT "CVAT for images 1.1" (``annotations.xml``, images in ``images/``, or
  ``images/<subset>/`` for a project's export, whose ``<image>`` has a ``subset``): per ``<image
  name width height>``, ``<polygon points="x,y;x,y;...">``, ``<mask rle="n0, n1, ..." left top
  width height>`` (CVAT's own RLE: run lengths over the ``width`` x ``height`` box, row-major,
  starting with a run of background, as cvat-core's ``mask2Rle`` writes it), ``<box xtl ytl
  xbr ybr [rotation]>`` and ``<ellipse cx cy rx ry [rotation]>``. Shapes that share a
  ``group_id`` are one instance (as CVAT's COCO export groups them). ``occluded`` and
  ``z_order`` are ignored (each instance keeps its whole mask); ``<polyline>``, ``<points>``,
  ``<skeleton>``, ``<cuboid>`` and ``<tag>`` are not regions and are skipped, counted in one
  warning. Categories: the ``<labels>`` declared in ``<meta>``, in their order.
* LabelMe JSON, one per image (what X-AnyLabeling writes too): ``shapes`` of ``shape_type``
  ``polygon``, ``rectangle`` (2 corner points, or X-AnyLabeling's 4), ``rotation`` /
  ``oriented_rectangle`` (4 points), ``circle`` (centre and a point on the circle; a polygon
  of the vertices ``labelme2coco`` uses) and ``mask`` (a base64 PNG of the box given by its 2
  points, inclusive, labelme >= 5.5); shapes with the same ``label`` and ``group_id`` are one
  instance, as in labelme's ``shapes_to_label``; points and lines are skipped and counted.
  ``imagePath`` is relative to the JSON file; ``imageData`` (base64 of the image file) is used
  only when that file is missing: its bytes are written once to samtune's cache
  (``$SAMTUNE_DATA/embedded-images/<sha256><ext>``) and read from there by samtune's one image
  reader, with its size limits.

Boxes alone carry no mask for SAM to learn: by default (``boxes="skip"``) they are left out
with one warning that counts them; ``boxes="mask"`` reads each as a filled rectangle.

Categories: the export's declared ones, else the label names sorted; ``classes=[...]`` fixes
the order (ids 1..K); a label outside it is a :class:`~samtune.errors.DataError`.

Splits: an export is one set of images: ``all`` is every image; ``train``, ``val`` and
``test`` are a seeded split by image (80/10/10 of the images sorted by file name and shuffled
with ``split_seed``; val and test hold at least one image each once there are 3), so that
``samtune fit --dataset cvat:EXPORT`` trains, selects and tests on different images.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import posixpath
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, MissingFileError, SamtuneWarning, quote_untrusted
from ..io import DATA_FILE_LIMIT, atomic_write, join_inside, read_text
from .coco import InstanceDataset, read_annotations, read_coco_json
from .masks import encode_mask

# A shape may reach this fraction of the image's side past its edge (tools round outwards and
# let a vertex be dragged a little past the border); further out it belongs to another image.
OUTSIDE_TOLERANCE = 0.05
SPLITS = ("train", "val", "test", "all")
BOX_MODES = ("skip", "mask")
# load_dataset options these readers take (besides InstanceDataset's)
TOOL_OPTIONS = ("images", "classes", "boxes", "keep_crowd", "split_seed")


@dataclass
class ToolExport:
    """An export as COCO: ``coco`` (``images`` with ``id``, ``file_name``, ``width``,
    ``height``; ``annotations`` with ``id``, ``image_id``, ``category_id``, ``segmentation``
    (polygons, or a compressed RLE dict), ``bbox`` [x, y, w, h], ``iscrowd``; ``categories``),
    the folder ``images`` the file names are relative to, and what was ``skipped`` by kind."""

    coco: dict
    images: Path
    skipped: Counter = field(default_factory=Counter)
    elsewhere: dict[str, Path] = field(default_factory=dict)  # file_name -> file outside images


Reader = Callable[[Path, "Path | None", dict], ToolExport]


# --------------------------------------------------------------------------- building COCO


@dataclass
class _Shape:
    """One drawn shape: ``polygons`` (flat x,y lists) or ``mask`` (HxW bool), and its label."""

    label: str
    polygons: list[list[float]] = field(default_factory=list)
    mask: np.ndarray | None = None


class _Builder:
    """Collects images and instances (each encoded as it comes: a full-image mask is not kept
    longer than one instance), then writes the COCO dict with the categories fixed."""

    def __init__(self, where: str, boxes: str) -> None:
        self.where, self.boxes = where, boxes
        self.images: list[dict] = []
        self.instances: list[dict] = []
        self.labels: list[str] = []  # every shape's label, for the category check
        self.skipped: Counter = Counter()

    def add_image(self, file_name: str, width: int, height: int) -> int:
        _check_size(width, height, f"{self.where}: image {quote_untrusted(file_name)}")
        image_id = len(self.images) + 1
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        return image_id

    def add_instance(self, image_id: int, shapes: list[_Shape]) -> None:
        """One instance of image ``image_id`` made of ``shapes`` (its label: the first's)."""
        if not shapes:
            return
        rec = self.images[image_id - 1]
        self.labels += [s.label for s in shapes]
        self.instances.append({
            "image_id": image_id,
            "label": shapes[0].label,
            "segmentation": _merge(shapes, rec["height"], rec["width"]),
            "bbox": _bbox(shapes),
            "iscrowd": 0,
        })  # fmt: skip

    def coco(self, declared: list[str] | None, classes: list[str] | None) -> dict:
        names = _category_names(self.labels, declared, classes, self.where)
        ids = {name: i + 1 for i, name in enumerate(names)}
        annotations = [
            {"id": k + 1, "category_id": ids[inst["label"]],
             **{key: v for key, v in inst.items() if key != "label"}}
            for k, inst in enumerate(self.instances)
        ]  # fmt: skip
        categories = [{"id": i, "name": n} for n, i in ids.items()]
        return {"images": self.images, "annotations": annotations, "categories": categories}


def _check_size(width: int, height: int, what: str) -> None:
    """Refuse a declared image size no image samtune reads can have (twice Pillow's
    decompression-bomb limit, as :func:`~samtune.data.coco.load_image`), before any mask of
    that size is allocated."""
    from PIL import Image

    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if limit and width * height > limit:
        raise DataError(
            f"{what} declares {width}x{height} (WxH) pixels, more than the {limit} samtune reads "
            "(twice PIL.Image.MAX_IMAGE_PIXELS); the size is wrong: fix it in the export"
        )


def _category_names(
    used: list[str], declared: list[str] | None, classes: list[str] | None, where: str
) -> list[str]:
    """Category names in id order: ``classes``, else the export's declared labels, else the
    labels used, sorted. A used label outside that list is a DataError."""
    names = list(classes) if classes is not None else declared
    if names is None:
        return sorted(set(used))
    known = set(names)
    unknown = sorted({u for u in used if u not in known})
    if unknown:
        source = "classes" if classes is not None else "the labels the export declares"
        raise DataError(
            f"{where}: label(s) {', '.join(quote_untrusted(u) for u in unknown[:5])} are not "
            f"in {source} ({', '.join(quote_untrusted(n) for n in names[:10]) or 'none'}); "
            "add them to classes, or fix the labels in the tool and export again"
        )
    return names


def _merge(shapes: list[_Shape], height: int, width: int) -> list | dict:
    """The COCO segmentation of one instance: its polygons, or one RLE when a mask is in it."""
    if all(s.mask is None for s in shapes):
        return [p for s in shapes for p in s.polygons]
    from pycocotools import mask as mask_utils

    union = np.zeros((height, width), dtype=bool)
    for s in shapes:
        if s.mask is not None:
            union |= s.mask
        elif s.polygons:
            rle = mask_utils.merge(mask_utils.frPyObjects(s.polygons, height, width))
            union |= mask_utils.decode(rle).astype(bool)
    return encode_mask(union)


def _bbox(shapes: list[_Shape]) -> list[float]:
    """[x, y, w, h] around the shapes (polygon vertices; mask pixels as unit squares)."""
    xs: list[float] = []
    ys: list[float] = []
    for s in shapes:
        for p in s.polygons:
            xs += p[0::2]
            ys += p[1::2]
        if s.mask is not None and s.mask.any():
            rows, cols = np.nonzero(s.mask)
            xs += [float(cols.min()), float(cols.max() + 1)]
            ys += [float(rows.min()), float(rows.max() + 1)]
    if not xs:
        return [0.0, 0.0, 0.0, 0.0]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _check_polygon(points: list[float], width: int, height: int, what: str) -> list[float]:
    """``points`` (flat x,y list) as floats, checked: at least 3 vertices, finite, not far
    outside the ``width`` x ``height`` image (:data:`OUTSIDE_TOLERANCE`)."""
    if len(points) < 6 or len(points) % 2:
        raise DataError(
            f"{what} has {len(points) // 2} point(s); a polygon needs at least 3: delete it in "
            "the tool or draw it again"
        )
    if not all(math.isfinite(v) for v in points):
        raise DataError(f"{what} has a coordinate that is not a finite number")
    _check_inside(min(points[0::2]), min(points[1::2]), width, height, what)
    _check_inside(max(points[0::2]), max(points[1::2]), width, height, what)
    return points


def _check_inside(x: float, y: float, width: int, height: int, what: str) -> None:
    tol_x, tol_y = OUTSIDE_TOLERANCE * width, OUTSIDE_TOLERANCE * height
    if not (-tol_x <= x <= width + tol_x and -tol_y <= y <= height + tol_y):
        raise DataError(
            f"{what} reaches ({x:g}, {y:g}), far outside its {width}x{height} (WxH) image; the "
            "annotation does not belong to this image: fix it in the tool and export again"
        )


def _box_shape(label: str, x0: float, y0: float, x1: float, y1: float) -> _Shape:
    """A filled rectangle (``boxes="mask"``): its corners as a polygon."""
    return _Shape(label, polygons=[[x0, y0, x1, y0, x1, y1, x0, y1]])


def _rotated(points: list[float], cx: float, cy: float, degrees: float) -> list[float]:
    """``points`` (flat) turned by ``degrees`` clockwise on screen about (cx, cy), as CVAT
    turns a box or an ellipse by its ``rotation``."""
    if not degrees:
        return points
    a = math.radians(degrees)
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2) - (cx, cy)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (xy @ rot.T + (cx, cy)).ravel().tolist()


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    """An ellipse as a polygon of ``max(12, pi / arccos(1 - 1/r))`` vertices, the count
    labelme2coco uses for circles: no vertex gap wider than one pixel."""
    r = max(rx, ry, 1.0)
    n = max(int(np.pi / np.arccos(1 - 1 / r)) if r > 1 else 12, 12)
    i = np.arange(n)
    x = cx + rx * np.sin(2 * np.pi / n * i)
    y = cy + ry * np.cos(2 * np.pi / n * i)
    return np.stack((x, y), axis=1).ravel().tolist()


# --------------------------------------------------------------------------- CVAT XML


_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml(text: str, where: str):
    """``text`` parsed with :mod:`xml.etree.ElementTree`, refusing any ``<!DOCTYPE`` or
    ``<!ENTITY`` declaration first.

    defusedxml is not a samtune dependency; what it guards against (entity expansion bombs,
    external entities and DTDs) all needs a DOCTYPE, which CVAT never writes, so a file that
    has one is refused whole and nothing in it is expanded or fetched.
    """
    import xml.etree.ElementTree as ET

    if _DECLARATION.search(text):
        raise DataError(
            f"{where} has a DOCTYPE or ENTITY declaration; CVAT never writes one and samtune "
            "does not expand them: export the annotations from CVAT again"
        )
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise DataError(
            f"{where} is not well-formed XML ({exc}); the file is truncated or corrupt: export "
            "it from CVAT again"
        ) from None


def read_cvat_xml(path: Path, images: Path | None, options: dict) -> ToolExport:
    """A CVAT "CVAT for images 1.1" ``annotations.xml`` (see the module docstring)."""
    if path.is_dir():
        path = path / "annotations.xml"
    where = f"CVAT XML {str(path)!r}"
    root = parse_xml(
        read_text(path, what="CVAT XML", limit=DATA_FILE_LIMIT, error=DataError), where
    )
    if root.tag != "annotations":
        raise DataError(f"{where}: the root element is <{root.tag}>, not <annotations>")
    if root.find("track") is not None:
        raise DataError(
            f"{where} holds <track> elements: it is a 'CVAT for video' export; export the task "
            "as 'CVAT for images 1.1'"
        )
    builder = _Builder(where, options["boxes"])
    for pos, element in enumerate(root.findall("image")):
        _cvat_image(builder, element, pos)
    declared = _cvat_labels(root)
    return ToolExport(
        builder.coco(declared, options["classes"]),
        images if images is not None else path.parent / "images",
        builder.skipped,
    )


def _cvat_labels(root) -> list[str] | None:
    """Label names declared in ``<meta>`` (task, project or job), in order; None if none."""
    meta = root.find("meta")
    labels = None if meta is None else next(meta.iter("labels"), None)
    if labels is None:
        return None
    # a skeleton's points are labels with a <parent>: not categories of their own
    return [
        str(lab.findtext("name", ""))
        for lab in labels.findall("label")
        if not (lab.findtext("parent") or "").strip()
    ]


def _int_attr(element, name: str, what: str) -> int:
    value = element.get(name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{what}: attribute {name!r} must be an integer, found {value!r}") from None


def _float_attr(element, name: str, what: str) -> float:
    value = element.get(name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{what}: attribute {name!r} must be a number, found {value!r}") from None
    if not math.isfinite(number):
        raise DataError(f"{what}: attribute {name!r} is not finite ({value!r})")
    return number


def _cvat_image(builder: _Builder, element, pos: int) -> None:
    """One ``<image>``: its record and its shapes (grouped by ``group_id``)."""
    name = element.get("name")
    what = f"{builder.where}: <image> #{pos} ({quote_untrusted(name)})"
    if not name:
        raise DataError(f"{builder.where}: <image> #{pos} has no 'name'")
    width = _int_attr(element, "width", what)
    height = _int_attr(element, "height", what)
    if width <= 0 or height <= 0:
        raise DataError(f"{what}: width and height must be positive, found {width}x{height}")
    subset = element.get("subset")  # a project export: its images are in images/<subset>/
    image_id = builder.add_image(f"{subset}/{name}" if subset else name, width, height)
    groups: dict[str, list[_Shape]] = {}
    for k, child in enumerate(element):
        shape = _cvat_shape(builder, child, width, height, f"{what}, <{child.tag}> #{k}")
        if shape is not None:
            group = child.get("group_id", "0")
            groups.setdefault(f"g{group}" if group != "0" else f"s{k}", []).append(shape)
    for shapes in groups.values():
        builder.add_instance(image_id, shapes)


def _cvat_shape(builder: _Builder, el, width: int, height: int, what: str) -> _Shape | None:
    """One shape element as a :class:`_Shape` (None: not a region, counted as skipped)."""
    label = el.get("label")
    if el.tag in ("polygon", "mask", "box", "ellipse") and not label:
        raise DataError(f"{what} has no 'label'")
    if el.tag == "polygon":
        points = _cvat_points(el.get("points"), what)
        return _Shape(label, polygons=[_check_polygon(points, width, height, what)])
    if el.tag == "mask":
        return _Shape(label, mask=_cvat_mask(el, width, height, what))
    if el.tag == "box":
        return _cvat_box(builder, el, label, width, height, what)
    if el.tag == "ellipse":
        cx, cy, rx, ry = (_float_attr(el, k, what) for k in ("cx", "cy", "rx", "ry"))
        points = _rotated(
            _ellipse(cx, cy, abs(rx), abs(ry)), cx, cy, _float_attr_or(el, "rotation", 0.0, what)
        )
        return _Shape(label, polygons=[_check_polygon(points, width, height, what)])
    builder.skipped[f"<{el.tag}> (not a region)"] += 1
    return None


def _cvat_box(builder: _Builder, el, label: str, width: int, height: int, what: str):
    x0, y0, x1, y1 = (_float_attr(el, k, what) for k in ("xtl", "ytl", "xbr", "ybr"))
    _check_inside(x0, y0, width, height, what)
    _check_inside(x1, y1, width, height, what)
    if builder.boxes == "skip":
        builder.skipped["box (no mask; boxes='mask' reads it as a rectangle)"] += 1
        return None
    box = _box_shape(label, x0, y0, x1, y1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box.polygons = [_rotated(box.polygons[0], cx, cy, _float_attr_or(el, "rotation", 0.0, what))]
    return box


def _float_attr_or(el, name: str, default: float, what: str) -> float:
    return default if el.get(name) is None else _float_attr(el, name, what)


def _cvat_points(text: str | None, what: str) -> list[float]:
    """CVAT's ``points="x0,y0;x1,y1;..."`` as a flat list of floats."""
    try:
        flat = [float(v) for pair in (text or "").split(";") for v in pair.split(",")]
    except ValueError:
        raise DataError(
            f"{what}: 'points' must be 'x,y;x,y;...' numbers, found {quote_untrusted(text)}"
        ) from None
    if len(flat) % 2:
        raise DataError(f"{what}: 'points' has an odd number of coordinates")
    return flat


def decode_cvat_rle(counts: list[int], width: int, height: int) -> np.ndarray:
    """CVAT's mask RLE as a ``height`` x ``width`` bool array: run lengths alternating
    background and foreground, starting with background (a leading 0 when the first pixel is
    set), over the box row by row. ``counts`` must add up to ``width * height``."""
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(height, width)


def _cvat_mask(el, width: int, height: int, what: str) -> np.ndarray:
    """A ``<mask rle left top width height>`` as a full-image bool mask."""
    left, top = _int_attr(el, "left", what), _int_attr(el, "top", what)
    w, h = _int_attr(el, "width", what), _int_attr(el, "height", what)
    try:
        counts = [int(v) for v in (el.get("rle") or "").split(",")]
    except ValueError:
        raise DataError(f"{what}: 'rle' must be comma-separated run lengths") from None
    if w <= 0 or h <= 0 or left < 0 or top < 0 or left + w > width or top + h > height:
        raise DataError(
            f"{what}: its box (left {left}, top {top}, {w}x{h}) is not inside the "
            f"{width}x{height} image"
        )
    if any(c < 0 for c in counts) or sum(counts) != w * h:
        raise DataError(
            f"{what}: its RLE covers {sum(counts)} pixels but its box is {w}x{h} = {w * h}; "
            "the mask is corrupt: export it from CVAT again"
        )
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + h, left : left + w] = decode_cvat_rle(counts, w, h)
    return mask


# --------------------------------------------------------------------------- CVAT COCO


def read_cvat_coco(path: Path, images: Path | None, options: dict) -> ToolExport:
    """A CVAT "COCO 1.0" instances file, read by samtune's COCO reader after CVAT's flavour
    is undone (see the module docstring)."""
    if path.is_dir():
        path = _find_cvat_file(path)
    data = read_coco_json(path)
    skipped: Counter = Counter()
    annotations = []
    for ann in data.get("annotations", []):
        ann = _cvat_coco_annotation(ann, options, skipped)
        if ann is not None:
            annotations.append(ann)
    coco = {**data, "annotations": annotations}
    if options["classes"] is not None:
        coco = _reorder_categories(coco, options["classes"], f"COCO file {str(path)!r}")
    return ToolExport(
        coco, images if images is not None else _cvat_coco_images(path, data), skipped
    )


def _cvat_coco_annotation(ann: object, options: dict, skipped: Counter) -> object:
    """``ann`` as samtune reads it: CVAT's crowd flag on masks undone, a box-only annotation
    skipped or made a rectangle. Anything malformed is passed on for the COCO checks."""
    if not isinstance(ann, dict):
        return ann
    seg = ann.get("segmentation")
    if seg == [] and isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4:
        if options["boxes"] == "skip":
            skipped["box (no mask; boxes='mask' reads it as a rectangle)"] += 1
            return None
        x, y, w, h = ann["bbox"]
        return {**ann, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
    if isinstance(seg, dict) and ann.get("iscrowd") == 1 and not options["keep_crowd"]:
        return {**ann, "iscrowd": 0}
    return ann


def _reorder_categories(coco: dict, classes: list[str], where: str) -> dict:
    """``coco`` with category ids 1..K in the order of ``classes`` (names)."""
    by_id = {c.get("id"): c.get("name") for c in coco.get("categories", []) if isinstance(c, dict)}
    used = [by_id.get(a.get("category_id")) for a in coco["annotations"] if isinstance(a, dict)]
    names = _category_names([u for u in used if u is not None], None, classes, where)
    new = {name: i + 1 for i, name in enumerate(names)}
    annotations = [
        {**a, "category_id": new[by_id[a["category_id"]]]}
        if isinstance(a, dict) and by_id.get(a.get("category_id")) in new
        else a
        for a in coco["annotations"]
    ]
    categories = [{"id": i, "name": n} for n, i in new.items()]
    return {**coco, "annotations": annotations, "categories": categories}


def _cvat_coco_images(path: Path, data: dict) -> Path:
    """The image folder of CVAT's COCO zip layout: ``images/<subset>/`` (subset from
    ``instances_<subset>.json``) or ``images/`` beside ``annotations/``, whichever holds the
    first image; else the annotation file's own folder."""
    base = path.parent.parent if path.parent.name == "annotations" else path.parent
    subset = path.stem.removeprefix("instances_")
    candidates = [base / "images" / subset, base / "images", path.parent]
    first = next((r.get("file_name") for r in data["images"] if isinstance(r, dict)), None)
    for folder in candidates:
        if isinstance(first, str) and folder.is_dir():
            try:
                if join_inside(folder, first, links_may_leave=True).is_file():
                    return folder
            except DataError:
                break  # a bad file name: the dataset's checks name it
    return next((f for f in candidates if f.is_dir()), candidates[-1])


def read_cvat(path: Path, images: Path | None, options: dict) -> ToolExport:
    """``cvat:PATH``: an ``.xml`` file (CVAT for images), a ``.json`` file (COCO 1.0), or an
    unzipped export folder holding ``annotations.xml`` or one ``annotations/instances_*.json``."""
    if path.is_dir():
        path = _find_cvat_file(path)
    if path.suffix.lower() == ".xml":
        return read_cvat_xml(path, images, options)
    return read_cvat_coco(path, images, options)


def _find_cvat_file(folder: Path) -> Path:
    if (folder / "annotations.xml").is_file():
        return folder / "annotations.xml"
    found = sorted((folder / "annotations").glob("instances_*.json"))
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(
            f"CVAT export {str(folder)!r} holds {len(found)} COCO files "
            f"({', '.join(p.name for p in found)}); name one: cvat:{found[0]}"
        )
    raise MissingFileError(
        f"CVAT export {str(folder)!r} holds neither annotations.xml ('CVAT for images 1.1') nor "
        "annotations/instances_*.json ('COCO 1.0'); unzip the export there, or name the file"
    )


# --------------------------------------------------------------------------- LabelMe


LABELME_REGIONS = ("polygon", "rectangle", "rotation", "oriented_rectangle", "circle", "mask")
LABELME_BOXES = ("rectangle", "rotation", "oriented_rectangle")


def read_labelme(path: Path, images: Path | None, options: dict) -> ToolExport:
    """``labelme:DIR`` (every ``*.json`` below it, sorted) or ``labelme:FILE.json``.

    A JSON object without ``shapes`` (a tool's own settings file) is skipped and counted.
    """
    folder = path if path.is_dir() else path.parent
    files = sorted(p for p in folder.rglob("*.json") if not _hidden(p, folder))
    files = files if path.is_dir() else [path]
    if not files:
        raise MissingFileError(f"no LabelMe *.json files in {str(folder)!r}")
    builder = _Builder(f"LabelMe {str(path)!r}", options["boxes"])
    cache: dict[str, Path] = {}
    for file in files:
        _labelme_file(builder, file, folder, images, cache)
    root = images if images is not None else folder
    return ToolExport(builder.coco(None, options["classes"]), root, builder.skipped, cache)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _labelme_file(
    builder: _Builder, file: Path, folder: Path, images: Path | None, cache: dict
) -> None:
    """One LabelMe JSON: its image record and its shapes (grouped by label and group_id)."""
    data = read_annotations(file, "LabelMe file")
    where = f"LabelMe file {str(file)!r}"
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        builder.skipped["JSON file without 'shapes'"] += 1
        return
    width, height = data.get("imageWidth"), data.get("imageHeight")
    if not (_positive_int(width) and _positive_int(height)):
        raise DataError(
            f"{where}: 'imageWidth' and 'imageHeight' must be positive integers, found "
            f"{quote_untrusted(width)} and {quote_untrusted(height)}"
        )
    name = _labelme_image_name(data, file, folder, images, where, cache)
    image_id = builder.add_image(name, width, height)
    groups: dict[object, list[_Shape]] = {}
    for k, raw in enumerate(data["shapes"]):
        what = f"{where}, shape #{k}"
        shape = _labelme_shape(builder, raw, width, height, what)
        if shape is not None:
            gid = raw.get("group_id")
            groups.setdefault((shape.label, gid) if gid is not None else k, []).append(shape)
    for shapes in groups.values():
        builder.add_instance(image_id, shapes)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _labelme_image_name(
    data: dict, file: Path, folder: Path, images: Path | None, where: str, cache: dict
) -> str:
    """The image's file name relative to the image root (``images``, else ``folder``)."""
    raw = data.get("imagePath")
    if not isinstance(raw, str) or not raw.strip():
        raise DataError(f"{where}: 'imagePath' must be a non-empty string")
    raw = raw.replace("\\", "/")
    if images is not None:
        return posixpath.basename(raw)  # --images: looked up by file name there
    relative = posixpath.normpath(posixpath.join(file.parent.relative_to(folder).as_posix(), raw))
    if relative.startswith("../") or relative == ".." or posixpath.isabs(relative):
        raise DataError(
            f"{where}: 'imagePath' {quote_untrusted(raw)} points outside {str(folder)!r}; pass "
            "the image folder (--images, images=) to look the images up there by file name"
        )
    if not join_inside(folder, relative, links_may_leave=True).is_file():
        embedded = data.get("imageData")
        if isinstance(embedded, str) and embedded:
            cache[relative] = _embedded_image(embedded, raw, where)
    return relative


def _embedded_image(text: str, name: str, where: str) -> Path:
    """``imageData`` (base64 of the image file) written once to samtune's cache; its path."""
    from .recipes import data_home

    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{where}: 'imageData' is not base64") from None
    suffix = Path(name).suffix.lower() if re.fullmatch(r"\.\w{1,5}", Path(name).suffix) else ""
    target = data_home() / "embedded-images" / (hashlib.sha256(raw).hexdigest() + suffix)
    if not target.is_file():
        with atomic_write(target) as tmp:
            tmp.write_bytes(raw)
    return target


def _labelme_shape(builder: _Builder, raw: object, width: int, height: int, what: str):
    """One LabelMe shape as a :class:`_Shape` (None: not a region, counted as skipped)."""
    if not isinstance(raw, dict):
        raise DataError(f"{what} is not an object")
    label, kind = raw.get("label"), raw.get("shape_type") or "polygon"
    if not isinstance(label, str) or not label:
        raise DataError(f"{what}: 'label' must be a non-empty string")
    if kind not in LABELME_REGIONS:
        builder.skipped[f"{kind} (not a region)"] += 1
        return None
    points = _labelme_points(raw.get("points"), what)
    if kind == "mask":
        return _Shape(label, mask=_labelme_mask(raw.get("mask"), points, width, height, what))
    if kind == "circle":
        if len(points) != 4:
            raise DataError(
                f"{what}: a circle needs 2 points (centre, rim), found {len(points) // 2}"
            )
        cx, cy, px, py = points
        r = math.hypot(px - cx, py - cy)
        return _Shape(label, polygons=[_check_polygon(_ellipse(cx, cy, r, r), width, height, what)])
    if kind == "rectangle":
        if len(points) not in (4, 8):
            raise DataError(f"{what}: a rectangle needs 2 or 4 points, found {len(points) // 2}")
        xs, ys = points[0::2], points[1::2]
        points = _box_shape(label, min(xs), min(ys), max(xs), max(ys)).polygons[0]
    _check_polygon(points, width, height, what)
    if kind in LABELME_BOXES and builder.boxes == "skip":
        builder.skipped[f"{kind} (no mask; boxes='mask' reads it as a rectangle)"] += 1
        return None
    return _Shape(label, polygons=[points])


def _labelme_points(points: object, what: str) -> list[float]:
    if not isinstance(points, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in points
    ):
        raise DataError(f"{what}: 'points' must be a list of [x, y] number pairs")
    return [float(v) for p in points for v in p]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _labelme_mask(text: object, points: list[float], width: int, height: int, what: str):
    """A ``mask`` shape: a base64 PNG of the box from ``points`` (x1, y1, x2, y2, inclusive,
    truncated to integers as labelme does), placed into a full-image bool mask."""
    from PIL import Image, UnidentifiedImageError

    if len(points) != 4 or not isinstance(text, str):
        raise DataError(f"{what}: a mask shape needs 2 points and a base64 PNG 'mask'")
    x1, y1, x2, y2 = (int(v) for v in points)
    if not (0 <= x1 <= x2 < width and 0 <= y1 <= y2 < height):
        raise DataError(
            f"{what}: its box {x1},{y1}-{x2},{y2} is not inside the {width}x{height} image"
        )
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as img:
            if img.size != (x2 - x1 + 1, y2 - y1 + 1):
                raise DataError(
                    f"{what}: its mask is {img.size[0]}x{img.size[1]} but its box is "
                    f"{x2 - x1 + 1}x{y2 - y1 + 1}"
                )
            crop = np.asarray(img.convert("L")) > 0
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{what}: 'mask' is not a base64 PNG ({exc})") from None
    mask = np.zeros((height, width), dtype=bool)
    mask[y1 : y2 + 1, x1 : x2 + 1] = crop
    return mask


# --------------------------------------------------------------------------- loading


READERS: dict[str, Reader] = {
    "cvat": read_cvat,
    "cvat-xml": read_cvat_xml,
    "cvat-coco": read_cvat_coco,
    "labelme": read_labelme,
    "x-anylabeling": read_labelme,
}
"""Dataset name prefix -> reader: ``load_dataset("<prefix>:PATH")`` reads ``PATH`` with it.
A reader takes (path, image folder or None, options: ``classes``, ``boxes``, ``keep_crowd``)
and returns a :class:`ToolExport`."""


def tool_export_name(name: str) -> tuple[str, Path] | None:
    """(prefix, path) when ``name`` is ``<prefix>:PATH`` for a prefix in :data:`READERS`."""
    prefix, sep, rest = name.partition(":")
    if not sep or prefix not in READERS:
        return None
    if not rest:
        raise ConfigError(f"dataset {name!r} names no export: write {prefix}:PATH")
    return prefix, Path(rest).expanduser()


def _tool_options(prefix: str, options: dict, known: Iterable[str]) -> tuple[dict, dict]:
    """(reader options with defaults, InstanceDataset options), checked."""
    allowed = tuple(known) + TOOL_OPTIONS
    unknown = sorted(str(k) for k in options if k not in allowed)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for dataset {prefix}:...; known options: "
            f"{', '.join(allowed)}"
        )
    tool = {k: options[k] for k in TOOL_OPTIONS if k in options}
    rest = {k: v for k, v in options.items() if k not in TOOL_OPTIONS}
    tool.setdefault("boxes", "skip")
    tool.setdefault("keep_crowd", False)
    tool.setdefault("split_seed", 0)
    tool.setdefault("classes", None)
    if tool["boxes"] not in BOX_MODES:
        raise ConfigError(f"boxes must be one of {', '.join(BOX_MODES)}; found {tool['boxes']!r}")
    classes = tool["classes"]
    if classes is not None and (
        isinstance(classes, str)
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(list(classes))
    ):
        raise ConfigError(f"classes must be a list of distinct label names; found {classes!r}")
    if not isinstance(tool["keep_crowd"], bool):
        raise ConfigError(f"keep_crowd must be true or false; found {tool['keep_crowd']!r}")
    if tool.get("images") is not None:
        tool["images"] = Path(tool["images"]).expanduser()
    return tool, rest


def check_tool_export(name: str, splits: Iterable[str], known: Iterable[str], **options) -> None:
    """What :func:`load_tool_export` would refuse without reading the export: the split
    names, the options, the export and image folder paths."""
    prefix, path = tool_export_name(name)
    tool, _ = _tool_options(prefix, options, known)
    for split in splits:
        _check_split(split)
    if not path.exists():
        raise MissingFileError(f"{prefix} export {str(path)!r} does not exist")
    if tool.get("images") is not None and not tool["images"].is_dir():
        raise MissingFileError(f"image folder {str(tool['images'])!r} does not exist")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(
            f"an annotation tool's export has no split {split!r}; choose one of "
            f"{', '.join(SPLITS)} (train/val/test: a seeded 80/10/10 split by image)"
        )


def load_tool_export(
    name: str, split: str = "train", *, known: Iterable[str] = (), **options
) -> InstanceDataset:
    """One split of an annotation tool's export (``<prefix>:PATH``, :data:`READERS`).

    ``options``: ``images`` (the image folder; default the export's own), ``classes``,
    ``boxes``, ``keep_crowd``, ``split_seed`` (see the module docstring), and ``known``
    :class:`InstanceDataset` options.
    """
    check_tool_export(name, [split], known, **options)
    prefix, path = tool_export_name(name)
    tool, rest = _tool_options(prefix, options, known)
    export = READERS[prefix](path, tool.get("images"), tool)
    if export.skipped:
        detail = ", ".join(f"{n} {kind}" for kind, n in sorted(export.skipped.items()))
        warnings.warn(f"{name}: left out {detail}", SamtuneWarning, stacklevel=2)
    ids = split_image_ids(export.coco["images"], split, tool["split_seed"], name)
    return ToolDataset(export, name=f"{prefix}/{split}", image_ids=ids, **rest)


def split_image_ids(records: list, split: str, seed: int, name: str = "export") -> list[int] | None:
    """Image ids of ``split`` (None for ``all``): the records sorted by ``file_name``,
    shuffled with ``seed``; val and test each take 10% (at least 1 image once there are 3),
    train the rest."""
    _check_split(split)
    if split == "all":
        return None
    good = [r for r in records if isinstance(r, dict) and isinstance(r.get("file_name"), str)]
    ids = [r["id"] for r in sorted(good, key=lambda r: (r["file_name"], str(r["id"])))]
    n = len(ids)
    held = max(1, round(0.1 * n)) if n >= 3 else 0
    if split != "train" and held == 0:
        raise DataError(
            f"{name} has {n} image(s), too few to hold out {split}: use split 'all' (samtune "
            "fit: val_split: null and test_split: null in the --config file), or annotate more"
        )
    order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
    parts = {"val": order[:held], "test": order[held : 2 * held], "train": order[2 * held :]}
    return sorted(parts[split])


class ToolDataset(InstanceDataset):
    """:class:`InstanceDataset` of a :class:`ToolExport`: images in ``export.images``, and
    those in ``export.elsewhere`` (LabelMe's embedded ``imageData``) at their own path."""

    def __init__(self, export: ToolExport, **options) -> None:
        self._elsewhere = dict(export.elsewhere)
        super().__init__(export.coco, export.images, **options)

    def image_path(self, i: int) -> Path:
        name = self._images[i]["file_name"]
        return self._elsewhere[name] if name in self._elsewhere else super().image_path(i)

    def _images_on_disk(self) -> list[dict]:
        every = self._images
        self._images = [r for r in every if r["file_name"] not in self._elsewhere]
        kept = {r["id"] for r in super()._images_on_disk()}
        kept |= {r["id"] for r in every if r["file_name"] in self._elsewhere}
        return [r for r in every if r["id"] in kept]
