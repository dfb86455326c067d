"""Text cells: SAM 3 asked for every category by name in a suite (the ``text`` protocol).

A model runs the spec's protocols that fit its family: ``text`` on a model with a text encoder
(SAM 3, :attr:`~samtune.models.family.Family.has_text`), ``box``, ``point`` and ``clicks:N``
on the others; such a cell trains with ``prompt: text``. Its headline numbers are class-aware
(:mod:`samtune.evaluation.named`): mask AP (COCO ``segm`` AP, mean over classes), semantic mIoU
and cgF1 (:data:`TEXT_METRICS`), not the instance mIoU of the prompted protocols.

A text cell is evaluated, zero-shot and fine-tuned, with the phrases it trains with (the
``prompt_map`` of the spec's and the dataset's ``train``, over the recipe's phrases, over the
category names: :func:`samtune.data.phrases.dataset_phrases`), given to :func:`samtune.evaluate`
as its ``phrases``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, quote_untrusted

TEXT = "text"
TEXT_METRICS = ("ap", "semantic_miou", "cgf1")
"""The text protocol's headline metrics (keys of its ``metrics.json``), in table order."""
TEXT_NAMES = {"ap": "AP", "semantic_miou": "semantic mIoU", "cgf1": "cgF1"}
"""How tables and messages name them."""
TEXT_PROMPTS = ("text", "text+exemplar")  # FitConfig.prompt values that ask by name


def is_text(protocol: str) -> bool:
    """Whether ``protocol`` (a parsed protocol name) is scored class-aware (``text``)."""
    return protocol == TEXT


def _hub_id(source: str) -> bool:
    from ..models.hub import looks_like_local_path
    from ..models.presets import PRESETS

    return (
        source not in PRESETS
        and not Path(source).expanduser().exists()
        and (not looks_like_local_path(source))
    )


def source_family(source: str, *, fetch: bool = False) -> Any:
    """The :class:`~samtune.models.family.Family` of a model source without loading it: a
    preset's, a folder's ``config.json``, or a hub model's ``config.json`` from the local hub
    cache (with ``fetch``, from the hub); None where that is not known (a checkpoint file, a
    hub model not downloaded yet)."""
    from ..evaluation.runs import _source_family
    from ..models.family import family_of_model_type

    family = _source_family(source)
    if family is not None or not _hub_id(source):
        return family
    config = _hub_config(source, fetch)
    if config is None:
        return None
    return family_of_model_type(config.get("model_type"), f"hub repository {source!r}")


def _hub_config(repo_id: str, fetch: bool) -> dict | None:
    """A hub model's ``config.json``: from the cache, or (``fetch``) through
    :func:`samtune.models.hub.hub_fetch` (one clear OfflineError without a network)."""
    from transformers import PretrainedConfig

    def read(local_only: bool) -> dict:
        return PretrainedConfig.get_config_dict(repo_id, local_files_only=local_only)[0]

    if not fetch:
        try:
            return read(True)
        except (OSError, ValueError):
            return None
    from huggingface_hub.errors import RepositoryNotFoundError

    from ..models.hub import hub_fetch

    try:
        return hub_fetch(repo_id, "the config of model", read, "a local folder or a preset")
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{repo_id!r} is neither a local path nor a repository on the Hugging Face hub"
        ) from None


def model_protocols(models: Sequence[Any], protocols: Sequence[str]) -> dict[str, tuple]:
    """``{model label: the protocols it runs}``: ``text`` for a SAM 3, the others for the rest.

    A model whose family cannot be known without loading it runs every protocol when they are
    all ``text`` or all prompted (its family is checked once it loads, before it trains);
    with both kinds, a hub model's ``config.json`` is fetched to decide.

    Raises:
        ConfigError: a model that fits none of the protocols, a protocol that fits no model,
            or a checkpoint file in a spec that mixes both kinds.
        OfflineError: a hub model's config is needed and cannot be fetched.
    """
    text = tuple(p for p in protocols if is_text(p))
    prompted = tuple(p for p in protocols if not is_text(p))
    out: dict[str, tuple] = {}
    for i, model in enumerate(models):
        family = source_family(model.source)
        if family is None and text and prompted:
            if not _hub_id(model.source):
                raise ConfigError(
                    f"models[{i}]: protocols {', '.join(protocols)} mix text (SAM 3) and "
                    f"prompted ones, and the family of {model.source!r} is not known before it "
                    "loads: convert it to a folder (`samtune convert ... --to hf`), or give it "
                    "a spec of its own"
                )
            family = source_family(model.source, fetch=True)
        if family is None:
            out[model.label] = tuple(protocols)
            continue
        own = text if family.has_text else prompted
        if not own:
            raise ConfigError(f"models[{i}]: {_mismatch(model.source, family, protocols)}")
        out[model.label] = own
    for i, protocol in enumerate(protocols):
        if not any(protocol in own for own in out.values()):
            kind = (
                "a SAM 3 model (facebook/sam3, tiny-sam3)"
                if is_text(protocol)
                else ("a prompted model (SAM, SAM-HQ, SAM 2)")
            )
            raise ConfigError(
                f"protocols[{i}]: {protocol!r} fits none of the models (it needs {kind}); "
                "drop it or add such a model"
            )
    return out


def _mismatch(source: str, family: Any, protocols: Sequence[str]) -> str:
    if family.has_text:
        return (
            f"{source!r} is a SAM 3 model (family {family.name}), prompted by name: list the "
            f"protocol text for it (the spec lists {', '.join(protocols)})"
        )
    return (
        f"protocol text needs a model with a text encoder (SAM 3: facebook/sam3, tiny-sam3); "
        f"{source!r} is family {family.name}, which has none: give it box, point or "
        "clicks:N, or drop it"
    )


def check_family(model: Any, source: str, protocols: Sequence[str]) -> None:
    """ConfigError when a loaded model's family does not run ``protocols`` (a model whose
    family was not known before it loaded: :func:`model_protocols`)."""
    from ..models.family import family_of

    family = family_of(model)
    if family.has_text != any(is_text(p) for p in protocols):
        raise ConfigError(_mismatch(source, family, protocols))


def train_prompt(options: Mapping[str, Any], text: bool, where: str) -> str | None:
    """The training ``prompt`` of a cell: ``text`` for a model asked by name (or the
    ``text+exemplar`` its options give); for the others None (the options' or the default).

    Raises:
        ConfigError: a prompt of the other kind in the options.
    """
    given = options.get("prompt")
    if given is None:
        return TEXT if text else None
    kind = str(given).strip().lower() in TEXT_PROMPTS
    if kind != text:
        need = "text or text+exemplar" if text else "box, point or interactive"
        model = "is prompted by name (protocol text)" if text else "is prompted by boxes or points"
        raise ConfigError(
            f"{where}: train.prompt {quote_untrusted(given)} does not fit the model, which "
            f"{model}: use {need}, or leave prompt out (a SAM 3 trains by name, the others "
            "with boxes)"
        )
    return given


def phrases(dataset: Any, prompt_map: Mapping[str, str], recipe: str) -> dict[int, str]:
    """``{category id: phrase}`` a text cell asks the dataset by (as training does)."""
    from ..data.phrases import dataset_phrases

    return dataset_phrases(dataset, prompt_map, recipe=recipe)


def headline(metrics: Mapping[str, Any], protocol: str) -> dict:
    """A record's headline numbers: ``{"miou"}`` for a prompted protocol, the
    :data:`TEXT_METRICS` for ``text`` (None where a metric is undefined)."""
    keys = TEXT_METRICS if is_text(protocol) else ("miou",)
    return {key: metrics.get(key) for key in keys}


def prompt_map(spec: Any, dataset: Any) -> dict[str, str]:
    """The ``prompt_map`` of a dataset's cells: its ``train``'s, else the spec's ``train``'s
    (a strategy's ``train`` may not set one: :func:`samtune.suite.spec.parse_spec`)."""
    return dict({**spec.train, **dataset.train}.get("prompt_map") or {})
