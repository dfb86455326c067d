"""Label Studio: its brush RLE (:mod:`.brush`) and its JSON exports as datasets (:mod:`.export`)."""

from __future__ import annotations

from .brush import decode_mask, decode_rle, encode_mask, encode_values
from .export import (
    PREFIX,
    check_label_studio,
    load_label_studio,
    read_label_studio,
    resolve_image,
)

__all__ = [
    "PREFIX",
    "check_label_studio",
    "decode_mask",
    "decode_rle",
    "encode_mask",
    "encode_values",
    "load_label_studio",
    "read_label_studio",
    "resolve_image",
]
