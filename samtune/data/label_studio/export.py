"""Label Studio's JSON export as an :class:`~samtune.data.coco.InstanceDataset`.

The export (Label Studio: Export, "JSON") is a list of tasks::

    [{"id": 7, "data": {"image": "/data/upload/1/3f2a9c1e-can.png"},
      "annotations": [{"result": [
          {"type": "brushlabels", "original_width": W, "original_height": H,
           "value": {"format": "rle", "rle": [...], "brushlabels": ["can"]}},
          {"type": "polygonlabels", "original_width": W, "original_height": H,
           "value": {"points": [[x%, y%], ...], "polygonlabels": ["bottle"]}},
          {"type": "rectanglelabels", "original_width": W, "original_height": H,
           "value": {"x": x%, "y": y%, "width": w%, "height": h%, "rotation": deg,
                     "rectanglelabels": ["lid"]}}]}]}]

Coordinates are percent of ``original_width`` / ``original_height``; a rectangle turns by
``rotation`` degrees clockwise about its top-left corner ``(x, y)``.

What becomes an instance, per task (one image): its annotation marked ``ground_truth``, else
its last one not cancelled (``was_cancelled``); tasks with none are unlabelled and left out.
Each brush region is its mask (:mod:`.brush`), each polygon its outline, each rectangle the
filled (turned) rectangle. In an annotation that has brush or polygon regions, its rectangles
and keypoints are the prompts that drew them (the SAM backend's smart tools) and are left
out; keypoints and other result types (choices, text, ellipses...) are never instances. What
is left out is counted in one note.

Category ids: 1..K for the label names in sorted order, or in the order of ``labels`` when it
is given (then a label outside it is an error). Image files: see :func:`resolve_image`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from ...errors import ConfigError, DataError, MissingFileError, SamtuneWarning, quote_untrusted
from ...io import join_inside
from ..coco import InstanceDataset, read_annotations
from ..coco_schema import is_int, is_number
from ..masks import encode_mask
from .brush import decode_mask

PREFIX = "label-studio:"
SPLITS = ("train", "val", "test", "all")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
MASK_TYPES = ("brushlabels", "polygonlabels")
# Label Studio prefixes an uploaded file's name with 8 hex digits and a dash.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")


def resolve_image(reference: object, images: str | Path) -> Path | None:
    """The file in ``images`` that a task's image reference names, or None.

    Tried in order, each through :func:`samtune.io.join_inside` (never outside ``images``):

    1. a local-storage URL ``/data/local-files/?d=PATH``: ``PATH`` below ``images``, then
       below ``images`` without its first folders, one at a time;
    2. the reference's file name (the last part of the URL or path, percent-decoded);
    3. that name without Label Studio's upload prefix (``/data/upload/1/3f2a9c1e-can.png``
       -> ``can.png``).
    """
    if not isinstance(reference, str) or not reference.strip():
        return None
    for name in _candidates(reference):
        try:
            path = join_inside(images, name, what="image name", links_may_leave=True)
        except DataError:
            continue
        if path.is_file():
            return path
    return None


def _candidates(reference: str) -> list[str]:
    parts = urlsplit(reference)
    names = []
    local = parse_qs(parts.query).get("d")
    if local:
        pieces = [p for p in local[0].replace("\\", "/").split("/") if p]
        names += ["/".join(pieces[i:]) for i in range(len(pieces))]
    base = unquote(parts.path.replace("\\", "/").rsplit("/", 1)[-1])
    if base:
        names.append(base)
        match = _UPLOAD_PREFIX.match(base)
        if match:
            names.append(match.group(1))
    return names


OPTIONS = ("images", "labels", "split_seed", "categories", "category_map", "min_area",
           "skip_empty", "on_error", "check_files")  # fmt: skip


def _export_and_images(name: str, root: str | Path | None, options: dict) -> tuple[Path, Path]:
    """(export file, image folder) of ``label-studio:PATH``, after checking the options."""
    unknown = sorted(str(k) for k in options if k not in OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for a Label Studio export; known options: "
            f"{', '.join(OPTIONS)}"
        )
    path = Path(name[len(PREFIX) :]).expanduser()
    if not name[len(PREFIX) :] or not path.is_file():
        raise MissingFileError(
            f"Label Studio export {str(path)!r} does not exist; name the file exported from "
            "Label Studio (Export, JSON) as label-studio:PATH"
        )
    images = options.get("images") or root
    if images is None or not Path(images).expanduser().is_dir():
        raise MissingFileError(
            f"dataset {quote_untrusted(name)} needs the folder of the project's images: "
            + ("pass --images DIR" if images is None else f"{str(images)!r} is not a folder")
        )
    return path, Path(images).expanduser()


def check_label_studio(
    name: str, splits: Sequence[str], root: str | Path | None = None, **options
) -> None:
    """What :func:`load_label_studio` would refuse before reading anything: the options, the
    split names, the export file and the image folder."""
    _export_and_images(name, root, options)
    for split in splits:
        _check_split(split)


def _check_split(split: object) -> None:
    if split not in SPLITS:
        raise ConfigError(
            f"a Label Studio export has splits {', '.join(SPLITS)}; found {quote_untrusted(split)}"
        )


def load_label_studio(
    name: str, split: str = "all", root: str | Path | None = None, **options
) -> InstanceDataset:
    """``load_dataset("label-studio:EXPORT.json", split, root=IMAGES)``: the export's
    ``split`` (``images=`` may stand for ``root``); see :func:`read_label_studio`."""
    path, images = _export_and_images(name, root, options)
    options.pop("images", None)
    return read_label_studio(path, images, split=split, **options)


def read_label_studio(
    path: str | Path,
    images: str | Path,
    *,
    split: str = "all",
    split_seed: int = 0,
    labels: Sequence[str] | None = None,
    **options,
) -> InstanceDataset:
    """A Label Studio JSON export as an :class:`InstanceDataset` (see the module docstring).

    Args:
        path: the export file (``project-1-at-....json``).
        images: the folder holding the project's image files (matched by file name,
            :func:`resolve_image`).
        split: ``all``, or ``train`` / ``val`` / ``test``: 80/10/10 of the labelled tasks by a
            shuffle seeded with ``split_seed`` (each split at least one task when there are 3).
        labels: the class names, in category-id order; a label outside them is an error.
        **options: passed to :class:`InstanceDataset` (``categories``, ``min_area``,
            ``on_error``, ...).

    Raises:
        MissingFileError: the export or the image folder does not exist; images not found.
        DataError: a malformed export, region or RLE; a label not in ``labels``.
    """
    _check_split(split)
    path, images = Path(path).expanduser(), Path(images).expanduser()
    if not images.is_dir():
        raise MissingFileError(
            f"image folder {str(images)!r} does not exist (export {str(path)!r})"
        )
    tasks = _read_tasks(path)
    reader = _Reader(str(path), images, labels, options.get("on_error", "raise"))
    records = [r for r in (reader.task(t, pos) for pos, t in enumerate(tasks)) if r is not None]
    reader.check_images(records)
    records = _split(records, split, split_seed, str(path))
    coco = reader.coco(records)
    if reader.left_out:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(reader.left_out.items()))
        warnings.warn(f"{path}: left out {detail}", SamtuneWarning, stacklevel=2)
    return InstanceDataset(coco, images, name=f"{PREFIX}{path.name}/{split}", **options)


def _read_tasks(path: Path) -> list:
    tasks = read_annotations(path, "Label Studio export")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise DataError(
            f"Label Studio export {str(path)!r} is not Label Studio's JSON export: expected a "
            "list of tasks (objects with 'data' and 'annotations'); export the project as "
            "'JSON' (not JSON-MIN, CSV or COCO)"
        )
    return tasks


class _Reader:
    """Turns tasks into COCO image and annotation records, counting what it leaves out."""

    def __init__(self, where: str, images: Path, labels, on_error: str) -> None:
        self.where, self.images, self.on_error = where, images, on_error
        self.labels = None if labels is None else [str(n) for n in labels]
        self.left_out: Counter = Counter()

    def problem(self, detail: str) -> None:
        """A malformed region: DataError, or counted with ``on_error='skip'``."""
        if self.on_error != "skip":
            raise DataError(
                f"{self.where}: {detail}; fix the export or load it with on_error='skip'"
            )
        self.left_out["malformed region"] += 1

    def task(self, task: dict, pos: int) -> dict | None:
        """``{"id", "image", "file_name", "size", "regions"}`` of one labelled task, or None."""
        name = f"task {task['id']}" if is_int(task.get("id")) else f"task #{pos}"
        data = task.get("data")
        if not isinstance(data, dict):
            raise DataError(f"{self.where}: {name} has no 'data' object")
        annotation = _chosen_annotation(task.get("annotations"), name, self.where)
        if annotation is None:
            self.left_out["unlabelled task"] += 1
            return None
        results = annotation.get("result", [])
        if not isinstance(results, list):
            raise DataError(f"{self.where}: {name}: 'result' must be a list of regions")
        regions, size = self._regions(results, name)
        image = _image_reference(data)
        found = resolve_image(image, self.images)
        file_name = found.relative_to(self.images).as_posix() if found else None
        return {"id": task.get("id"), "name": name, "image": image, "file_name": file_name,
                "size": size, "regions": regions}  # fmt: skip

    def _regions(self, results: list, name: str) -> tuple[list, tuple[int, int] | None]:
        kinds = {r.get("type") for r in results if isinstance(r, dict)}
        has_masks = bool(kinds & set(MASK_TYPES))
        regions, size = [], None
        for i, r in enumerate(results):
            where = f"{name}, region {i}"
            kind = r.get("type") if isinstance(r, dict) else None
            if kind not in (*MASK_TYPES, "rectanglelabels"):
                self.left_out[f"{kind or 'untyped'} region"] += 1
                continue
            if kind == "rectanglelabels" and has_masks:
                self.left_out["rectangle beside masks (a prompt)"] += 1
                continue
            try:
                shape = _region_size(r)
                if size is not None and shape != size:
                    raise DataError(f"original size {shape[::-1]} differs from {size[::-1]}")
                size = shape
                regions.append((self.label(r, kind), _segmentation(r, kind, shape)))
            except DataError as exc:
                self.problem(f"{where} ({kind}): {exc}")
        return [r for r in regions if r[1] is not None], size

    def label(self, region: dict, kind: str) -> str:
        names = region["value"].get(kind)
        if not isinstance(names, list) or not names or not isinstance(names[0], str):
            raise DataError(f"'value.{kind}' must be a list holding the region's label")
        if self.labels is not None and names[0] not in self.labels:
            raise DataError(
                f"label {quote_untrusted(names[0])} is not one of the classes given "
                f"({', '.join(self.labels)}); add it to labels or relabel the region"
            )
        return names[0]

    def check_images(self, records: list[dict]) -> None:
        """Every labelled task's image found in the folder (or left out with on_error='skip')."""
        missing = [r for r in records if r["file_name"] is None]
        if missing and self.on_error != "skip":
            first = ", ".join(quote_untrusted(r["image"]) for r in missing[:3])
            raise MissingFileError(
                f"{len(missing)} of {len(records)} images of {self.where!r} are not in "
                f"{str(self.images)!r} (first: {first}); images are matched by file name "
                "(with or without Label Studio's upload prefix '1a2b3c4d-'): copy the "
                "project's images there, or pass on_error='skip' to leave them out"
            )
        self.left_out["task whose image is missing"] += len(missing)
        records[:] = [r for r in records if r["file_name"] is not None]
        self.left_out += Counter()  # drop zero counts

    def coco(self, records: list[dict]) -> dict:
        """The COCO dict of ``records`` (category ids from the label names, see the module)."""
        used = sorted({label for r in records for label, _ in r["regions"]})
        names = self.labels if self.labels is not None else used
        ids = {n: i + 1 for i, n in enumerate(names)}
        task_ids = [r["id"] for r in records]
        by_task = all(is_int(t) for t in task_ids) and len(set(task_ids)) == len(task_ids)
        images, anns = [], []
        for pos, r in enumerate(records):
            image = {"id": int(r["id"]) if by_task else pos + 1, "file_name": r["file_name"]}
            if r["size"] is not None:
                image["height"], image["width"] = r["size"]
            images.append(image)
            for label, seg in r["regions"]:
                anns.append({"id": len(anns) + 1, "image_id": image["id"], "iscrowd": 0,
                             "category_id": ids[label], "segmentation": seg})  # fmt: skip
        categories = [{"id": i, "name": n} for n, i in ids.items()]
        return {"images": images, "annotations": anns, "categories": categories}


def _chosen_annotation(annotations: object, name: str, where: str) -> dict | None:
    """The task's ``ground_truth`` annotation, else its last one not cancelled, else None."""
    if annotations is None:
        return None
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise DataError(f"{where}: {name}: 'annotations' must be a list of objects")
    kept = [a for a in annotations if not a.get("was_cancelled")]
    truth = [a for a in kept if a.get("ground_truth")]
    return (truth or kept or [None])[-1]


def _image_reference(data: dict) -> object:
    """``data.image``, else the only value of ``data`` when there is one."""
    if "image" in data:
        return data["image"]
    return next(iter(data.values())) if len(data) == 1 else None


def _region_size(region: dict) -> tuple[int, int]:
    """(H, W) from ``original_height`` / ``original_width``; DataError when absent or bad."""
    h, w = region.get("original_height"), region.get("original_width")
    if not (is_int(h) and is_int(w) and h > 0 and w > 0):
        raise DataError(
            f"'original_width'/'original_height' must be positive integers, found {w!r}/{h!r}"
        )
    if not isinstance(region.get("value"), dict):
        raise DataError("no 'value' object")
    return int(h), int(w)


def _segmentation(region: dict, kind: str, size: tuple[int, int]) -> list | dict | None:
    """The region as a COCO segmentation in pixels (None for an empty brush)."""
    value, (h, w) = region["value"], size
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle" or "rle" not in value:
            raise DataError("a brush region needs 'value.rle' (format 'rle')")
        mask = decode_mask(value["rle"], h, w)
        return encode_mask(mask) if mask.any() else None
    if kind == "polygonlabels":
        points = value.get("points")
        if (
            not isinstance(points, list)
            or len(points) < 3
            or not all(
                isinstance(p, list) and len(p) == 2 and all(map(is_number, p)) for p in points
            )
        ):
            raise DataError("'value.points' must be at least 3 [x%, y%] pairs of numbers")
        return [[c for x, y in points for c in (x * w / 100, y * h / 100)]]
    return [rectangle_outline(value, w, h)]


def rectangle_outline(value: dict, w: int, h: int) -> list[float]:
    """The four corners (pixels, flat x0 y0 ...) of a rectangle turned about its top-left."""
    keys = ("x", "y", "width", "height")
    if not all(is_number(value.get(k)) for k in keys) or not is_number(value.get("rotation", 0)):
        raise DataError("a rectangle needs numbers 'x', 'y', 'width', 'height' (and 'rotation')")
    x, y = value["x"] * w / 100, value["y"] * h / 100
    bw, bh = value["width"] * w / 100, value["height"] * h / 100
    if bw <= 0 or bh <= 0:
        raise DataError(f"a rectangle of size {bw:g}x{bh:g} px holds no pixel")
    turn = math.radians(value.get("rotation", 0))
    cos, sin = math.cos(turn), math.sin(turn)
    corners = ((0, 0), (bw, 0), (bw, bh), (0, bh))
    return [c for dx, dy in corners for c in (x + dx * cos - dy * sin, y + dx * sin + dy * cos)]


def _split(records: list[dict], split: str, seed: int, where: str) -> list[dict]:
    """The tasks of ``split``: all, or a seeded 80/10/10 shuffle by task (see the reader)."""
    if split == "all":
        return records
    n = len(records)
    if n < 3:
        raise DataError(
            f"{where} has {n} labelled task(s) with images; train/val/test need at least 3: "
            "label more, or use the split 'all' (and no validation split)"
        )
    n_val = max(1, round(SPLIT_FRACTIONS[1] * n))
    n_test = max(1, round(SPLIT_FRACTIONS[2] * n))
    order = np.random.default_rng(seed).permutation(n).tolist()
    bounds = {"train": (0, n - n_val - n_test), "val": (n - n_val - n_test, n - n_test),
              "test": (n - n_test, n)}  # fmt: skip
    start, stop = bounds[split]
    return [records[i] for i in sorted(order[start:stop])]
