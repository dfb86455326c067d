"""Image-embedding cache for strategies that leave SAM's image encoder frozen.

With a frozen encoder an image's embedding never changes during training, so it is computed
once and read back in later epochs: from memory while it fits in ``memory_mb``, else from disk
(one safetensors file per image, written atomically).

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

from ..io import atomic_write


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
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._memory_bytes = 0
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
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
                    tensor = load_file(path)["embedding"]
                except Exception:  # unreadable file: recompute rather than fail the run
                    tensor = None
                if tensor is not None:
                    tensor = tensor.to(self.device)
                    self._remember(key, tensor)
                    self.hits += 1
                    return tensor
        self.misses += 1
        return None

    def put(self, key: str, embedding: torch.Tensor) -> None:
        """Store one embedding, (C, h, w); written to disk atomically."""
        embedding = embedding.detach().contiguous()
        self._remember(key, embedding.to(self.device))
        if self.directory is not None:
            path = self._path(key)
            if not path.exists():
                from safetensors.torch import save_file

                with atomic_write(path) as tmp:
                    save_file({"embedding": embedding.cpu()}, str(tmp))

    def _remember(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self.memory_budget or key in self._memory:
            return
        while self._memory and self._memory_bytes + size > self.memory_budget:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= old.numel() * old.element_size()
        self._memory[key] = tensor
        self._memory_bytes += size

    def __len__(self) -> int:
        return len(self._memory)
