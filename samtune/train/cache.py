"""Image-embedding cache for strategies that leave SAM's image encoder frozen.

With a frozen encoder an image's embedding never changes during training, so it is computed
once and read back in later epochs: from memory while it fits in ``memory_mb``, else from disk
(one safetensors file per image, written atomically). An entry is whatever the family's
decoder consumes of one image (:data:`samtune.models.sam_ops.Embeddings` without the batch axis): a
tensor for SAM, a tuple of tensors for SAM-HQ and SAM 2.

The cache key is a SHA-256 of everything that determines the embedding:

* the fingerprint of the encoder weights (:func:`samtune.models.fingerprint` of
  ``model.vision_encoder``),
* the preprocessing (:class:`samtune.models.PreprocessConfig`: size, mean, std), plus
  ``extra`` (anything else a caller folds in),
* the image bytes (the file the dataset read, or the decoded pixels).

Change any of them and the key changes, so a stale embedding can never be served.
Image augmentation changes the pixels every epoch: the training loop then turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write, write_safetensors

Entry = torch.Tensor | tuple[torch.Tensor, ...]
"""One image's cached embedding: a tensor (SAM) or a tuple of tensors (SAM-HQ, SAM 2)."""


def _map(fn, entry: Entry) -> Entry:
    return fn(entry) if torch.is_tensor(entry) else tuple(fn(t) for t in entry)


def _nbytes(entry: Entry) -> int:
    parts = (entry,) if torch.is_tensor(entry) else entry
    return sum(t.numel() * t.element_size() for t in parts)


def _to_file(entry: Entry) -> dict[str, torch.Tensor]:
    """safetensors content: ``embedding`` for a tensor, ``embedding.<i>`` for a tuple's parts."""
    if torch.is_tensor(entry):
        return {"embedding": entry.cpu()}
    return {f"embedding.{i}": t.cpu() for i, t in enumerate(entry)}


def _from_file(tensors: dict[str, torch.Tensor]) -> Entry:
    if "embedding" in tensors:
        return tensors["embedding"]
    return tuple(tensors[f"embedding.{i}"] for i in range(len(tensors)))


def image_digest(data: bytes | Any) -> str:
    """SHA-256 of an image: file bytes, or an array/tensor of pixels (shape and dtype included)."""
    h = hashlib.sha256()
    if isinstance(data, (bytes, bytearray, memoryview)):
        h.update(b"bytes:")
        h.update(data)
    else:
        t = torch.as_tensor(data).contiguous()
        h.update(f"array:{tuple(t.shape)}:{t.dtype}:".encode())
        h.update(t.cpu().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(encoder_fingerprint: str, preprocess: Any, image: str, extra: Any = None) -> str:
    """The cache key of one image's embedding.

    Args:
        encoder_fingerprint: :func:`samtune.models.fingerprint` of ``model.vision_encoder``.
        preprocess: the preprocessing (a ``PreprocessConfig`` or any JSON-able value).
        image: :func:`image_digest` of the image.
        extra: anything else that changes the embedding (JSON-able).
    """
    if hasattr(preprocess, "to_dict"):
        preprocess = preprocess.to_dict()
    payload = json.dumps(
        {"encoder": encoder_fingerprint, "preprocess": preprocess, "image": image, "extra": extra},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class EmbeddingCache:
    """Embeddings by key, in memory (LRU, ``memory_mb`` budget) and on disk under ``directory``.

    ``directory=None`` keeps everything in memory only. The memory tier lives on ``device``
    (default CPU; the training loop uses the model's device, so a cached step copies nothing
    from the host); tensors come back on it in the dtype they were stored in. ``hits`` and
    ``misses`` count lookups.
    """

    def __init__(
        self,
        directory: str | Path | None,
        *,
        memory_mb: float = 1024,
        device: str | torch.device = "cpu",
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.device = torch.device(device)
        self.memory_budget = int(memory_mb * 2**20)
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._memory_bytes = 0
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> Entry | None:
        tensor = self._memory.get(key)
        if tensor is not None:
            self._memory.move_to_end(key)
            self.hits += 1
            return tensor
        if self.directory is not None:
            path = self._path(key)
            if path.is_file():
                from safetensors.torch import load_file

                try:
                    tensor = _from_file(load_file(path))
                except Exception:  # unreadable file: recompute rather than fail the run
                    tensor = None
                if tensor is not None:
                    tensor = _map(lambda t: t.to(self.device), tensor)
                    self._remember(key, tensor)
                    self.hits += 1
                    return tensor
        self.misses += 1
        return None

    def put(self, key: str, embedding: Entry) -> None:
        """Store one image's embedding ((C, h, w), or a tuple); written to disk atomically."""
        embedding = _map(lambda t: t.detach().contiguous(), embedding)
        self._remember(key, _map(lambda t: t.to(self.device), embedding))
        if self.directory is not None:
            path = self._path(key)
            if not path.exists():
                with atomic_write(path) as tmp:
                    write_safetensors(_to_file(embedding), tmp)

    def _remember(self, key: str, tensor: Entry) -> None:
        size = _nbytes(tensor)
        if size > self.memory_budget or key in self._memory:
            return
        while self._memory and self._memory_bytes + size > self.memory_budget:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= _nbytes(old)
        self._memory[key] = tensor
        self._memory_bytes += size

    def __len__(self) -> int:
        return len(self._memory)
