"""A suite spec: reading and checking the YAML (models, strategies, datasets, protocols, seeds,
training), and the cells it names. Everything a spec can get wrong is caught here, before any
file is read or anything trains."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingFileError, SamtuneError

FORMAT = 1
TOP_KEYS = (
    "name",
    "models",
    "strategies",
    "datasets",
    "splits",
    "protocols",
    "seeds",
    "train",
    "eval",
)
MODEL_KEYS = ("source", "label")
STRATEGY_KEYS = ("name", "label", "options", "train")
DATASET_KEYS = ("name", "label", "root", "options", "splits", "train")
SPLIT_KEYS = ("train", "val", "test")
EVAL_KEYS = ("prompt_batch", "max_images", "box_source")
# FitConfig fields the suite sets itself, and the spec key that sets them.
RESERVED = {
    "model": "models",
    "strategy": "strategies",
    "strategy_options": "strategies[].options",
    "dataset": "datasets",
    "dataset_root": "datasets[].root",
    "dataset_options": "datasets[].options",
    "train_split": "splits",
    "val_split": "splits",
    "test_split": "splits",
    "seed": "seeds",
    "output_dir": "the suite's output folder",
    "resume": "the suite (it resumes unfinished cells)",
    "compare": "protocols",
    "compare_point": "protocols",
}
# FitConfig fields that do not change a run's numbers: a rerun may change them.
NEUTRAL = (
    "quiet",
    "resume",
    "output_dir",
    "log_with",
    "num_workers",
    "cache",
    "cache_dir",
    "cache_memory_mb",
    "keep_checkpoints",
    "checkpoint_every",
)
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")

# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class ModelEntry:
    """A base model: ``source`` as :func:`samtune.load_model` takes it, ``label`` for folders."""

    source: str
    label: str


@dataclass(frozen=True)
class StrategyEntry:
    """A strategy with its options and training overrides (``train``) for its cells."""

    name: str
    label: str
    options: dict
    train: dict


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset recipe with its folder, options, split names and training overrides."""

    name: str
    label: str
    root: str | None
    options: dict
    splits: dict
    train: dict


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run of the matrix: a model, a strategy, a dataset and a seed."""

    model: ModelEntry
    strategy: StrategyEntry
    dataset: DatasetEntry
    seed: int

    @property
    def label(self) -> str:
        return f"{self.model.label}/{self.dataset.label}/{self.strategy.label}/seed-{self.seed}"

    def folder(self, output_dir: str | Path) -> Path:
        """The cell's run folder under the suite's output folder."""
        return Path(output_dir) / "runs" / self.label


@dataclass(frozen=True)
class SuiteSpec:
    """A validated suite spec (see :func:`load_spec`)."""

    name: str
    models: tuple[ModelEntry, ...]
    strategies: tuple[StrategyEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    protocols: tuple[str, ...]
    seeds: tuple[int, ...]
    train: dict
    eval: dict
    source: str = "suite spec"
    by_model: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """``{model label: the protocols it runs}`` (:func:`~samtune.suite.text.model_protocols`);
    a model not listed runs every protocol."""

    def protocols_for(self, model: ModelEntry) -> tuple[str, ...]:
        """The protocols ``model`` is evaluated with: ``text`` for a SAM 3, the others else."""
        return self.by_model.get(model.label, self.protocols)

    def asks_by_name(self, model: ModelEntry) -> bool:
        """Whether ``model``'s cells train and evaluate by category name (protocol ``text``)."""
        from .text import is_text

        return any(is_text(p) for p in self.protocols_for(model))

    def cells(self) -> list[Cell]:
        """Every cell, in run order: model, dataset, strategy, seed."""
        return [
            Cell(m, s, d, seed)
            for m in self.models
            for d in self.datasets
            for s in self.strategies
            for seed in self.seeds
        ]

    def to_dict(self) -> dict:
        """The spec in its long form (what ``OUT/spec.yaml`` holds; :func:`load_spec` reads it)."""
        entries = ("models", "strategies", "datasets")
        out = {"name": self.name}
        out.update({k: [dataclasses.asdict(e) for e in getattr(self, k)] for k in entries})
        out.update(
            protocols=list(self.protocols), seeds=list(self.seeds), train=self.train, eval=self.eval
        )
        return out


@contextlib.contextmanager
def _at(where: str) -> Iterator[None]:
    """Prefix the message of a samtune error raised inside with ``where``."""
    try:
        yield
    except SamtuneError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _check_keys(data: Mapping, allowed: tuple[str, ...], where: str) -> None:
    unknown = [str(k) for k in data if k not in allowed]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
            f"{', '.join(allowed)}"
        )


def _as_list(value: Any, where: str) -> list:
    """A list of entries; a single name or mapping counts as a list of one."""
    if isinstance(value, (str, dict)):
        return [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{where} must be a non-empty list (or one entry); found {type(value).__name__} "
            f"{value!r}"
        )
    return value


def _entry(value: Any, where: str, main: str, allowed: tuple[str, ...]) -> dict:
    """An entry given as a name or as a mapping, as a checked mapping."""
    from ..options import check_type

    if isinstance(value, str):
        value = {main: value}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where} must be a name or a mapping with {main!r}; found "
            f"{type(value).__name__} {value!r}"
        )
    _check_keys(value, allowed, where)
    if main not in value:
        raise ConfigError(f"{where}: missing {main!r}")
    hints = {
        main: str,
        "label": str,
        "root": str | None,
        "options": dict | None,
        "train": dict | None,
        "splits": dict | None,
    }
    for key, item in value.items():
        check_type(f"{where}.{key}", item, hints[key])
    if not value[main].strip():
        raise ConfigError(f"{where}.{main} must not be empty")
    return value


def _none_as_empty(value: Any) -> Any:
    """A mapping key left empty in YAML (``train:``) reads as None: take it as ``{}``."""
    return {} if value is None else value


def _default_label(source: str) -> str:
    """``facebook/sam-vit-base`` -> ``sam-vit-base``; ``./ckpt/sam_vit_b.pth`` -> ``sam_vit_b``."""
    name = Path(source.rstrip("/\\")).name or source
    return Path(name).stem if Path(name).suffix in (".pth", ".pt", ".safetensors") else name


def _labelled(entries: list, what: str) -> None:
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if not _LABEL.fullmatch(entry.label):
            raise ConfigError(
                f"{what}[{i}]: label {entry.label!r} cannot name a folder; give a label of "
                "letters, digits, '.', '_', '+' and '-'"
            )
        if entry.label in seen:
            raise ConfigError(
                f"{what}[{i}]: label {entry.label!r} is also {what}[{seen[entry.label]}]'s; "
                "give one of them another label"
            )
        seen[entry.label] = i


def _parse_entries(data: dict) -> dict[str, tuple]:
    models, strategies, datasets = [], [], []
    for i, raw in enumerate(_as_list(data["models"], "models")):
        e = _entry(raw, f"models[{i}]", "source", MODEL_KEYS)
        models.append(ModelEntry(e["source"], e.get("label") or _default_label(e["source"])))
    for i, raw in enumerate(_as_list(data["strategies"], "strategies")):
        e = _entry(raw, f"strategies[{i}]", "name", STRATEGY_KEYS)
        strategies.append(
            StrategyEntry(
                e["name"],
                e.get("label") or e["name"],
                dict(e.get("options") or {}),
                dict(e.get("train") or {}),
            )
        )
    for i, raw in enumerate(_as_list(data["datasets"], "datasets")):
        e = _entry(raw, f"datasets[{i}]", "name", DATASET_KEYS)
        with _at(f"datasets[{i}].splits"):
            splits = _splits(e.get("splits") or {}, _none_as_empty(data.get("splits")))
        datasets.append(
            DatasetEntry(
                e["name"],
                e.get("label") or e["name"],
                e.get("root"),
                dict(e.get("options") or {}),
                splits,
                dict(e.get("train") or {}),
            )
        )
    for what, entries in (("models", models), ("strategies", strategies), ("datasets", datasets)):
        _labelled(entries, what)
    return {"models": tuple(models), "strategies": tuple(strategies), "datasets": tuple(datasets)}


def _splits(own: dict, common: Any) -> dict:
    """Split names: the dataset's own over the spec's ``splits`` over train/val/test."""
    from ..options import check_type

    check_type("splits", common, dict)
    _check_keys(common, SPLIT_KEYS, "splits")
    _check_keys(own, SPLIT_KEYS, "splits")
    out = {**{k: k for k in SPLIT_KEYS}, **common, **own}
    for key in SPLIT_KEYS:
        check_type(key, out[key], str | None if key == "val" else str)
    return out


def _parse_protocols(value: Any) -> tuple[str, ...]:
    from ..evaluation import parse_protocol
    from ..options import check_type

    names: list[str] = []
    for i, item in enumerate(_as_list(value, "protocols")):
        with _at(f"protocols[{i}]"):
            check_type("protocol", item, str)
            name = parse_protocol(item).name
        if name == "auto":  # class-agnostic automatic masks: no cell of a suite trains for them
            raise ConfigError(
                f"protocols[{i}]: 'auto' (automatic masks, class-agnostic COCO AP) is not a "
                "suite protocol; evaluate it with `samtune eval --prompt auto`"
            )
        if name in names:
            raise ConfigError(f"protocols[{i}]: {name!r} is listed twice")
        names.append(name)
    return tuple(names)


def _parse_seeds(value: Any) -> tuple[int, ...]:
    from ..options import check_seed, check_type

    seeds = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    check_type("seeds", seeds, list[int])
    if not seeds:
        raise ConfigError("seeds must list at least one seed")
    for i, seed in enumerate(seeds):
        check_seed(f"seeds[{i}]", seed)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds lists a seed twice: {seeds}")
    return tuple(seeds)


def _parse_eval(value: Any) -> dict:
    from ..options import check_range, check_type

    check_type("eval", value, dict)
    _check_keys(value, EVAL_KEYS, "eval")
    out = {"prompt_batch": 32, "max_images": None, **value}
    check_type("eval.prompt_batch", out["prompt_batch"], int)
    check_range("eval.prompt_batch", out["prompt_batch"], minimum=1)
    check_type("eval.max_images", out["max_images"], int | None)
    check_range("eval.max_images", out["max_images"], minimum=1)
    from ..prompting import BOX_SOURCES

    if out.get("box_source", "mask") not in BOX_SOURCES:
        raise ConfigError(
            f"eval.box_source must be one of {', '.join(BOX_SOURCES)}; found {out['box_source']!r}"
        )
    if out.get("box_source") == "mask":  # the default: a spec without it has the same settings
        del out["box_source"]
    return out


def _check_train(options: Any, where: str) -> dict:
    """A mapping of training options (any FitConfig field but those the suite sets)."""
    from ..options import check_type
    from ..train.config import FitConfig

    check_type(where, options, dict)
    for key in options:
        if key in RESERVED:
            raise ConfigError(f"{where}.{key} is set by the suite; use {RESERVED[key]}")
    with _at(where):
        FitConfig.from_dict(dict(options))  # unknown options, types and ranges
    return dict(options)


def parse_spec(data: Mapping, source: str = "suite spec", name: str = "suite") -> SuiteSpec:
    """Build a :class:`SuiteSpec` from a mapping, checking every key, type and name.

    ``source`` heads error messages; ``name`` is the title when the spec gives none. Checks
    no file: that is :func:`plan_suite`'s part.
    """
    from ..options import check_type

    with _at(source):
        data = dict(data)
        _check_keys(data, TOP_KEYS, "top level")
        check_type("name", data.get("name"), str | None)
        for key in ("models", "strategies", "datasets"):
            if key not in data:
                raise ConfigError(f"missing {key!r} (the {key} to run)")
        from .text import model_protocols

        entries = _parse_entries(data)
        protocols = _parse_protocols(data.get("protocols", ["box"]))
        spec = SuiteSpec(
            name=str(data.get("name") or name),
            **entries,
            protocols=protocols,
            seeds=_parse_seeds(data.get("seeds", [0])),
            train=_check_train(_none_as_empty(data.get("train")), "train"),
            eval=_parse_eval(_none_as_empty(data.get("eval"))),
            source=source,
            by_model=model_protocols(entries["models"], protocols),
        )
        _check_names(spec)
    return spec


def _check_names(spec: SuiteSpec) -> None:
    """Strategies and their options, datasets and their options and splits, each cell's config."""
    from ..data.recipes import check_dataset
    from ..strategies import get_strategy

    for i, s in enumerate(spec.strategies):
        with _at(f"strategies[{i}]"):
            get_strategy(s.name, **s.options)
            _check_train(s.train, "train")
            if "prompt_map" in s.train:  # the zero-shot evaluation is shared by the strategies
                raise ConfigError(
                    "train.prompt_map: give the phrases under the spec's or a dataset's train, "
                    "which every strategy and the zero-shot evaluation share"
                )
    for i, d in enumerate(spec.datasets):
        with _at(f"datasets[{i}]"):
            _check_train(d.train, "train")
            try:
                check_dataset(d.name, _needed_splits(d), d.root, **d.options)
            except MissingFileError:
                pass  # files are checked before a run (plan_suite), not when reading a spec
    for cell in spec.cells():
        with _at(f"cell {cell.label}"):
            fit_config(spec, cell, "OUT")


def _needed_splits(dataset: DatasetEntry) -> list[str]:
    return list(dict.fromkeys(s for s in dataset.splits.values() if s))


def load_spec(spec: str | Path | Mapping | SuiteSpec) -> SuiteSpec:
    """Read and check a suite spec: a YAML file, a mapping, or a :class:`SuiteSpec`.

    Raises:
        MissingFileError: the file does not exist.
        ConfigError: invalid YAML, an unknown key (at any level), a wrong type or value; the
            message names the file and the place (``strategies[1].options``...).
        UnknownNameError: an unknown strategy, dataset, split or protocol.
    """
    if isinstance(spec, SuiteSpec):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(spec)
    from ..io import read_yaml_mapping

    data = read_yaml_mapping(spec, "suite settings")
    return parse_spec(data, f"suite spec {str(spec)!r}", Path(spec).stem)


def fit_config(spec: SuiteSpec, cell: Cell, output_dir: str | Path) -> Any:
    """The resolved :class:`samtune.FitConfig` of a cell.

    Training options: the spec's ``train`` < the dataset's ``train`` < the strategy's ``train``.
    A model asked by name (protocol ``text``) trains with ``prompt: text`` unless they say
    ``text+exemplar``. The suite evaluates the test split itself, so fit's own comparison is
    off.
    """
    from ..train.config import FitConfig
    from .text import train_prompt

    splits = cell.dataset.splits
    given = {**spec.train, **cell.dataset.train, **cell.strategy.train}
    prompt = train_prompt(given, spec.asks_by_name(cell.model), f"model {cell.model.label}")
    options = {
        **given,
        **({"prompt": prompt} if prompt is not None else {}),
        "model": cell.model.source,
        "strategy": cell.strategy.name,
        "strategy_options": cell.strategy.options,
        "dataset": cell.dataset.name,
        "dataset_root": cell.dataset.root,
        "dataset_options": cell.dataset.options,
        "train_split": splits["train"],
        "val_split": splits["val"],
        "test_split": splits["test"],
        "seed": cell.seed,
        "output_dir": str(cell.folder(output_dir)),
        "compare": False,
    }
    return FitConfig.from_dict(options).resolved()


# --------------------------------------------------------------------------- the plan


# --------------------------------------------------------------------------- running
