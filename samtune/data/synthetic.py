"""Procedural waste-like scenes written as a COCO dataset: the ``demo`` dataset.

Each scene is a textured conveyor-belt background with clutter (unannotated specks and
streaks) and a few objects from four classes, placed one over another (occlusion, visible
masks only). Each class has a consistent cue, so a small model can learn it in a minute:

- ``bottle``: transparent plastic, an elongated rounded shape that tints what lies beneath
  and carries a bright highlight stripe;
- ``can``: metal, a rectangle with a vertical metallic gradient and a dark rim;
- ``cardboard``: a brown quadrilateral, sometimes the colour of the belt, told apart by its
  corrugation stripes and dark outline;
- ``bag``: soft plastic, a deformable blob with a saturated colour and wrinkle lines.

The output is deterministic for a (seed, size, counts) triple and takes about a second for
the default 300 images of 128 px.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import MANIFEST, atomic_dir, check_replaceable, dump_json, read_json
from .masks import encode_mask

DEMO_VERSION = 1
CATEGORIES = ("bottle", "can", "cardboard", "bag")
DEFAULT_COUNTS = {"train": 200, "val": 50, "test": 50}
_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/samtune``, else ``~/.cache/samtune``.

    As the XDG base-directory specification says, an ``XDG_CACHE_HOME`` that is empty or
    not an absolute path is ignored.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "samtune"


def cache_home() -> Path:
    """The demo data's cache folder: ``$SAMTUNE_CACHE``, else :func:`user_cache_dir`."""
    if os.environ.get("SAMTUNE_CACHE"):
        return Path(os.environ["SAMTUNE_CACHE"]).expanduser()
    return user_cache_dir()


def default_demo_root(seed: int = 0, size: int = 128, counts: dict | None = None) -> Path:
    """``<cache>/demo-<version>-<seed>`` (``<cache>``: :func:`cache_home`), with a
    suffix naming the size and counts when they are not the defaults: each variant has its
    own folder, so processes asking for different ones never regenerate a folder another
    process is reading."""
    base = cache_home()
    name = f"demo-{DEMO_VERSION}-{seed}"
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    if size != 128 or counts != DEFAULT_COUNTS:
        name += f"-{size}px-" + "-".join(f"{k}{v}" for k, v in sorted(counts.items()))
    return base / name


def _polygon_mask(points: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(img, dtype=bool)


def _rotated(points: np.ndarray, angle: float, center: np.ndarray) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return (points - center) @ rot.T + center


def _shape(cls: str, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Polygon (K,2) of an object of class ``cls`` and its local axis (unit vector)."""
    s = size / 128.0
    center = rng.uniform(0.2 * size, 0.8 * size, 2)
    angle = rng.uniform(0, math.pi)
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    if cls == "bottle":
        a, b = rng.uniform(22, 32) * s, rng.uniform(7, 10) * s
        r = 1 / ((np.abs(np.cos(t)) / a) ** 4 + (np.abs(np.sin(t)) / b) ** 4) ** 0.25
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1) + center
    elif cls == "can":
        a, b = rng.uniform(12, 16) * s, rng.uniform(8, 11) * s
        pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]]) + center
    elif cls == "cardboard":
        a, b = rng.uniform(14, 24) * s, rng.uniform(12, 20) * s
        corners = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
        pts = corners + rng.uniform(-4, 4, corners.shape) * s + center
    else:  # bag: deformable blob
        base = rng.uniform(11, 17) * s
        k = rng.integers(2, 5)
        phase = rng.uniform(0, 2 * math.pi, k)
        amp = rng.uniform(0.1, 0.3, k)
        r = base * (1 + sum(amp[i] * np.sin((i + 2) * t + phase[i]) for i in range(k)))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1) + center
    pts = _rotated(pts, angle, center)
    return pts, np.array([math.cos(angle), math.sin(angle)])


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    belt = rng.uniform([90, 80, 60], [150, 130, 100])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.ones((size, size, 3), np.float32) * belt
    img += rng.normal(0, 8, (size, size, 1))  # grain
    img += 6 * np.sin(yy / rng.uniform(3, 6))[..., None]  # belt ridges
    return img, belt


def _clutter(img: np.ndarray, rng: np.random.Generator, size: int) -> None:
    from PIL import Image, ImageDraw

    layer = Image.new("RGB", (size, size))
    alpha = Image.new("L", (size, size), 0)
    d, da = ImageDraw.Draw(layer), ImageDraw.Draw(alpha)
    for _ in range(rng.integers(3, 10)):
        x, y = rng.uniform(0, size, 2)
        colour = tuple(int(c) for c in rng.uniform(40, 200, 3))
        if rng.random() < 0.5:
            r = rng.uniform(1, 3) * size / 128
            d.ellipse([x - r, y - r, x + r, y + r], fill=colour)
            da.ellipse([x - r, y - r, x + r, y + r], fill=255)
        else:
            x2, y2 = x + rng.uniform(-15, 15), y + rng.uniform(-15, 15)
            d.line([x, y, x2, y2], fill=colour, width=1)
            da.line([x, y, x2, y2], fill=255, width=1)
    a = np.asarray(alpha, np.float32)[..., None] / 255
    img[:] = img * (1 - a) + np.asarray(layer, np.float32) * a


def _paint(
    img: np.ndarray,
    cls: str,
    mask: np.ndarray,
    axis: np.ndarray,
    belt: np.ndarray,
    rng: np.random.Generator,
) -> None:
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    along = xx * axis[0] + yy * axis[1]
    across = -xx * axis[1] + yy * axis[0]
    m = mask[..., None]
    if cls == "bottle":
        tint = np.array([200, 230, 255], np.float32)
        layer = 0.55 * img + 0.45 * tint
        stripe = np.abs(np.sin(across / 3.0)) > 0.92
        layer[stripe] = 250
        img[:] = np.where(m, layer, img)
    elif cls == "can":
        g = 150 + 80 * np.cos(across / 2.5)[..., None]
        colour = rng.choice([[1.0, 1.0, 1.0], [1.0, 0.5, 0.5], [0.6, 0.7, 1.0]])
        img[:] = np.where(m, g * np.asarray(colour, np.float32), img)
    elif cls == "cardboard":
        base = (
            belt + rng.normal(0, 6, 3)
            if rng.random() < 0.4
            else rng.uniform([150, 105, 55], [190, 140, 85])
        )
        layer = np.ones_like(img) * base - 25 * (np.sin(along / 1.5) > 0.3)[..., None]
        img[:] = np.where(m, layer, img)
    else:  # bag
        hue = rng.choice(
            [[220, 40, 40], [40, 170, 60], [40, 80, 220], [230, 210, 30], [20, 20, 20]]
        )
        wrinkle = 30 * np.sin((along + 0.5 * across) / 2.0)[..., None]
        img[:] = np.where(
            m, np.asarray(hue, np.float32) + wrinkle + rng.normal(0, 5, img.shape), img
        )
    if cls in ("can", "cardboard"):  # dark outline
        from scipy.ndimage import binary_erosion

        edge = mask & ~binary_erosion(mask, iterations=1)
        img[edge] = img[edge] * 0.35


def generate_scene(rng: np.random.Generator, size: int = 128, max_objects: int = 6):
    """One scene: (HxWx3 uint8 image, list of (class index, HxW bool visible mask))."""
    img, belt = _background(rng, size)
    _clutter(img, rng, size)
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = int(rng.integers(len(CATEGORIES)))
        pts, axis = _shape(CATEGORIES[c], rng, size)
        mask = _polygon_mask(pts, size)
        if mask.sum() < 30:
            continue
        _paint(img, CATEGORIES[c], mask, axis, belt, rng)
        objects = [(k, m & ~mask) for k, m in objects]  # occlusion: later objects on top
        objects.append((c, mask))
    objects = [(k, m) for k, m in objects if m.sum() >= 20]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), objects


def _demo_files(root: Path) -> list[str] | None:
    """The files of a demo folder as samtune writes them (``demo.json``, each split's
    ``annotations.json`` and the images it names), or None if ``root`` holds anything else."""
    files = ["demo.json"]
    for split in (p for p in root.iterdir() if p.name not in ("demo.json", MANIFEST)):
        try:
            coco = read_json(split / "annotations.json")
            images = sorted(f"{split.name}/images/{im['file_name']}" for im in coco["images"])
        except (InputError, KeyError, TypeError):
            return None
        found = sorted(p.relative_to(root).as_posix() for p in split.rglob("*") if not p.is_dir())
        if found != sorted([f"{split.name}/annotations.json", *images]):
            return None
        files += [split.name, f"{split.name}/images", *found]
    return files


def _adopt_earlier_demo(root: Path) -> None:
    """Give a demo folder of an earlier samtune (no manifest, or one that listed top-level
    names only) a full manifest, so it can be regenerated; only a folder holding exactly what
    samtune writes there is adopted."""
    if not (root / "demo.json").is_file():
        return
    try:
        if "files" in read_json(root / MANIFEST):
            return
    except (InputError, TypeError):
        pass
    files = _demo_files(root)
    if files is not None:
        entries = sorted(p.name for p in root.iterdir() if p.name != MANIFEST)
        manifest = {"written_by": "samtune", "entries": entries, "files": sorted(files)}
        (root / MANIFEST).write_text(dump_json(manifest))


def write_demo_dataset(
    root: str | Path,
    *,
    seed: int = 0,
    size: int = 128,
    counts: dict[str, int] | None = None,
) -> Path:
    """Generate the demo dataset as COCO files under ``root`` (written atomically).

    Layout: ``root/<split>/annotations.json`` and ``root/<split>/images/<id>.png`` for splits
    train/val/test, plus ``root/demo.json`` (version, seed, size, counts).

    Returns:
        ``root``.
    """
    from PIL import Image

    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    root = Path(root)
    categories = [
        {"id": i + 1, "name": n, "supercategory": "waste"} for i, n in enumerate(CATEGORIES)
    ]
    _adopt_earlier_demo(root)
    if root.is_dir() and any(root.iterdir()):
        check_replaceable(
            root,
            advice="the demo dataset is regenerated when its options change; move those files "
            "out of it, or give the demo another folder (dataset_root)",
        )
    with atomic_dir(root, overwrite=True) as tmp:
        ann_id = 1
        for split, n in counts.items():
            rng = np.random.default_rng(
                [seed, _SPLIT_SEEDS.get(split, len(_SPLIT_SEEDS)), DEMO_VERSION]
            )
            (tmp / split / "images").mkdir(parents=True)
            images, anns = [], []
            for i in range(n):
                image, objects = generate_scene(rng, size)
                image_id = i + 1
                name = f"{image_id:05d}.png"
                Image.fromarray(image).save(tmp / split / "images" / name)
                images.append({"id": image_id, "file_name": name, "height": size, "width": size})
                for c, m in objects:
                    ys, xs = np.nonzero(m)
                    x0, y0 = int(xs.min()), int(ys.min())
                    bbox = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
                    anns.append(
                        {
                            "id": ann_id,
                            "image_id": image_id,
                            "category_id": c + 1,
                            "segmentation": encode_mask(m),
                            "area": int(m.sum()),
                            "bbox": bbox,
                            "iscrowd": 0,
                        }
                    )
                    ann_id += 1
            coco = {
                "info": {
                    "description": f"samtune demo v{DEMO_VERSION}, seed {seed}",
                    "version": DEMO_VERSION,
                },
                "licenses": [],
                "images": images,
                "annotations": anns,
                "categories": categories,
            }
            (tmp / split / "annotations.json").write_text(dump_json(coco))
        meta = {"version": DEMO_VERSION, "seed": seed, "size": size, "counts": counts}
        (tmp / "demo.json").write_text(dump_json(meta, indent=2))
    return root


def ensure_demo_dataset(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    size: int = 128,
    counts: dict[str, int] | None = None,
) -> Path:
    """Return the demo dataset folder, generating it on first use (and reusing it after).

    The folder is ``root`` or :func:`default_demo_root` (seed, size, counts). An existing folder is reused
    when its ``demo.json`` matches (version, seed, size, counts); otherwise it is regenerated.
    """
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    root = Path(root) if root is not None else default_demo_root(seed, size, counts)
    meta_file = root / "demo.json"
    want = {"version": DEMO_VERSION, "seed": seed, "size": size, "counts": counts}
    if meta_file.is_file():
        try:
            if read_json(meta_file, what="demo dataset record") == want:
                return root
        except InputError:  # unreadable: the dataset is written again
            pass
    return write_demo_dataset(root, seed=seed, size=size, counts=counts)
