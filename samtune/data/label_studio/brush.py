"""Label Studio's brush RLE: the run-length code of its ``brushlabels`` results.

Format (``@thi.ng/rle-pack``, which Label Studio's editor uses; ``label_studio_converter.brush``
is its Python side): a big-endian bit stream of

* 32 bits: the number of values ``n`` (H x W x 4: the mask as an RGBA image, row-major);
* 5 bits: the word size minus 1 (8 for every brush Label Studio writes);
* 4 x 4 bits: the four run-length field sizes minus 1 (``[3, 4, 8, 16]``);
* then blocks until ``n`` values are out: 1 bit ``x``, 2 bits choosing a field size ``s``,
  ``s`` bits ``k``; ``x = 1``: the next word repeated ``k + 1`` times; ``x = 0``: ``k + 1``
  literal words;
* zero bits up to a whole byte.

In the JSON it is a list of the bytes as integers (``value.rle``), beside
``original_width`` / ``original_height``. The mask is the alpha channel (> 0 is inside).

:func:`encode_mask` writes exactly the bytes of ``label_studio_converter.brush.mask2rle(mask *
255)`` (including that encoder's quirks: a literal block per run of one, runs over 256 written
with 16-bit counts, and a whole zero byte of padding when the bits fill the last byte), and
:func:`decode_rle` reads whatever the editor or that converter writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import DataError

HEADER_BITS = 32 + 5 + 4 * 4
RLE_SIZES = (3, 4, 8, 16)
WORD_SIZE = 8
MAX_RUN = 1 << 16


def encode_mask(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE of an HxW mask (bool, or uint8 whose non-zero is inside).

    Returns:
        The bytes as a list of ints, as ``value.rle`` of a ``brushlabels`` result: inside pixels
        are 255 in all four RGBA channels, outside 0.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DataError(f"a brush mask must be HxW; found shape {mask.shape}")
    values = np.repeat(np.where(mask.ravel() != 0, 255, 0).astype(np.int64), 4)
    return encode_values(values)


def encode_values(values: np.ndarray) -> list[int]:
    """Brush RLE of a flat array of 0-255 words (the encoder of ``label_studio_converter``)."""
    values = np.asarray(values, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError("brush RLE words must lie in 0..255")
    header = (values.size << 21) | ((WORD_SIZE - 1) << 16)
    for i, size in enumerate(RLE_SIZES):
        header |= (size - 1) << (12 - 4 * i)
    tokens, widths = _run_tokens(values)
    bits = _pack_fields(np.append(header, tokens), np.append(HEADER_BITS, widths))
    if bits.size % 8 == 0:  # the converter pads a whole byte when none is needed
        bits = np.concatenate([bits, np.zeros(8, np.uint8)])
    return np.packbits(bits).tolist()


def _run_tokens(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One (token, bit width) per block, in order: ``x | size index | count - 1 | word``."""
    if values.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)
    lengths = np.diff(np.append(-1, ends))
    words = values[ends]
    index = np.select([lengths <= 8, lengths <= 16, lengths <= 256], [0, 1, 2], 3)
    # runs over 65536: chunks of 65536, then the rest, every chunk with a 16-bit count
    chunks = np.where(index == 3, -(-lengths // MAX_RUN), 1)
    run = np.repeat(np.arange(lengths.size), chunks)
    first = np.cumsum(chunks) - chunks
    done = (np.arange(run.size) - first[run]) * MAX_RUN
    counts = np.minimum(lengths[run] - done, MAX_RUN)
    index, words = index[run], words[run]
    size = np.asarray(RLE_SIZES, np.int64)[index]
    single = lengths[run] == 1  # a literal block of one word: x = 0, size 3, count 0
    flag = np.where(single, 0, 1)
    tokens = (flag << (2 + size + 8)) | (index << (size + 8)) | ((counts - 1) << 8) | words
    return tokens, 3 + size + 8


def _pack_fields(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The bits (uint8 0/1, most significant first) of each value in its width (<= 64)."""
    shifts = np.arange(63, -1, -1, dtype=np.uint64)
    bits = ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    keep = np.arange(64)[None, :] >= (64 - widths)[:, None]
    return bits[keep]


def decode_rle(rle: Sequence[int] | bytes, *, count: int | None = None) -> np.ndarray:
    """The flat uint8 words of a Label Studio brush RLE (``label_studio_converter.brush.decode_rle``).

    Args:
        rle: the bytes, as a list of ints (``value.rle``) or ``bytes``.
        count: the number of words expected (H x W x 4); checked against the header.

    Raises:
        DataError: not a list of bytes, a header that disagrees with ``count``, a word size over
            8 bits, or a stream that ends early or overruns its count.
    """
    data = _as_bytes(rle)
    reader = _BitReader(data)
    num, word_size = reader.read(32), reader.read(5) + 1
    sizes = [reader.read(4) + 1 for _ in range(4)]
    if count is not None and num != count:
        raise DataError(f"brush RLE holds {num} values; expected {count} (width x height x 4)")
    if word_size > 8:
        raise DataError(f"brush RLE word size is {word_size} bits; Label Studio writes 8")
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = reader.read(1)
        j = i + 1 + reader.read(sizes[reader.read(2)])
        if j > num:
            raise DataError(f"brush RLE block ends at value {j}, past its {num} values")
        if repeat:
            out[i:j] = reader.read(word_size)
        else:
            out[i:j] = [reader.read(word_size) for _ in range(j - i)]
        i = j
    return out


def decode_mask(rle: Sequence[int] | bytes, height: int, width: int) -> np.ndarray:
    """The HxW bool mask of a brush result: its alpha channel > 0."""
    values = decode_rle(rle, count=height * width * 4)
    return values.reshape(height, width, 4)[:, :, 3] > 0


def _as_bytes(rle: Sequence[int] | bytes) -> bytes:
    if isinstance(rle, (bytes, bytearray)):
        return bytes(rle)
    if not isinstance(rle, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in rle
    ):
        raise DataError("a brush 'rle' must be a list of integers 0..255 (bytes)")
    return bytes(rle)


class _BitReader:
    """Big-endian bits of ``data``, read ``n`` (<= 32) at a time."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.total = data, 0, len(data) * 8

    def read(self, n: int) -> int:
        if self.pos + n > self.total:
            raise DataError(
                f"brush RLE ends early: {len(self.data)} bytes hold {self.total} bits, reading "
                f"bit {self.pos + n}; the mask is truncated"
            )
        start = self.pos >> 3
        chunk = int.from_bytes(self.data[start : start + 5], "big")
        span = (min(start + 5, len(self.data)) - start) * 8
        self.pos += n
        return (chunk >> (span - (self.pos - start * 8))) & ((1 << n) - 1)
