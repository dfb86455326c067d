"""Adapter files: save, load, merge and export what a strategy trained.

An adapter is one file, ``adapter.safetensors``, holding exactly the tensors the strategy
trained (:meth:`Strategy.trainable_state_dict`), with string metadata:

=========================  ===============================================================
``format``                 ``samtune.adapter`` (``format_version`` ``2``)
``strategy``               the strategy's registered name (``lora``)
``strategy_config``        its config, JSON
``strategy_package``       the distribution that provides it (``samtune``, ``samtune-bitfit``)
``base_model``             the base model's source (hub id, path or preset)
``base_family``            its SAM family (``sam``, ``sam-hq``, ``sam2``; absent: ``sam``)
``base_fingerprint``       :func:`samtune.models.fingerprint` of the untouched base model
                           (architecture and weights)
``base_architecture``      :func:`samtune.models.architecture` of the base, JSON
``samtune_version``        the samtune that wrote it
=========================  ===============================================================

Exports: a merged Hugging Face folder of the model's class (``hf``: ``SamModel``,
``SamHQModel`` or ``Sam2Model``, with its processor), a Meta ``segment_anything`` ``.pth``
(``segment-anything``, SAM only), a peft directory (``peft``, for peft-based strategies), and a
folder ready to upload to the Hugging Face hub (``hub``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import (
    AdapterMismatchError,
    AssumptionWarning,
    CheckpointError,
    ConfigError,
    InputError,
    MissingFileError,
    UnknownNameError,
    quote_untrusted,
)
from .io import (
    atomic_write,
    parse_json,
    write_safetensors,
)
from .models.family import SAM, family_of
from .models.hub import hub_fetch, looks_like_local_path
from .models.identity import architecture, base_fingerprint, model_source, weights_fingerprint
from .models.loading import load_model
from .strategies.base import Strategy, applied_strategy, merged_copy
from .strategies.registry import list_strategies, strategy_class

ADAPTER_FILE = "adapter.safetensors"
FORMAT = "samtune.adapter"
FORMAT_VERSION = "2"
# Version 1 fingerprinted the base's weights only; such adapters still load, with a note.
_WEIGHTS_ONLY_VERSIONS = ("1",)


@dataclass
class AdapterFile:
    """An adapter read from disk: its tensors and its string metadata."""

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    @property
    def strategy(self) -> str:
        return self.metadata["strategy"]

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.metadata["strategy_config"])


def require_strategy(model: torch.nn.Module) -> Strategy:
    strategy = applied_strategy(model)
    if strategy is None:
        raise InputError(
            "this model has no strategy applied, so there is no adapter to save; apply one "
            "first (samtune.get_strategy('lora').apply(model)), or load one with "
            "samtune.load_adapter(base, dir)"
        )
    return strategy


def adapter_metadata(model: torch.nn.Module) -> dict[str, str]:
    """The string metadata :func:`save_adapter` writes for ``model``."""
    from importlib.metadata import PackageNotFoundError, version

    strategy = require_strategy(model)
    package = strategy.distribution or "samtune"
    try:
        package_version = version(package)
    except PackageNotFoundError:
        package_version = ""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "strategy": strategy.name,
        "strategy_config": strategy.config.to_json(),
        "strategy_package": package,
        "strategy_package_version": package_version,
        "base_model": model_source(model),
        "base_family": family_of(model).name,
        "base_fingerprint": base_fingerprint(model),
        "base_architecture": json.dumps(architecture(model), sort_keys=True),
        "samtune_version": __version__,
    }


def save_adapter(model: torch.nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``directory/adapter.safetensors``: only the tensors the model's strategy trained.

    Args:
        model: a ``SamModel`` that a strategy was applied to (``strategy.apply(model)``).
        directory: folder to write into (created if needed; other files in it are kept).

    Returns:
        The path of the adapter file.

    Raises:
        InputError: the model has no strategy applied.
    """
    strategy = require_strategy(model)
    metadata = adapter_metadata(model)
    tensors = strategy.trainable_state_dict(model)
    path = Path(directory) / ADAPTER_FILE
    with atomic_write(path) as tmp:
        write_safetensors(tensors, tmp, metadata)  # the same model gives the same bytes
    return path


def _resolve(dir_or_hub_id: str | os.PathLike) -> Path:
    text = os.fspath(dir_or_hub_id)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / ADAPTER_FILE
        if not path.is_file():
            raise MissingFileError(
                f"{text!r} has no {ADAPTER_FILE}; expected a folder written by "
                "samtune.save_adapter (or `samtune fit`)"
            )
        return path
    if path.is_file():
        return path
    if looks_like_local_path(text) or "/" not in text:  # adapters on the hub are user/name
        raise MissingFileError(
            f"adapter {text!r} does not exist; give a folder holding {ADAPTER_FILE}, the file "
            "itself, or a Hugging Face hub id (user/name)"
        )
    return _download(text) / ADAPTER_FILE


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    def fetch(local_only: bool) -> str:
        return snapshot_download(
            repo_id, allow_patterns=[ADAPTER_FILE, "*.json", "*.md"], local_files_only=local_only
        )

    try:
        folder = hub_fetch(repo_id, "adapter", fetch, "the local adapter folder")
    except RepositoryNotFoundError:
        raise MissingFileError(
            f"{repo_id!r} is neither a local adapter folder nor a repository on the Hugging "
            "Face hub"
        ) from None
    path = Path(folder)
    if not (path / ADAPTER_FILE).is_file():
        raise MissingFileError(f"hub repository {repo_id!r} holds no {ADAPTER_FILE}")
    return path


def read_adapter(dir_or_hub_id: str | os.PathLike) -> AdapterFile:
    """Read an adapter file (folder, file, or hub id) without applying it.

    Raises:
        MissingFileError: nothing at that path (or no ``adapter.safetensors`` in the folder).
        CheckpointError: the file is not a readable samtune adapter.
        OfflineError: a hub id that is not cached and cannot be fetched.
    """
    from safetensors import safe_open

    path = _resolve(dir_or_hub_id)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(
            f"{str(path)!r} is not a readable safetensors file ({type(exc).__name__}: {exc}); "
            "the file is corrupt or truncated: write it again with samtune.save_adapter"
        ) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file but not a samtune adapter (metadata format "
            f"{quote_untrusted(metadata.get('format'))}, expected {FORMAT!r}); to use a Hugging Face or Meta "
            "checkpoint, pass it to samtune.load_model instead"
        )
    missing = [k for k in ("strategy", "strategy_config", "base_fingerprint") if k not in metadata]
    if missing:
        raise CheckpointError(f"adapter {str(path)!r} lacks metadata {missing}; write it again")
    version = metadata.get("format_version", "1")
    if version not in (FORMAT_VERSION, *_WEIGHTS_ONLY_VERSIONS):
        raise CheckpointError(
            f"adapter {str(path)!r} has format version {version!r}; this samtune reads "
            f"{', '.join((*_WEIGHTS_ONLY_VERSIONS, FORMAT_VERSION))}: upgrade samtune"
        )
    for key in ("strategy_config", "base_architecture"):
        if key not in metadata:
            continue
        # the one gate: later reads of these keys see text that parsed here, within io's limits
        value = parse_json(
            metadata[key], f"adapter {str(path)!r}: metadata {key!r}", CheckpointError
        )
        if not isinstance(value, dict):
            raise CheckpointError(
                f"adapter {str(path)!r}: metadata {key!r} must be a JSON object, found "
                f"{type(value).__name__}"
            )
    for name in sorted(tensors):
        if not tensors[name].is_floating_point():
            raise CheckpointError(
                f"adapter {str(path)!r}: tensor {name!r} is "
                f"{str(tensors[name].dtype).removeprefix('torch.')}, expected floating point "
                "(float32, float16 or bfloat16); the file was edited: write it again with "
                "samtune.save_adapter"
            )
    bad = [k for k, t in tensors.items() if not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(
            f"adapter {str(path)!r} holds NaN or infinite values in {len(bad)} tensor(s) "
            f"({', '.join(sorted(bad)[:3])}): the run that wrote it diverged; use another "
            "checkpoint's adapter (best/ or a checkpoint)"
        )
    return AdapterFile(path, tensors, metadata)


# A distribution name (PEP 508): the only package text from an adapter that samtune shows
# as a command to run.
PACKAGE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")


def _strategy_from(adapter: AdapterFile) -> Strategy:
    name = adapter.strategy
    try:
        cls = strategy_class(name)
    except UnknownNameError:
        package = adapter.metadata.get("strategy_package") or ""
        hint = (
            f"install it: pip install {package}"
            if PACKAGE_NAME.fullmatch(package)
            else "install the package that provides it"
        )
        raise UnknownNameError(
            f"adapter {str(adapter.path)!r} was trained with strategy {quote_untrusted(name)} "
            f"from package {quote_untrusted(package or 'unknown')}, which is not installed "
            f"(installed strategies: {', '.join(list_strategies())}); {hint}"
        ) from None
    try:
        return cls(json.loads(adapter.metadata["strategy_config"]))
    except ConfigError as exc:  # metadata is untrusted input: say which file it came from
        raise ConfigError(
            f"adapter {str(adapter.path)!r}: metadata strategy_config: {exc}"
        ) from None


def load_adapter(
    base_model: torch.nn.Module | str | os.PathLike, dir_or_hub_id: str | os.PathLike
) -> torch.nn.Module:
    """Apply a saved adapter to its base model and return the tuned ``SamModel``.

    Args:
        base_model: the untouched base, as a ``SamModel`` or any source
            :func:`samtune.load_model` accepts (preset, path, hub id).
        dir_or_hub_id: a folder holding ``adapter.safetensors``, the file itself, or a Hugging
            Face hub id (fetched with ``huggingface_hub.snapshot_download``).

    Returns:
        The base model, modified in place (strategy applied, trained tensors loaded), in the
        mode it was in. Its outputs equal the tuned model's that was saved.

    Raises:
        MissingFileError, CheckpointError, OfflineError: see :func:`read_adapter`.
        AdapterMismatchError: the base model's fingerprint is not the one the adapter was
            trained on (the message names both).
        UnknownNameError: the strategy is not installed (the message names its package).
    """
    adapter = read_adapter(dir_or_hub_id)
    if not isinstance(base_model, torch.nn.Module):
        base_model = load_model(base_model)
    if applied_strategy(base_model) is not None:
        raise InputError(
            "the base model already has a strategy applied; pass a freshly loaded base model"
        )
    _check_family(adapter, base_model)
    expected = adapter.metadata["base_fingerprint"]
    weights_only = adapter.metadata.get("format_version", "1") in _WEIGHTS_ONLY_VERSIONS
    found = weights_fingerprint(base_model) if weights_only else base_fingerprint(base_model)
    if found != expected:
        raise AdapterMismatchError(
            f"adapter {str(adapter.path)!r} was trained on base {expected} "
            f"({quote_untrusted(adapter.metadata.get('base_model', 'unknown'))}), but the model given has "
            f"fingerprint {found} ({model_source(base_model)!r})"
            + _architecture_difference(adapter, base_model)
            + "; load the adapter onto the base model it was trained on"
        )
    if weights_only:
        import warnings

        warnings.warn(
            f"adapter {str(adapter.path)!r} was written by samtune before fingerprints covered "
            "the architecture: its base's weights match, its architecture (decoder heads, "
            "epsilons, preprocessing) was assumed to match too; save it again to record it",
            AssumptionWarning,
            stacklevel=2,
        )
    strategy = _strategy_from(adapter)
    shapes = strategy.trainable_shapes(base_model)  # before any layer is built
    if shapes is not None:
        strategy.check_tensors(shapes, adapter.tensors)
    strategy.apply(base_model)
    strategy.load_trainable_state_dict(base_model, adapter.tensors)
    return base_model


def _check_family(adapter: AdapterFile, base_model: torch.nn.Module) -> None:
    """Refuse a base of another SAM family than the adapter's, naming both."""
    recorded = adapter.metadata.get("base_family", SAM.name)  # before families: SAM only
    family = family_of(base_model)
    if recorded != family.name:
        raise AdapterMismatchError(
            f"adapter {str(adapter.path)!r} was trained on a {recorded} model "
            f"({quote_untrusted(adapter.metadata.get('base_model', 'unknown'))}), but the base given is "
            f"{family.name} ({type(base_model).__name__}, {model_source(base_model)!r}); load "
            "the adapter onto the base model it was trained on"
        )


def load_tuned(
    dir_or_hub_id: str | os.PathLike,
    base: torch.nn.Module | str | os.PathLike | None = None,
) -> torch.nn.Module:
    """The tuned model an adapter describes: :func:`load_adapter` onto ``base``.

    Args:
        dir_or_hub_id: the adapter (folder, file or hub id).
        base: the base model (a ``SamModel`` or a source); default: the base the adapter
            records (``base_model``: the source it was trained from).

    Raises:
        InputError: no ``base`` given and the adapter records none.
        And what :func:`load_adapter` raises.
    """
    if base is None or base == "":
        base = read_adapter(dir_or_hub_id).metadata.get("base_model", "")
        if not base:
            raise InputError(
                f"adapter {os.fspath(dir_or_hub_id)!r} does not record its base model; give it "
                "(--base, or base=)"
            )
    return load_adapter(base, dir_or_hub_id)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _architecture_difference(adapter: AdapterFile, model: torch.nn.Module) -> str:
    """``: architecture differs in a.b (adapter's base 8, given 4)`` or ``""``."""
    recorded = adapter.metadata.get("base_architecture")
    if not recorded:
        return ""
    want, have = _flatten(json.loads(recorded)), _flatten(architecture(model))
    keys = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if not keys:
        return " (same architecture, different weights)"
    shown = ", ".join(
        f"{k} (adapter's base {want.get(k)!r}, given {have.get(k)!r})" for k in keys[:3]
    )
    return f"; the architectures differ in {shown}" + (", ..." if len(keys) > 3 else "")


def merge_adapter(model: torch.nn.Module) -> torch.nn.Module:
    """A plain ``SamModel`` with the trained weights folded in (no extra layers, no strategy).

    The tuned ``model`` is left as it is (the merge works on a copy). LoRA and other peft
    layers fold into the weights they adapt (``W + B A * alpha / r``); ``full``, ``decoder`` and
    other strategies that train base tensors directly need no folding.

    Raises:
        InputError: no strategy applied, or a strategy whose layers cannot be folded
            (``adapter``: bottleneck adapters have a nonlinearity).
    """
    return merged_copy(model, require_strategy(model))


# --------------------------------------------------------------------------- export
