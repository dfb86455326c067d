"""The Hugging Face hub, in one place: is a source a local path or a hub id, and the network.

Without a network, ``huggingface_hub`` retries each request with backoff for ~25 s and logs
every retry. :func:`hub_fetch` probes the endpoint once instead, so a hub id resolves from the
local cache at once or fails with one :class:`~samtune.errors.OfflineError` that says what to
do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import OfflineError

T = TypeVar("T")

_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".json", ".yaml")


def looks_like_local_path(text: str) -> bool:
    """Whether a source that does not exist was meant as a local path rather than a hub id.

    A hub id is ``name`` or ``owner/name``. Anything else is a path: it starts with ``.``,
    ``/`` or ``~``, has a backslash, two or more slashes, or a file suffix, or its first
    component is an existing local folder (``runs/lora-demoo`` with ``runs/`` present is a
    typo, not a hub repository).
    """
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1:
        return True
    if text.endswith(_FILE_SUFFIXES):
        return True
    return "/" in text and Path(text.split("/", 1)[0]).expanduser().is_dir()


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network at all."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within ``timeout``."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_fetch(repo_id: str, what: str, fetch: Callable[[bool], T], alternatives: str) -> T:
    """Run ``fetch(local_files_only)`` for hub repository ``repo_id``; offline, fail clearly.

    Args:
        repo_id: the hub id.
        what: what is being fetched, for the message ("model", "adapter").
        fetch: calls ``huggingface_hub`` / ``from_pretrained`` with ``local_files_only``.
        alternatives: what else the user can pass, ending the message.

    Raises:
        OfflineError: not in the local cache and the hub cannot be reached or is switched off.
        Whatever ``fetch`` raises otherwise (``RepositoryNotFoundError`` included).
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = offline_mode()
    try:
        return fetch(not offline and not hub_reachable())
    except RepositoryNotFoundError:
        raise
    except (LocalEntryNotFoundError, EntryNotFoundError, OSError, ConnectionError):
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise OfflineError(
            f"cannot load {what} {repo_id!r}: it is not a local path, it is not in the local "
            f"Hugging Face cache, and {why}. Download it once with network access "
            f"(`huggingface-cli download {repo_id}`), or pass {alternatives}"
        ) from None
