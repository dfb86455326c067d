"""Dataset recipes: where each dataset comes from, its licence, layout and splits.

``load_dataset(name, split, root=None, **options)`` is the one entry point. ``root`` is the
folder that holds (or will hold) the dataset; by default ``$SAMTUNE_DATA/<folder>`` with
``SAMTUNE_DATA`` defaulting to ``~/.cache/samtune/datasets`` (``$XDG_CACHE_HOME/samtune/datasets``
where that variable is set).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, MissingFileError, UnknownNameError, quote_untrusted
from ..io import atomic_write, dump_json
from .coco import ON_ERROR, InstanceDataset, read_annotations, read_coco_json
from .coco_schema import is_int
from .synthetic import ensure_demo_dataset, user_cache_dir
from .tool_exports import check_tool_export, load_tool_export, tool_export_name


@dataclass(frozen=True)
class RemoteFile:
    """One file a recipe downloads.

    ``url`` may be overridden with the environment variable ``env`` (for mirrors and tests).
    ``md5``/``sha256`` are the publisher's checksums when it gives them (None otherwise).
    """

    url: str
    filename: str
    env: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    extract: bool = True

    def resolved_url(self) -> str:
        return os.environ.get(self.env) or self.url


@dataclass(frozen=True)
class Recipe:
    """Everything a user needs to obtain and read one dataset."""

    name: str
    title: str
    folder: str
    splits: tuple[str, ...]
    source: str
    licence: str
    citation: str
    layout: str
    files: tuple[RemoteFile, ...] = ()
    manual: str = ""
    split_alias: dict[str, str] = field(default_factory=dict)
    num_classes: int | None = None

    def default_root(self) -> Path:
        return data_home() / self.folder

    @property
    def prompt_map(self) -> dict[str, str]:
        """``{category name: phrase}`` SAM 3 is asked by (``prompt: text``); see ``data.phrases``."""
        from .phrases import PROMPT_MAPS

        return dict(PROMPT_MAPS.get(self.name, {}))


def data_home() -> Path:
    """``$SAMTUNE_DATA``, default ``$XDG_CACHE_HOME/samtune/datasets``, else
    ``~/.cache/samtune/datasets``."""
    if os.environ.get("SAMTUNE_DATA"):
        return Path(os.environ["SAMTUNE_DATA"]).expanduser()
    return user_cache_dir() / "datasets"


_TRASHCAN_FILE = RemoteFile(
    url="https://conservancy.umn.edu/bitstream/handle/11299/214865/dataset.zip?sequence=12&isAllowed=y",
    filename="dataset.zip",
    env="SAMTUNE_TRASHCAN_URL",
)
_TRASHCAN_COMMON = dict(
    folder="trashcan",
    splits=("train", "val", "test"),
    # val and train both come from the official train file (val: whole videos held out of
    # it, see trashcan_split_ids); test is the official val
    split_alias={"val": "train", "test": "val"},
    source="https://conservancy.umn.edu/handle/11299/214865 (DOI 10.13020/g1gx-y834)",
    licence="free for academic use; commercial use needs JAMSTEC's permission (see the "
    "record page)",
    citation="Hong, Fulton, Sattar. TrashCan: A Semantically-Segmented Dataset towards Visual "
    "Detection of Marine Debris. arXiv:2007.08097, 2020.",
    files=(_TRASHCAN_FILE,),
    manual=(
        "open https://conservancy.umn.edu/handle/11299/214865, download dataset.zip and put it "
        "in {root}, then run `samtune data download {name} --root {root}` to verify and extract it"
    ),
)

RECIPES: dict[str, Recipe] = {
    "trashcan": Recipe(
        name="trashcan",
        title="TrashCan 1.0, instance version (22 classes; test: the official val; val: "
        "videos held out of train)",
        layout="{root}/[dataset/]instance_version/{instances_train_trashcan.json, "
        "instances_val_trashcan.json, train/, val/}",
        num_classes=22,
        **_TRASHCAN_COMMON,
    ),
    "trashcan-material": Recipe(
        name="trashcan-material",
        title="TrashCan 1.0, material version (16 classes; test: the official val; val: "
        "videos held out of train)",
        layout="{root}/[dataset/]material_version/{instances_train_trashcan.json, "
        "instances_val_trashcan.json, train/, val/}",
        num_classes=16,
        **_TRASHCAN_COMMON,
    ),
    "zerowaste": Recipe(
        name="zerowaste",
        title="ZeroWaste-f (4 classes: rigid_plastic, cardboard, metal, soft_plastic)",
        folder="zerowaste",
        splits=("train", "val", "test"),
        source="https://zenodo.org/records/6412647 (ZeroWaste project, http://ai.bu.edu/zerowaste/)",
        licence="the GitHub README says CC BY-NC 4.0; the Zenodo record states its own "
        "licence, which differs: check the record before use",
        citation="Bashkirova et al. ZeroWaste Dataset: Towards Deformable Object Segmentation "
        "in Cluttered Scenes. CVPR 2022.",
        layout="{root}/<any folder>/{train,val,test}/{labels.json, data/}",
        files=(
            RemoteFile(
                url="https://zenodo.org/records/6412647/files/zerowaste-f-final.zip?download=1",
                filename="zerowaste-f-final.zip",
                env="SAMTUNE_ZEROWASTE_URL",
            ),
        ),
        manual=(
            "download zerowaste-f-final.zip from https://zenodo.org/records/6412647, put it in "
            "{root}, then run `samtune data download {name} --root {root}`"
        ),
        num_classes=4,
    ),
    "taco": Recipe(
        name="taco",
        title="TACO, Trash Annotations in Context (60 classes, 28 supercategories)",
        folder="taco",
        splits=("train", "val", "test"),
        source="https://github.com/pedropro/TACO (images: the TACO.zip archive on Zenodo, "
        "DOI 10.5281/zenodo.3587843; originally Flickr and OpenLitterMap)",
        licence="repository MIT; each image under its own licence (Flickr's, OpenLitterMap's "
        "ODbL for 466 images, none stated for 715: see the 'license' field of each image)",
        citation="Proença, Simões. TACO: Trash Annotations in Context for Litter Detection. "
        "arXiv:2003.06975, 2020.",
        layout="{root}/data/annotations.json, {root}/data/batch_N/*.jpg, "
        "{root}/splits-seed<seed>.json (written on first use: 80/10/10 by image)",
        files=(
            RemoteFile(
                url="https://raw.githubusercontent.com/pedropro/TACO/master/data/annotations.json",
                filename="data/annotations.json",
                env="SAMTUNE_TACO_URL",
                extract=False,
            ),
        ),
        manual=(
            "download TACO.zip from https://zenodo.org/records/3587843 and extract its "
            "data/batch_N folders into ROOT/data/ beside annotations.json (or clone "
            "https://github.com/pedropro/TACO and run its download.py), then pass --root ROOT"
        ),
        num_classes=60,
    ),
    "demo": Recipe(
        name="demo",
        title="samtune demo: synthetic waste-like scenes (4 classes, 128 px), generated locally",
        folder="demo",
        splits=("train", "val", "test"),
        source="generated by samtune.data.synthetic (no download)",
        licence="same as samtune (Apache-2.0)",
        citation="",
        layout="{root}/{train,val,test}/{annotations.json, images/}",
        num_classes=4,
    ),
    "coco": Recipe(
        name="coco",
        title="any COCO-format instance dataset on disk",
        folder="coco",
        splits=(),
        source="your own files",
        licence="yours",
        citation="",
        layout="{root}/annotations/instances_<split>.json + {root}/<split>/ (or images/<split>/), "
        "or {root}/<split>/{annotations.json|labels.json} + {root}/<split>/{images|data}/; "
        "or pass images= and annotations= explicitly",
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (UnknownNameError listing the known ones otherwise)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown dataset {quote_untrusted(name)}; known datasets: {', '.join(RECIPES)} "
            "(use 'coco' with root= for your own COCO-format folder)"
        ) from None


def dataset_label(name: str) -> str:
    """``name`` as one folder-name word: ``label-studio:exports/p1.json`` -> ``label-studio-p1``
    (a recipe name is its own label)."""
    tool, sep, path = name.partition(":")
    return f"{tool}-{Path(path).stem}" if sep else name


def list_datasets() -> dict[str, str]:
    """Recipe name -> one-line description."""
    return {name: r.title for name, r in RECIPES.items()}


def _fill(text: str, root: Path, name: str) -> str:
    return text.replace("{root}", str(root)).replace("{name}", name)


def _missing(recipe: Recipe, root: Path, looked_for: str) -> MissingFileError:
    how = f"run `samtune data download {recipe.name} --root {root}`"
    if recipe.manual:
        how += " or, by hand, " + _fill(recipe.manual, root, recipe.name)
    return MissingFileError(
        f"{recipe.title}: {looked_for} not found in {str(root)!r}; {how}. "
        f"Expected layout: {_fill(recipe.layout, root, recipe.name)}"
    )


def _find_dir(root: Path, name: str, depth: int = 3) -> Path | None:
    """The first folder called ``name`` within ``depth`` levels below ``root`` (sorted walk)."""
    frontier = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            if (d / name).is_dir():
                return d / name
            if d.is_dir():
                nxt.extend(
                    sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                )
        frontier = nxt
    return None


def resolve_split(recipe: Recipe, split: str) -> str:
    if recipe.splits and split not in recipe.splits:
        raise UnknownNameError(
            f"dataset {recipe.name!r} has no split {split!r}; choose one of {', '.join(recipe.splits)}"
        )
    return recipe.split_alias.get(split, split)


def dataset_paths(name: str, split: str, root: str | Path | None = None) -> tuple[Path, Path]:
    """(annotation file, image folder) of a recipe's split, or MissingFileError with the fix."""
    recipe = get_recipe(name)
    split = resolve_split(recipe, split)
    root = Path(root).expanduser() if root is not None else recipe.default_root()
    if name in ("trashcan", "trashcan-material"):
        version = "instance_version" if name == "trashcan" else "material_version"
        base = _find_dir(root, version) if root.is_dir() else None
        if base is None:
            raise _missing(recipe, root, f"folder {version!r}")
        ann, images = base / f"instances_{split}_trashcan.json", base / split
    elif name == "zerowaste":
        base = _find_split_with(root, split, "labels.json")
        if base is None:
            raise _missing(recipe, root, f"'{split}/labels.json'")
        ann, images = base / "labels.json", base / "data"
    elif name == "taco":
        ann, images = root / "data" / "annotations.json", root / "data"
        if not ann.is_file():
            raise _missing(recipe, root, "'data/annotations.json'")
    else:
        raise UnknownNameError(f"dataset {name!r} has no fixed layout")
    if not ann.is_file():
        raise _missing(recipe, root, f"{str(ann.relative_to(root))!r}")
    if not images.is_dir():
        raise _missing(recipe, root, f"image folder {str(images.relative_to(root))!r}")
    return ann, images


def _find_split_with(root: Path, split: str, filename: str, depth: int = 3) -> Path | None:
    if not root.is_dir():
        return None
    frontier = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            if (d / split / filename).is_file():
                return d / split
            nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
        frontier = nxt
    return None


def _coco_paths(root: Path, split: str) -> tuple[Path, Path]:
    candidates = [
        (root / "annotations" / f"instances_{split}.json", root / split),
        (root / "annotations" / f"instances_{split}.json", root / "images" / split),
        (root / split / "annotations.json", root / split / "images"),
        (root / split / "labels.json", root / split / "data"),
        (root / f"{split}.json", root / "images"),
        (root / f"{split}.json", root / split),
    ]
    for ann, images in candidates:
        if ann.is_file() and images.is_dir():
            return ann, images
    tried = "; ".join(f"{a.relative_to(root)} + {i.relative_to(root)}/" for a, i in candidates)
    raise MissingFileError(
        f"no COCO split {split!r} found in {str(root)!r} (tried {tried}); pass "
        "annotations=<file.json> and images=<folder> explicitly"
    )


# --------------------------------------------------------------------------- TACO split


def taco_split_ids(root: Path, split: str, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> list[int]:
    """Image ids of a TACO split: a seeded shuffle by image, saved once in ``splits-seed<seed>.json``.

    Like TACO's own ``split_dataset.py``, the split is by image (an image's annotations stay
    together); the saved file makes it reproducible and shareable.
    """
    import numpy as np

    split_file = root / f"splits-seed{seed}.json"
    if split_file.is_file():
        splits = read_annotations(split_file, "TACO split file")
        if not isinstance(splits, dict) or not isinstance(splits.get(split), list):
            raise DataError(
                f"TACO split file {str(split_file)!r} has no list {split!r}; it is not one "
                "samtune wrote: move it away and a new one is written"
            )
    else:
        data = read_coco_json(root / "data" / "annotations.json")
        ids = sorted(_image_ids(data))
        order = np.random.default_rng(seed).permutation(len(ids))
        n_train = int(round(fractions[0] * len(ids)))
        n_val = int(round(fractions[1] * len(ids)))
        shuffled = [ids[i] for i in order]
        splits = {
            "seed": seed,
            "train": sorted(shuffled[:n_train]),
            "val": sorted(shuffled[n_train : n_train + n_val]),
            "test": sorted(shuffled[n_train + n_val :]),
        }
        with atomic_write(split_file) as tmp:
            tmp.write_text(dump_json(splits))
    return splits[split]


# --------------------------------------------------------------------------- TrashCan split

# TrashCan's frames are named vid_<video>_frame<frame>.jpg; the official val holds frames of the
# same videos as train, so samtune's val holds out whole videos of the official train.
_TRASHCAN_VIDEO = re.compile(r"^(vid_\d+)_frame\d+")
TRASHCAN_VAL_FRACTION = 0.1


def trashcan_split_ids(annotation_file: Path, split: str, seed: int = 0) -> list[int]:
    """Image ids of TrashCan's ``train`` or ``val``, both carved from the official train file.

    Frames are grouped by video (the ``vid_<n>`` of ``vid_<n>_frame<m>.jpg``; a file named
    otherwise is a group of its own); the videos are shuffled with ``seed`` and taken in that
    order into val until it holds at least :data:`TRASHCAN_VAL_FRACTION` of the images (at
    least one video). No video has frames on both sides, so a model is selected on videos it
    never trained on; the official val, scored as ``test``, is never used for selection.
    """
    import numpy as np

    data = read_coco_json(annotation_file)
    groups: dict[str, list[int]] = {}
    for rec in data["images"]:
        if (
            isinstance(rec, dict)
            and is_int(rec.get("id"))
            and isinstance(rec.get("file_name"), str)
        ):
            stem = Path(rec["file_name"]).name
            match = _TRASHCAN_VIDEO.match(stem)
            groups.setdefault(match.group(1) if match else stem, []).append(int(rec["id"]))
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    held: set[str] = set()
    target = TRASHCAN_VAL_FRACTION * sum(len(v) for v in groups.values())
    for i in order:
        if held and sum(len(groups[n]) for n in held) >= target:
            break
        held.add(names[i])
    chosen = held if split == "val" else set(names) - held
    return sorted(i for n in chosen for i in groups[n])


def _image_ids(data: dict) -> list[int]:
    """The integer ids of the image records (malformed records are the dataset's to report)."""
    return [int(r["id"]) for r in data["images"] if isinstance(r, dict) and is_int(r.get("id"))]


# --------------------------------------------------------------------------- checks

# load_dataset's options: InstanceDataset's, and those of one recipe.
DATASET_OPTIONS = ("categories", "category_map", "min_area", "skip_empty", "on_error",
                   "check_files")  # fmt: skip
RECIPE_OPTIONS = {"demo": ("seed", "size", "counts"), "taco": ("split_seed",),
                  "trashcan": ("split_seed",), "trashcan-material": ("split_seed",),
                  "coco": ("images", "annotations")}  # fmt: skip
# recipes that choose the image ids of their splits themselves
SEEDED_SPLITS = ("taco", "trashcan", "trashcan-material")


def _check_options(name: str, options: dict) -> None:
    known = DATASET_OPTIONS + RECIPE_OPTIONS.get(name, ())
    if name not in SEEDED_SPLITS:
        known += ("image_ids",)
    unknown = sorted(str(k) for k in options if k not in known)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; known options: "
            f"{', '.join(known)}"
        )
    on_error = options.get("on_error", "raise")
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}; found {on_error!r}")


def _no_root(name: str, root: str | Path | None) -> None:
    if root is not None:
        raise ConfigError(
            f"dataset {quote_untrusted(name)} names its export itself; leave root (dataset_root) "
            "unset, and give the image folder as images="
        )


def check_dataset(
    name: str, splits: list[str] | tuple[str, ...], root: str | Path | None = None, **options
) -> None:
    """Check a dataset's name, split names, options and files without reading any of them.

    What :func:`load_dataset` would refuse for these ``splits`` is refused here first, cheaply
    (no image or annotation is read, the demo data is not generated): for a run to fail on a
    wrong name before it loads a model.

    Raises:
        UnknownNameError: an unknown dataset or split.
        ConfigError: an unknown or invalid option.
        MissingFileError: the dataset's files are not there (the message says how to get them).
    """
    if name.startswith("label-studio:"):  # an annotation tool's export, not a recipe
        from .label_studio import check_label_studio

        return check_label_studio(name, splits, root, **options)
    if tool_export_name(name) is not None:
        _no_root(name, root)
        return check_tool_export(name, splits, DATASET_OPTIONS, **options)
    recipe = get_recipe(name)
    _check_options(name, options)
    for split in splits:
        resolve_split(recipe, split)
    if name == "demo":
        return
    if name == "coco":
        images, annotations = options.get("images"), options.get("annotations")
        for what, path in (("annotation file", annotations), ("image folder", images)):
            if path is not None and not Path(path).expanduser().exists():
                raise MissingFileError(f"coco {what} {str(path)!r} does not exist")
        if images is None or annotations is None:
            if root is None:
                raise MissingFileError(
                    "dataset 'coco' needs root=<folder> or both images= and annotations="
                )
            for split in splits:
                _coco_paths(Path(root).expanduser(), split)
        return
    for split in splits:
        dataset_paths(name, split, root)


# --------------------------------------------------------------------------- entry point


def load_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    **options: Any,
) -> InstanceDataset:
    """Load one split of a dataset as an :class:`InstanceDataset` of :class:`Sample`.

    Args:
        name: ``trashcan``, ``trashcan-material``, ``zerowaste``, ``taco``, ``demo``,
            ``coco`` (any COCO-format folder given as ``root``, or ``images=``/``annotations=``),
            or an annotation tool's export ``cvat:PATH``, ``labelme:DIR``... (see
            :mod:`samtune.data.tool_exports`: splits ``train``/``val``/``test``/``all``,
            options ``images``, ``classes``, ``boxes``, ``keep_crowd``, ``split_seed``), or
            ``label-studio:EXPORT.json`` (a Label Studio JSON export; ``root`` or ``images=``
            is the image folder; see :func:`samtune.data.label_studio.read_label_studio`).
        split: ``train``, ``val`` or ``test`` (TrashCan: ``test`` is the official val, ``val``
            whole videos held out of the official train, see :func:`trashcan_split_ids`).
        root: the dataset's folder (default ``$SAMTUNE_DATA/<name>``; for ``demo`` the cache
            ``~/.cache/samtune/demo-<version>-<seed>``, or under ``$XDG_CACHE_HOME/samtune``).
        **options: passed to :class:`InstanceDataset` (``categories``, ``category_map``,
            ``min_area``, ``skip_empty``, ``on_error``, ``check_files``); ``demo`` also takes
            ``seed``, ``size`` and ``counts``; ``taco``, ``trashcan`` and ``trashcan-material``
            take ``split_seed``; ``coco`` takes
            ``images`` and ``annotations``.

    Raises:
        UnknownNameError: an unknown dataset or split.
        ConfigError: an unknown or invalid option.
        MissingFileError: the data is not there; the message names the folder searched and
            the ``samtune data download`` command (or the manual steps) that fixes it.
        DataError: malformed annotations (see ``on_error``).
    """
    if name.startswith("label-studio:"):  # root: the image folder
        from .label_studio import load_label_studio

        return load_label_studio(name, split, root, **options)
    if tool_export_name(name) is not None:
        _no_root(name, root)
        return load_tool_export(name, split, known=DATASET_OPTIONS, **options)
    recipe = get_recipe(name)
    _check_options(name, options)
    label = f"{name}/{split}"
    if name == "demo":
        resolve_split(recipe, split)
        demo_opts = {k: options.pop(k) for k in ("seed", "size", "counts") if k in options}
        folder = ensure_demo_dataset(root, **demo_opts)
        return InstanceDataset(
            folder / split / "annotations.json", folder / split / "images", name=label, **options
        )
    if name == "coco":
        images = options.pop("images", None)
        annotations = options.pop("annotations", None)
        if images is None or annotations is None:
            if root is None:
                raise MissingFileError(
                    "dataset 'coco' needs root=<folder> or both images= and annotations="
                )
            ann_path, img_path = _coco_paths(Path(root).expanduser(), split)
            annotations = annotations or ann_path
            images = images or img_path
        return InstanceDataset(annotations, images, name=label, **options)
    if name == "taco":
        split_seed = int(options.pop("split_seed", 0))
        ann, images = dataset_paths(name, split, root)
        taco_root = ann.parent.parent
        ids = taco_split_ids(taco_root, resolve_split(recipe, split), split_seed)
        return InstanceDataset(ann, images, name=label, image_ids=ids, **options)
    ann, images = dataset_paths(name, split, root)
    if name in ("trashcan", "trashcan-material"):
        split_seed = int(options.pop("split_seed", 0))
        if split in ("train", "val"):
            options["image_ids"] = trashcan_split_ids(ann, split, split_seed)
    return InstanceDataset(ann, images, name=label, **options)
