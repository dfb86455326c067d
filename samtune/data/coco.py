"""COCO-format instance datasets: images, polygon/RLE masks, crowd flags, validation.

:class:`InstanceDataset` is a ``torch.utils.data.Dataset`` of :class:`~samtune.data.sample.Sample`.
It validates the annotation file when it is built (every record against the schema of
:mod:`~samtune.data.coco_schema`, unknown images or categories, zero-area boxes, missing image
files) and either raises one clear error naming the file, the record and the field or, with
``on_error="skip"``, drops what is broken with one warning that counts it (unreadable images
included: those found when the dataset is built are left out; an image that only fails when it
is decoded becomes an image without instances, with a warning). An annotation id reused on
another image gets a fresh id, with one warning. When an image is read, the frame its
annotations were drawn in is chosen from the declared size, the EXIF orientation and the
polygons' extent (:func:`choose_frame`).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError, MissingFileError, SamtuneWarning
from ..io import DATA_FILE_LIMIT, join_inside, parse_json, read_text
from .coco_schema import (
    annotation_problem,
    category_problem,
    image_problem,
    is_int,
    record_name,
)
from .images import _unreadable, read_oriented
from .masks import decode_segmentation
from .sample import Sample, masks_to_boxes

ON_ERROR = ("raise", "skip")


# --------------------------------------------------------------------------- images


# --------------------------------------------------------------------------- masks


def _xyxy(bbox) -> list[float]:
    """A COCO ``bbox`` ``[x, y, w, h]`` as ``[x, y, x + w, y + h]``; NaNs when it is absent."""
    if bbox is None:
        return [float("nan")] * 4
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


# --------------------------------------------------------------------------- dataset


def read_annotations(path: str | Path, what: str = "annotation file") -> object:
    """The JSON of an annotation file, within the limits of :mod:`samtune.io` for data files
    (:data:`~samtune.io.DATA_FILE_LIMIT` bytes, :data:`~samtune.io.MAX_DEPTH` levels);
    MissingFileError or DataError (naming ``what``) otherwise."""
    text = read_text(path, what=what, limit=DATA_FILE_LIMIT, error=DataError)
    return parse_json(
        text,
        f"{what} {str(path)!r}",
        DataError,
        advice="; the file is truncated or corrupt: download it again",
    )


def read_coco_json(path: Path) -> dict:
    """A COCO annotation file: an object with an ``images`` list (and ``annotations`` and
    ``categories`` lists when present); DataError naming the file otherwise."""
    data = read_annotations(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(
            f"annotation file {str(path)!r} is not COCO format: expected an object with "
            f"'images', 'annotations' and 'categories' lists"
        )
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"annotation file {str(path)!r}: {key!r} must be a list")
    return data


class InstanceDataset(Dataset):
    """A COCO-format instance segmentation dataset yielding :class:`Sample` objects.

    Args:
        annotations: path of the COCO JSON file (or the already-parsed dict).
        images: folder the images' ``file_name`` is relative to.
        name: a label for messages and reports (e.g. ``"trashcan/val"``).
        categories: keep only these categories (names or ids); None keeps all.
        category_map: rename or merge categories: source name or id -> new name. New ids are
            1..K in order of first appearance of the new names in the source category list.
            Instances of categories not in the map are dropped.
        min_area: drop instances whose decoded mask has fewer pixels (default 1: empty masks).
        skip_empty: drop images that have no instances (after filtering).
        on_error: ``"raise"`` (default): the first problem raises DataError/MissingFileError
            naming the file; ``"skip"``: broken annotations, missing and unreadable image
            files are dropped, with one warning that counts them by reason (an image that
            opens but fails to decode later is read as an image without instances, with a
            warning, and counted in ``skipped["unreadable image"]``).
        check_files: verify at construction that every image file exists.
        image_ids: keep only these image ids (used for seeded splits).

    Attributes:
        categories: dict id -> name (after selection and remapping).
        name: the label given.
        skipped: Counter of what was dropped, by reason.
    """

    def __init__(
        self,
        annotations: str | Path | dict,
        images: str | Path,
        *,
        name: str = "coco",
        categories: Iterable[str | int] | None = None,
        category_map: Mapping[str | int, str] | None = None,
        min_area: int = 1,
        skip_empty: bool = False,
        on_error: str = "raise",
        check_files: bool = True,
        image_ids: Iterable[int] | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be 'raise' or 'skip'; found {on_error!r}")
        self.name = name
        self.on_error = on_error
        self.min_area = int(min_area)
        self.image_root = Path(images)
        if isinstance(annotations, dict):
            self.annotation_file = None
            data = annotations
        else:
            self.annotation_file = Path(annotations)
            data = read_coco_json(self.annotation_file)
        self._where = str(self.annotation_file) if self.annotation_file else name
        self._warned_stored_frame = False
        self.skipped: Counter = Counter()
        if not self.image_root.is_dir():
            raise MissingFileError(
                f"image folder {str(self.image_root)!r} does not exist (annotations: {self._where!r})"
            )

        source_cats = self._parse_categories(data.get("categories", []))
        self._cat_remap, self.categories = _select_categories(
            source_cats, categories, category_map, self._where
        )
        self.source_categories = source_cats

        wanted = set(int(i) for i in image_ids) if image_ids is not None else None
        self._images, seen = self._image_records(data["images"], wanted)
        self._anns = self._annotations_by_image(data.get("annotations", []), seen, source_cats)
        if check_files:
            self._images = self._images_on_disk()
        if skip_empty:
            self._images = [r for r in self._images if self._anns[r["id"]]]
        if self.skipped:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            warnings.warn(f"{self._where}: skipped {detail}", SamtuneWarning, stacklevel=2)

    # ----------------------------------------------------------------- reading

    def _image_records(self, records: list, wanted: set[int] | None) -> tuple[list[dict], set]:
        """Well-formed image records (only ``wanted`` ids, if given), and every id seen."""
        images: list[dict] = []
        seen: set[int] = set()
        for pos, rec in enumerate(records):
            if not isinstance(rec, dict) or "id" not in rec or "file_name" not in rec:
                self._problem(
                    f"image record #{pos} has no 'id' or 'file_name'", "malformed image record"
                )
                continue
            bad = image_problem(rec)
            if bad:
                self._problem(f"{record_name('image', rec, pos)}: {bad}", "malformed image record")
                continue
            if rec["id"] in seen:
                self._problem(f"image id {rec['id']} appears twice", "duplicate image id")
                continue
            seen.add(rec["id"])
            if wanted is None or rec["id"] in wanted:
                images.append(rec)
        return images, seen

    def _annotations_by_image(self, anns: list, seen: set, source_cats) -> dict[int, list[dict]]:
        """Valid annotations of selected categories, grouped by (kept) image id.

        An annotation id used again on another image (TACO's file has two) is given a fresh
        id above every id in the file, the first use keeping its own: every instance loads,
        ids stay unique, and one warning names them. Used twice on the same image, it is a
        duplicate (an error).
        """
        by_image: dict[int, list[dict]] = {rec["id"]: [] for rec in self._images}
        first_image: dict[int, int] = {}  # annotation id -> the image that used it first
        fresh = 1 + max((a["id"] for a in anns if _has_int_id(a)), default=0)
        renumbered: list[tuple[int, int, int, int]] = []  # (id, first image, image, new id)
        for pos, ann in enumerate(anns):
            why = self._check_annotation(ann, pos, seen, source_cats)
            if why is None and first_image.get(ann["id"]) == ann["image_id"]:
                why = (
                    "duplicate annotation id",
                    f"annotation id {ann['id']} appears twice on image {ann['image_id']}",
                )
            if why:
                self._problem(why[1], why[0])
                continue
            if ann["id"] in first_image:
                renumbered.append((ann["id"], first_image[ann["id"]], ann["image_id"], fresh))
                ann, fresh = {**ann, "id": fresh}, fresh + 1
            first_image.setdefault(ann["id"], ann["image_id"])
            if ann["category_id"] in self._cat_remap and ann["image_id"] in by_image:
                by_image[ann["image_id"]].append(ann)
        self._warn_renumbered([r for r in renumbered if r[2] in by_image])
        return by_image

    def _warn_renumbered(self, renumbered: list[tuple[int, int, int, int]]) -> None:
        if not renumbered:
            return
        each = "; ".join(
            f"id {old} on image {image} (first used on image {first}) is now {new}"
            for old, first, image, new in renumbered
        )
        warnings.warn(
            f"{self._where}: {len(renumbered)} annotation id(s) are used on more than one "
            f"image; each later use was given a fresh id and loads: {each}",
            SamtuneWarning,
            stacklevel=4,
        )

    def _images_on_disk(self) -> list[dict]:
        """The image records whose files exist (and, with ``on_error='skip'``, decode).

        A ``file_name`` is untrusted: it is joined with :func:`samtune.io.join_inside`, so one
        that leaves the image folder is a DataError, never a path looked up. Missing images are
        counted, all of them, so the message says how much of the dataset is absent.
        """
        kept, missing = [], []
        for rec in self._images:
            path = join_inside(self.image_root, rec["file_name"], links_may_leave=True)
            if not path.is_file():
                missing.append(rec["file_name"])
            elif self.on_error == "skip" and _unreadable(path):
                self.skipped["unreadable image"] += 1
            else:
                kept.append(rec)
        if missing and self.on_error == "raise":
            raise MissingFileError(
                f"{len(missing)} of {len(self._images)} images listed in {self._where!r} are not "
                f"in the image folder {str(self.image_root)!r} (first: "
                f"{', '.join(repr(m) for m in missing[:3])}); re-run the download, or pass "
                "on_error='skip' to leave them out"
            )
        self.skipped["missing image file"] += len(missing)
        if not self.skipped["missing image file"]:
            del self.skipped["missing image file"]
        return kept

    # ----------------------------------------------------------------- validation

    def _problem(self, detail: str, reason: str) -> None:
        if self.on_error == "raise":
            raise DataError(
                f"{self._where}: {detail}; fix the annotation file or load it with on_error='skip'"
            )
        self.skipped[reason] += 1

    def _parse_categories(self, cats: list) -> dict[int, str]:
        out: dict[int, str] = {}
        for c in cats:
            bad = category_problem(c)
            if bad:
                raise DataError(f"{self._where}: {bad}")
            if c["id"] in out:
                raise DataError(f"{self._where}: category id {c['id']} appears twice")
            out[int(c["id"])] = c["name"]
        return out

    @staticmethod
    def _check_annotation(ann, pos: int, image_ids, cats) -> tuple[str, str] | None:
        """(reason, detail) when ``ann`` cannot be used, else None."""
        name = record_name("annotation", ann, pos)
        if not isinstance(ann, dict) or not {"id", "image_id", "category_id"} <= set(ann):
            return "malformed annotation", f"{name} has no 'id', 'image_id' or 'category_id'"
        bad = annotation_problem(ann)
        if bad:
            image = ann["image_id"]
            return bad[0], f"{name}" + (
                f" of image {image}" if is_int(image) else ""
            ) + f": {bad[1]}"
        aid = ann["id"]
        if ann["image_id"] not in image_ids:
            return (
                "annotation of unknown image",
                f"annotation {aid} refers to image id {ann['image_id']}, which is not in 'images'",
            )
        if ann["category_id"] not in cats:
            return (
                "annotation of unknown category",
                f"annotation {aid} has category id {ann['category_id']}, which is not in 'categories'",
            )
        bbox = ann.get("bbox")
        if bbox is not None and (bbox[2] <= 0 or bbox[3] <= 0):
            return "zero-area box", f"annotation {aid} has a zero-area box {bbox}"
        if ann.get("area", 1) == 0:
            return "zero-area box", f"annotation {aid} has area 0"
        return None

    # ----------------------------------------------------------------- access

    def __len__(self) -> int:
        return len(self._images)

    def image_path(self, i: int) -> Path:
        """The image file of item ``i`` (its bytes key the embedding cache)."""
        return join_inside(self.image_root, self._images[i]["file_name"], links_may_leave=True)

    def image_info(self, i: int) -> dict:
        """The COCO image record of item ``i``."""
        return self._images[i]

    def annotations(self, i: int) -> list[dict]:
        """The COCO annotations of item ``i`` (after category selection, before area filter)."""
        return self._anns[self._images[i]["id"]]

    @property
    def image_ids(self) -> list[int]:
        return [r["id"] for r in self._images]

    def __getitem__(self, i: int) -> Sample:
        if i < 0:
            i += len(self)
        rec = self._images[i]
        path = self.image_path(i)
        try:
            image, stored, method = read_oriented(path)
        except DataError as exc:
            if self.on_error == "skip":
                return self._unreadable_sample(rec, path, exc)
            raise DataError(
                f"{exc}, or load the dataset with on_error='skip' (samtune fit: "
                "dataset_options: {on_error: skip} in the --config file) to leave unreadable "
                "images out"
            ) from None
        frame = self._frame(rec, path, image.shape[:2], stored)
        size = image.shape[:2] if frame == "shown" else stored
        masks, cats, crowd, ids, bboxes = [], [], [], [], []
        for ann in self._anns[rec["id"]]:
            try:
                m = decode_segmentation(ann["segmentation"], *size)
            except DataError as exc:
                raise DataError(
                    f"{self._where}: annotation {ann['id']} of {str(path)!r}: {exc}"
                ) from None
            if frame == "stored":  # drawn on the file's pixels: turn it as EXIF turns them
                m = _turn(m, method)
            if m.sum() < self.min_area:
                continue
            masks.append(m)
            cats.append(self._cat_remap[ann["category_id"]])
            crowd.append(bool(ann.get("iscrowd", 0)))
            ids.append(int(ann["id"]))
            bboxes.append(_xyxy(ann.get("bbox")))
        h, w = image.shape[:2]
        masks_np = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
        return Sample(
            image=image,
            masks=masks_np,
            boxes=masks_to_boxes(masks_np),
            category_ids=np.asarray(cats, dtype=np.int64),
            iscrowd=np.asarray(crowd, dtype=bool),
            instance_ids=np.asarray(ids, dtype=np.int64),
            image_id=int(rec["id"]),
            file_name=str(rec["file_name"]),
            meta={"dataset": self.name},
            annotation_boxes=np.asarray(bboxes, np.float32).reshape(-1, 4),
        )

    def _frame(self, rec: dict, path: Path, shown: tuple, stored: tuple) -> str:
        """``"shown"`` or ``"stored"``: the frame image ``rec``'s annotations were drawn in
        (see :func:`choose_frame`); warns once per dataset for ``"stored"``.

        Raises:
            DataError: the declared size fits neither frame, or the polygons contradict it.
        """
        declared = (rec.get("height"), rec.get("width"))
        extent = polygon_extent(self._anns[rec["id"]])
        frame, problem = choose_frame(
            None if None in declared else declared, tuple(shown), tuple(stored), extent
        )
        if problem:
            raise DataError(f"image {str(path)!r} (id {rec['id']}) in {self._where!r}: {problem}")
        if frame == "stored" and not self._warned_stored_frame:
            self._warned_stored_frame = True
            warnings.warn(
                f"{self._where}: image {str(path)!r} (id {rec['id']}) has an EXIF rotation and "
                f"its annotations declare the stored, unrotated size {stored[1]}x{stored[0]} "
                "(WxH): its masks are drawn on the stored pixels and rotated with the image "
                "(said once; other such images in this dataset are read the same way)",
                SamtuneWarning,
                stacklevel=3,
            )
        return frame

    def _unreadable_sample(self, rec: dict, path: Path, exc: Exception) -> Sample:
        """on_error='skip': an image that fails to decode becomes an image without instances."""
        self.skipped["unreadable image"] += 1
        reason = exc.__cause__ or exc
        warnings.warn(
            f"{self._where}: skipped unreadable image {str(path)!r} ({reason}); it counts as an "
            f"image without instances ({self.skipped['unreadable image']} unreadable so far)",
            SamtuneWarning,
            stacklevel=3,
        )
        h = rec.get("height") if isinstance(rec.get("height"), int) else 1
        w = rec.get("width") if isinstance(rec.get("width"), int) else 1
        h, w = max(1, h), max(1, w)
        return Sample(
            image=np.zeros((h, w, 3), np.uint8),
            masks=np.zeros((0, h, w), dtype=bool),
            boxes=np.zeros((0, 4), np.float32),
            category_ids=np.zeros(0, np.int64),
            iscrowd=np.zeros(0, bool),
            instance_ids=np.zeros(0, np.int64),
            image_id=int(rec["id"]),
            file_name=str(rec["file_name"]),
            meta={"dataset": self.name, "skipped": "unreadable image"},
            annotation_boxes=np.zeros((0, 4), np.float32),
        )

    def stats(self) -> dict:
        """Counts from the annotation file (no image is read): images, instances, per class."""
        per_class: Counter = Counter()
        crowd = 0
        for rec in self._images:
            for ann in self._anns[rec["id"]]:
                per_class[self.categories[self._cat_remap[ann["category_id"]]]] += 1
                crowd += bool(ann.get("iscrowd", 0))
        return {
            "name": self.name,
            "images": len(self._images),
            "empty_images": sum(1 for r in self._images if not self._anns[r["id"]]),
            "instances": sum(per_class.values()),
            "crowd": crowd,
            "per_class": {name: per_class.get(name, 0) for name in self.categories.values()},
        }

    def __repr__(self) -> str:
        return (
            f"InstanceDataset({self.name!r}, images={len(self)}, categories={len(self.categories)})"
        )


# A polygon may reach this far past the image's edge (annotation tools round outwards).
FRAME_TOLERANCE = 1.0


def polygon_extent(anns: list[dict]) -> tuple[float, float] | None:
    """(largest x, largest y) over the polygons of ``anns``; None when they have none."""
    xs = [
        max(p[0::2]) for a in anns if isinstance(a["segmentation"], list) for p in a["segmentation"]
    ]
    ys = [
        max(p[1::2]) for a in anns if isinstance(a["segmentation"], list) for p in a["segmentation"]
    ]
    return (max(xs), max(ys)) if xs else None


def choose_frame(
    declared: tuple[int, int] | None,
    shown: tuple[int, int],
    stored: tuple[int, int],
    extent: tuple[float, float] | None,
) -> tuple[str, str | None]:
    """Which frame an image's annotations were drawn in: ``(frame, problem)``.

    Sizes are (H, W): ``declared`` by the annotation file, ``shown`` after the EXIF
    orientation, ``stored`` the file's pixels before it; ``extent`` the polygons' largest
    (x, y). COCO annotations are drawn on the displayed image (``"shown"``). When EXIF turns
    the image by 90 degrees and the file declares the stored size instead, the annotations
    were drawn on the stored pixels (``"stored"``): the masks are rasterised there and turned
    with the image. ``problem`` (the frame is then meaningless) says why neither fits: the
    declared size is neither frame's, or the polygons reach beyond the declared frame while
    fitting the other one.
    """

    def fits(size: tuple[int, int]) -> bool:
        return extent is None or (
            extent[0] <= size[1] + FRAME_TOLERANCE and extent[1] <= size[0] + FRAME_TOLERANCE
        )

    def wh(size: tuple) -> str:
        return f"{size[1]}x{size[0]}"

    turned = shown != stored
    reach = "" if extent is None else f"its polygons reach x={extent[0]:g}, y={extent[1]:g}, "
    if declared is None:
        return "shown", None
    if declared == shown and (not turned or fits(shown) or not fits(stored)):
        return "shown", None
    if turned and declared == stored and (fits(stored) or not fits(shown)):
        return "stored", None
    if declared in (shown, stored):
        other = "stored (before its EXIF rotation)" if declared == shown else "displayed"
        return "shown", (
            f"the annotation file declares {wh(declared)} (WxH) but {reach}which only the "
            f"{other} frame {wh(stored if declared == shown else shown)} holds; the annotations "
            "contradict themselves about the frame they were drawn in: correct the image's "
            "width/height or its polygons"
        )
    exif = f" ({wh(stored)} as stored, before its EXIF rotation)" if turned else ""
    return "shown", (
        f"the image is {wh(shown)} (WxH){exif} but the annotation file declares "
        f"{wh(declared)}; the image does not belong to these annotations"
    )


def _turn(mask: np.ndarray, method) -> np.ndarray:
    """``mask`` (H x W) turned as ``PIL.Image.transpose(method)`` turns its image."""
    from PIL.Image import Transpose

    turns = {
        Transpose.FLIP_LEFT_RIGHT: lambda m: m[:, ::-1],
        Transpose.FLIP_TOP_BOTTOM: lambda m: m[::-1],
        Transpose.ROTATE_90: lambda m: np.rot90(m, 1),
        Transpose.ROTATE_180: lambda m: np.rot90(m, 2),
        Transpose.ROTATE_270: lambda m: np.rot90(m, 3),
        Transpose.TRANSPOSE: lambda m: m.T,
        Transpose.TRANSVERSE: lambda m: np.rot90(m, 2).T,
    }
    return np.ascontiguousarray(turns[method](mask))


def _has_int_id(record: object) -> bool:
    return isinstance(record, dict) and is_int(record.get("id"))


def _select_categories(
    source: dict[int, str],
    keep: Iterable[str | int] | None,
    mapping: Mapping[str | int, str] | None,
    where: str,
) -> tuple[dict[int, int], dict[int, str]]:
    """Return (source id -> new id, new id -> name)."""
    by_name = {name: cid for cid, name in source.items()}

    def resolve(key: str | int) -> int:
        if isinstance(key, (int, np.integer)) and int(key) in source:
            return int(key)
        if isinstance(key, str) and key in by_name:
            return by_name[key]
        if isinstance(key, str) and key.isdigit() and int(key) in source:
            return int(key)
        raise DataError(
            f"{where}: unknown category {key!r}; it has {len(source)} categories: "
            f"{', '.join(sorted(source.values())[:30])}"
        )

    selected = set(source) if keep is None else {resolve(k) for k in keep}
    if mapping is None:
        remap = {cid: cid for cid in source if cid in selected}
        return remap, {cid: source[cid] for cid in sorted(remap)}
    src_to_name = {resolve(k): str(v) for k, v in mapping.items()}
    names: list[str] = []
    for cid in sorted(source):
        if cid in src_to_name and cid in selected and src_to_name[cid] not in names:
            names.append(src_to_name[cid])
    new_id = {name: i + 1 for i, name in enumerate(names)}
    remap = {cid: new_id[n] for cid, n in src_to_name.items() if cid in selected}
    return remap, {i: n for n, i in new_id.items()}
