"""The one image reader: files and in-memory images become HxWx3 uint8 RGB the same way.

:func:`load_image` reads a file (EXIF orientation applied, Pillow's decompression-bomb limit
kept, one clear error for a missing, folder or unreadable path); :func:`read_oriented` also
says how it was oriented (the COCO reader needs it to turn masks); :func:`pil_to_rgb_uint8`
is the one mode conversion (16-bit, float, palette, CMYK, alpha), used for files and for PIL
images given in memory alike, so a 16-bit PNG gives the same pixels as a path and as a PIL
image; :func:`read_image` takes what the public API accepts (a path, an array, a PIL image, a
tensor) and says how messages name it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..errors import DataError, InputError, MissingFileError, SamtuneWarning

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB, with its EXIF orientation applied.

    Grayscale, palette, CMYK and RGBA images are converted to RGB (alpha is dropped);
    16-bit images are scaled to 8 bits (value / 257); float images are clipped to 0-255
    (or scaled by 255 when they lie in 0-1).

    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is kept: an image over
    it is read with one :class:`~samtune.errors.SamtuneWarning` naming it, one over twice it is
    refused (``DataError``).

    Raises:
        MissingFileError: the file does not exist.
        DataError: the file is not a readable image (corrupt or truncated), or has more pixels
            than Pillow reads.
    """
    return read_oriented(path)[0]


def read_oriented(path: str | Path) -> tuple[np.ndarray, tuple[int, int], int | None]:
    """:func:`load_image`, plus the stored (H, W) before the EXIF orientation was applied and
    the ``PIL.Image.Transpose`` method that applied it (None when the file has no orientation).

    Raises:
        MissingFileError, DataError: as :func:`load_image`.
    """
    from PIL import ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"image {str(path)!r} is a folder; give image files")
    if not path.is_file():
        raise MissingFileError(
            f"image {str(path)!r} does not exist; check the image folder ({str(path.parent)!r})"
        )
    try:
        with _no_bomb_warning(), Image.open(path) as img:
            _note_if_huge(path, img.size)
            img.load()
            stored = (img.height, img.width)
            method = _exif_transpose_method(img.getexif().get(_ORIENTATION, 1))
            img = ImageOps.exif_transpose(img)
            return pil_to_rgb_uint8(img), stored, method
    except Image.DecompressionBombError:
        raise DataError(
            f"image {str(path)!r} has more than {2 * Image.MAX_IMAGE_PIXELS} pixels, twice "
            "Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS); refusing it. Shrink "
            "the image, or raise that limit in Python if you trust the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"image {str(path)!r} cannot be read ({exc}); the file is corrupt, truncated or not "
            "an image: replace it or leave it out"
        ) from exc  # the cause is the reader's own words (InstanceDataset's warning uses them)


_ORIENTATION = 0x0112  # the EXIF tag


def _exif_transpose_method(orientation: int):
    """The ``PIL.Image.Transpose`` that ``ImageOps.exif_transpose`` applies for ``orientation``."""
    from PIL.Image import Transpose

    return {
        2: Transpose.FLIP_LEFT_RIGHT,
        3: Transpose.ROTATE_180,
        4: Transpose.FLIP_TOP_BOTTOM,
        5: Transpose.TRANSPOSE,
        6: Transpose.ROTATE_270,
        7: Transpose.TRANSVERSE,
        8: Transpose.ROTATE_90,
    }.get(orientation)


@contextlib.contextmanager
def _no_bomb_warning() -> Iterator[None]:
    """Silence Pillow's multi-line DecompressionBombWarning (:func:`_note_if_huge` says it)."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _note_if_huge(path: Path, size: tuple[int, int]) -> None:
    """One SamtuneWarning for an image over Pillow's decompression-bomb limit (read anyway)."""

    limit = Image.MAX_IMAGE_PIXELS
    if limit and size[0] * size[1] > limit:
        warnings.warn(
            f"image {str(path)!r} is {size[0]}x{size[1]} ({size[0] * size[1]} pixels), more "
            f"than Pillow's decompression-bomb limit of {limit}; reading it anyway (it needs "
            "much memory; refused past twice the limit)",
            SamtuneWarning,
            stacklevel=3,
        )


def _unreadable(path: Path) -> str | None:
    """Why ``path`` is not an image PIL can open (a cheap check: header and structure), or None.

    A file truncated in the middle of its pixel data can pass; it fails when decoded.
    """

    try:
        with _no_bomb_warning(), Image.open(path) as img:
            img.verify()
    except Exception as exc:  # PIL raises many types for a bad file
        return f"{type(exc).__name__}: {exc}"
    return None


def pil_to_rgb_uint8(img) -> np.ndarray:
    """A PIL image of any mode as HxWx3 uint8 RGB: the one conversion, for files and images
    given in memory alike. 16-bit gray is scaled by 1/257 (mode ``I`` up to 255 is kept),
    float gray in [0, 1] by 255, palettes through RGBA, everything else by PIL's ``convert``."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "I" and arr.max(initial=0) <= 255:
            scaled = arr
        else:
            scaled = arr / 257.0
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if mode == "P" else img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def to_rgb_uint8(image) -> np.ndarray:
    """Accept an HxWx3 uint8 array, a PIL image or a (3,H,W) uint8 tensor; return HxWx3 uint8."""
    if torch.is_tensor(image):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] == 3:
            image = image.permute(1, 2, 0)
        image = image.numpy()
    elif not isinstance(image, np.ndarray):  # PIL: as a file of the same pixels is read
        image = pil_to_rgb_uint8(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, found shape {image.shape} dtype {image.dtype}; "
            "load images with samtune.data.images.load_image to convert grayscale/RGBA/16-bit"
        )
    return image


def read_image(
    image: np.ndarray | PILImage | torch.Tensor | str | os.PathLike,
) -> tuple[np.ndarray, str]:
    """An image path, HxWx3 uint8 array, PIL image or (3, H, W) uint8 tensor as HxWx3 uint8
    RGB, and how messages name it ("image 'a.png'" or "the image").

    Raises:
        MissingFileError, InputError, DataError: as :func:`load_image`; InputError for an
            array that is not HxWx3 uint8.
    """
    name = "the image"
    if isinstance(image, (str, os.PathLike)):
        name = f"image {str(image)!r}"
        image = load_image(image)
    try:
        return to_rgb_uint8(image), name
    except (ValueError, AttributeError) as exc:
        raise InputError(str(exc)) from None
