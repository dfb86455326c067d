"""Suites: a matrix of fine-tuning runs (models x strategies x datasets x seeds) as one command.

A suite spec (YAML, see ``docs/suite.md``) names the base models, strategies, datasets,
prompt protocols, seeds and the training budget. :func:`run_suite` (``samtune suite``)
checks all of it before anything trains, evaluates each base model zero-shot once per
dataset and protocol, runs :func:`samtune.fit` and :func:`samtune.evaluate` once per cell,
and writes a leaderboard::

    OUT/
      spec.yaml                                      the spec of the last run, normalized
      zero-shot/<model>/<dataset>/<protocol>/        EvalReport files + zero-shot.json
      runs/<model>/<dataset>/<strategy>/seed-<n>/    fit's run folder, plus eval/<protocol>/,
                                                     train.json and cell.json
      leaderboard.md, leaderboard.json, leaderboard.png

Every record is written atomically. ``train.json`` marks a finished training, ``cell.json``
(written last) a finished cell: a rerun skips finished cells, evaluates cells whose training
finished, and resumes the others from fit's checkpoints. A folder trained with other settings
than the spec's is refused (a rerun never mixes two configurations). The leaderboard is
computed from the ``cell.json`` files alone, so each of its numbers can be traced to a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, MissingFileError, SamtuneError
from .io import atomic_write, claim_output, dump_json, read_json, read_json_object
from .tables import format_change, format_number, markdown_table

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
    from .train.config import check_type

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
    from .train.config import check_type

    check_type("splits", common, dict)
    _check_keys(common, SPLIT_KEYS, "splits")
    _check_keys(own, SPLIT_KEYS, "splits")
    out = {**{k: k for k in SPLIT_KEYS}, **common, **own}
    for key in SPLIT_KEYS:
        check_type(key, out[key], str | None if key == "val" else str)
    return out


def _parse_protocols(value: Any) -> tuple[str, ...]:
    from .evaluate import parse_protocol
    from .train.config import check_type

    names: list[str] = []
    for i, item in enumerate(_as_list(value, "protocols")):
        with _at(f"protocols[{i}]"):
            check_type("protocol", item, str)
            name = parse_protocol(item).name
        if name == "auto":  # the suite ranks cells by instance mIoU, which auto has not
            raise ConfigError(
                f"protocols[{i}]: 'auto' is scored by COCO AP/AR, not the mIoU the suite ranks "
                "by; evaluate it with `samtune eval --prompt auto`"
            )
        if name in names:
            raise ConfigError(f"protocols[{i}]: {name!r} is listed twice")
        names.append(name)
    return tuple(names)


def _parse_seeds(value: Any) -> tuple[int, ...]:
    from .train.config import check_seed, check_type

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
    from .train.config import check_range, check_type

    check_type("eval", value, dict)
    _check_keys(value, EVAL_KEYS, "eval")
    out = {"prompt_batch": 32, "max_images": None, **value}
    check_type("eval.prompt_batch", out["prompt_batch"], int)
    check_range("eval.prompt_batch", out["prompt_batch"], minimum=1)
    check_type("eval.max_images", out["max_images"], int | None)
    check_range("eval.max_images", out["max_images"], minimum=1)
    from .prompting import BOX_SOURCES

    if out.get("box_source", "mask") not in BOX_SOURCES:
        raise ConfigError(
            f"eval.box_source must be one of {', '.join(BOX_SOURCES)}; found {out['box_source']!r}"
        )
    if out.get("box_source") == "mask":  # the default: a spec without it has the same settings
        del out["box_source"]
    return out


def _check_train(options: Any, where: str) -> dict:
    """A mapping of training options (any FitConfig field but those the suite sets)."""
    from .train.config import FitConfig, check_type

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
    from .train.config import check_type

    with _at(source):
        data = dict(data)
        _check_keys(data, TOP_KEYS, "top level")
        check_type("name", data.get("name"), str | None)
        for key in ("models", "strategies", "datasets"):
            if key not in data:
                raise ConfigError(f"missing {key!r} (the {key} to run)")
        spec = SuiteSpec(
            name=str(data.get("name") or name),
            **_parse_entries(data),
            protocols=_parse_protocols(data.get("protocols", ["box"])),
            seeds=_parse_seeds(data.get("seeds", [0])),
            train=_check_train(_none_as_empty(data.get("train")), "train"),
            eval=_parse_eval(_none_as_empty(data.get("eval"))),
            source=source,
        )
        _check_names(spec)
    return spec


def _check_names(spec: SuiteSpec) -> None:
    """Strategies and their options, datasets and their options and splits, each cell's config."""
    from .data.recipes import check_dataset
    from .strategies import get_strategy

    for i, s in enumerate(spec.strategies):
        with _at(f"strategies[{i}]"):
            get_strategy(s.name, **s.options)
            _check_train(s.train, "train")
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
    from .io import read_yaml_mapping

    data = read_yaml_mapping(spec, "suite settings")
    return parse_spec(data, f"suite spec {str(spec)!r}", Path(spec).stem)


def fit_config(spec: SuiteSpec, cell: Cell, output_dir: str | Path) -> Any:
    """The resolved :class:`samtune.FitConfig` of a cell.

    Training options: the spec's ``train`` < the dataset's ``train`` < the strategy's ``train``.
    The suite evaluates the test split itself, so fit's own comparison is off.
    """
    from .train.config import FitConfig

    splits = cell.dataset.splits
    options = {
        **spec.train,
        **cell.dataset.train,
        **cell.strategy.train,
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


@dataclass(frozen=True)
class PlannedCell:
    """A cell, its run folder and config, and what a run will do with it.

    ``status``: ``done`` (skipped), ``evaluate`` (trained earlier; evaluate it), ``resume``
    (continue from its last checkpoint) or ``train`` (from the start).
    """

    cell: Cell
    folder: Path
    config: Any
    settings: dict
    status: str


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists...), for comparisons."""
    return json.loads(json.dumps(value))


def _settings(spec: SuiteSpec, config: Any) -> dict:
    """What a cell's numbers depend on: the training config and the evaluation options."""
    fit = {k: v for k, v in config.to_dict().items() if k not in NEUTRAL}
    return _plain({"fit": fit, "eval": spec.eval})


def read_record(path: str | Path) -> dict | None:
    """A suite record (``cell.json``, ``train.json``, ``zero-shot.json``); None if absent or
    unreadable (a record is written atomically, so an unreadable one was never finished)."""
    try:
        data = read_json(path, what="suite record")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def _recorded_fit(folder: Path) -> dict | None:
    """The training settings a run folder was started with (train.json, else config.yaml)."""
    record = read_record(folder / "train.json")
    if record is not None:
        return record["settings"]["fit"]
    if not (folder / "config.yaml").is_file():
        return None
    from .train.config import FitConfig, load_yaml

    try:
        config = FitConfig.from_dict(load_yaml(folder / "config.yaml"))
    except ConfigError:
        return {"config.yaml": "unreadable"}
    return _plain({k: v for k, v in config.to_dict().items() if k not in NEUTRAL})


def _check_same(folder: Path, recorded: dict, wanted: dict) -> None:
    from .train.config import FitConfig

    def was(key: str) -> Any:  # a field newer than the record had its default when it trained
        fields = FitConfig.__dataclass_fields__
        default = _plain(FitConfig.field_default(key)) if key in fields else None
        return recorded.get(key, default)

    diff = [k for k in sorted(set(recorded) | set(wanted)) if was(k) != wanted.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {was(k)!r} there, {wanted.get(k)!r} in the spec" for k in diff[:4])
        raise ConfigError(
            f"run folder {str(folder)!r} was trained with other settings ({shown}); delete that "
            "folder to train it again with the spec's, or choose another output folder"
        )


def _status(folder: Path, settings: dict, protocols: tuple[str, ...]) -> str:
    from .train.checkpoint import list_checkpoints

    recorded = _recorded_fit(folder)
    if recorded is not None:
        _check_same(folder, recorded, settings["fit"])
    if read_record(folder / "train.json") is None:
        return "resume" if list_checkpoints(folder) else "train"
    done = read_record(folder / "cell.json")
    if done and done["settings"] == settings and all(p in done["test"] for p in protocols):
        return "done"
    return "evaluate"


def _check_files(spec: SuiteSpec) -> None:
    from .data.recipes import check_dataset
    from .hub import looks_like_local_path

    for i, m in enumerate(spec.models):
        if looks_like_local_path(m.source) and not Path(m.source).expanduser().exists():
            raise MissingFileError(f"models[{i}]: model path {m.source!r} does not exist")
    for i, d in enumerate(spec.datasets):
        with _at(f"datasets[{i}] ({d.name})"):
            check_dataset(d.name, _needed_splits(d), d.root, **d.options)


def read_datasets(spec: SuiteSpec) -> None:
    """Read every split the suite's runs use (its annotations, checked, and that each image
    file is there), so that a bad dataset stops the suite before its first run, not hours in.

    Raises:
        DataError, MissingFileError: as :func:`samtune.data.load_dataset`, the message
            prefixed with the dataset and split.
    """
    from .data import load_dataset

    for i, d in enumerate(spec.datasets):
        for split in _needed_splits(d):
            with _at(f"{spec.source}: datasets[{i}] ({d.label}, split {split!r})"):
                load_dataset(d.name, split, d.root, **d.options)


def plan_suite(spec: str | Path | Mapping | SuiteSpec, output_dir: str | Path) -> list[PlannedCell]:
    """Check a suite against the files (datasets, model paths, earlier runs); writes nothing.

    Returns:
        Every cell with what :func:`run_suite` will do with it.

    Raises:
        MissingFileError: a dataset or model path that is not there (the message says how to
            get it).
        ConfigError: a run folder under ``output_dir`` trained with other settings than the
            spec's, or a spec error (see :func:`load_spec`).
    """
    from .train.config import check_inputs

    spec = load_spec(spec)
    out = Path(output_dir)
    with _at(spec.source):
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output folder {str(out)!r} is a file; choose a folder")
        _check_files(spec)
        planned = []
        for cell in spec.cells():
            with _at(f"cell {cell.label}"):
                config = fit_config(spec, cell, out)
                check_inputs(config)
                settings = _settings(spec, config)
                status = _status(cell.folder(out), settings, spec.protocols)
            planned.append(PlannedCell(cell, cell.folder(out), config, settings, status))
    return planned


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class SuiteEvent:
    """One step of a suite run, given to ``run_suite(on_event=...)`` (the CLI prints them).

    ``kind``: ``zero-shot`` (a base model evaluated), ``zero-shot-cached`` (its result read
    back), ``train`` (fit starts a cell), ``resume`` (fit continues a cell from its last
    checkpoint), ``evaluate`` (a cell trained earlier is evaluated), ``done`` (a cell's
    ``cell.json`` was written), ``skip`` (a cell already done), ``stop`` (``max_cells``
    reached; the rest is left for a rerun). ``folder`` is the run or zero-shot folder.
    """

    kind: str
    folder: Path
    message: str


@dataclass
class SuiteResult:
    """What :func:`run_suite` did: the leaderboard (Markdown and data), the files, counts."""

    output_dir: Path
    markdown: str
    leaderboard: dict
    files: dict[str, Path]
    ran: int
    skipped: int
    pending: int

    @property
    def complete(self) -> bool:
        return self.pending == 0


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(dump_json(data, indent=2) + "\n")


def _slug(protocol: str) -> str:
    return protocol.replace(":", "-")


def _zero_shot_folder(out: Path, model: ModelEntry, dataset: DatasetEntry, protocol: str) -> Path:
    return out / "zero-shot" / model.label / dataset.label / _slug(protocol)


def _device() -> Any:
    from accelerate import PartialState

    return PartialState().device


class _Runner:
    """The work of one :func:`run_suite` call: evaluations, fits and their records."""

    def __init__(self, spec: SuiteSpec, out: Path, on_event: Callable | None, quiet: bool):
        self.spec, self.out, self.on_event, self.quiet = spec, out, on_event, quiet
        self._test_splits: dict[str, Any] = {}

    def emit(self, kind: str, folder: Path, message: str) -> None:
        if self.on_event is not None:
            self.on_event(SuiteEvent(kind, folder, message))

    def test_split(self, dataset: DatasetEntry) -> Any:
        """The dataset's test split, loaded once per run."""
        if dataset.label not in self._test_splits:
            from .data import load_dataset

            self._test_splits[dataset.label] = load_dataset(
                dataset.name, dataset.splits["test"], dataset.root, **dataset.options
            )
        return self._test_splits[dataset.label]

    def evaluate(self, model: Any, dataset: DatasetEntry, protocol: str, folder: Path) -> dict:
        """Evaluate on the test split, save the report in ``folder``, return its metrics as
        saved (so that a record's numbers equal its ``metrics.json``)."""
        from .evaluate import evaluate

        report = evaluate(
            model,
            self.test_split(dataset),
            protocol,
            prompt_batch=self.spec.eval["prompt_batch"],
            max_images=self.spec.eval["max_images"],
            box_source=self.spec.eval.get("box_source", "mask"),
            progress=False if self.quiet else None,
            name=str(folder.relative_to(self.out)),
        )
        paths = report.save(folder)
        return read_json_object(paths["metrics"], what="metrics file")["metrics"]

    def zero_shot(self) -> None:
        """Evaluate each base model once per dataset and protocol, or read the result back."""
        from .models import load_model

        for m in self.spec.models:
            base = None
            for d, protocol in ((d, p) for d in self.spec.datasets for p in self.spec.protocols):
                folder = _zero_shot_folder(self.out, m, d, protocol)
                settings = _plain(
                    {
                        "model": m.source,
                        "dataset": dataclasses.asdict(d),
                        "protocol": protocol,
                        "eval": self.spec.eval,
                    }
                )
                record = read_record(folder / "zero-shot.json")
                cached = record is not None and record["settings"] == settings
                if not cached:
                    base = base if base is not None else load_model(m.source, device=_device())
                    metrics = self.evaluate(base, d, protocol, folder)
                    record = {
                        "format": FORMAT,
                        "settings": settings,
                        "miou": metrics["miou"],
                        "metrics": metrics,
                    }
                    _write_json(folder / "zero-shot.json", record)
                self.emit(
                    "zero-shot-cached" if cached else "zero-shot",
                    folder,
                    f"zero-shot {m.label} on {d.label}, {protocol}: mIoU {_pct(record['miou'])}"
                    + (" (cached)" if cached else ""),
                )

    def train(self, item: PlannedCell) -> tuple[dict, Any]:
        """Run fit for a cell (from its last checkpoint if any); write ``train.json``."""
        from .train import fit
        from .train.checkpoint import latest_checkpoint, read_state

        last = latest_checkpoint(item.folder)
        quiet = self.quiet or item.config.quiet
        t0 = time.perf_counter()
        result = fit(config=dataclasses.replace(item.config, resume=last is not None, quiet=quiet))
        trainable = (p.numel() for p in result.model.parameters() if p.requires_grad)
        record = {
            "format": FORMAT,
            "settings": item.settings,
            "seconds": time.perf_counter() - t0,
            "resumed_from_step": read_state(last).step if last is not None else None,
            "steps": result.steps,
            "trainable_params": sum(trainable),
            "adapter_bytes": (Path(result.adapter_dir) / "adapter.safetensors").stat().st_size,
            "best": {"step": result.best_step, "miou": result.best_metric},
        }
        _write_json(item.folder / "train.json", record)
        return record, result.model

    def cell(self, item: PlannedCell, position: str) -> None:
        """Train (or resume) and evaluate one cell; write ``cell.json`` last.

        ``position`` (``[2/8]``) starts the events' messages.
        """
        cell, folder = item.cell, item.folder
        name = f"{position} {cell.label}"
        if item.status in ("train", "resume"):
            doing = "resuming from its last checkpoint" if item.status == "resume" else "training"
            self.emit(item.status, folder, f"{name}: {doing}")
            training, model = self.train(item)
        else:
            self.emit("evaluate", folder, f"{name}: trained earlier, evaluating")
            training, model = read_record(folder / "train.json"), _tuned_model(item)
        previous = read_record(folder / "cell.json")
        same = previous is not None and previous["settings"] == item.settings
        test = dict(previous["test"]) if same else {}
        for protocol in (p for p in self.spec.protocols if p not in test):
            metrics = self.evaluate(
                model, cell.dataset, protocol, folder / "eval" / _slug(protocol)
            )
            file = f"eval/{_slug(protocol)}/metrics.json"
            test[protocol] = {"miou": metrics["miou"], "metrics": metrics, "file": file}
        record = _cell_record(self.spec, self.out, item, training, test)
        _write_json(folder / "cell.json", record)
        zero, test = record["zero_shot"], record["test"]
        gains = ", ".join(
            f"{p} {_pct(test[p]['miou'])} ({_gain(test[p]['miou'], zero[p])})"
            for p in self.spec.protocols
        )
        self.emit("done", folder, f"{name}: done, test mIoU {gains}")


def _tuned_model(item: PlannedCell) -> Any:
    """A cell's fine-tuned model from its saved adapter (for cells trained earlier)."""
    from .adapters import load_adapter
    from .models import load_model

    base = load_model(item.cell.model.source, seed=item.cell.seed)
    return load_adapter(base, item.folder / "adapter").to(_device())


def _cell_record(spec: SuiteSpec, out: Path, item: PlannedCell, training: dict, test: dict) -> dict:
    """``cell.json``: what the cell is, its settings, training and test results, and the
    zero-shot mIoU it is compared with (copied, so the cell's file holds every number)."""
    cell = item.cell
    zero = {
        p: read_record(_zero_shot_folder(out, cell.model, cell.dataset, p) / "zero-shot.json")[
            "miou"
        ]
        for p in spec.protocols
    }
    return {
        "format": FORMAT,
        "cell": {
            "model": cell.model.label,
            "model_source": cell.model.source,
            "strategy": cell.strategy.label,
            "strategy_name": cell.strategy.name,
            "dataset": cell.dataset.label,
            "dataset_name": cell.dataset.name,
            "seed": cell.seed,
        },
        "settings": item.settings,
        "training": {k: v for k, v in training.items() if k not in ("format", "settings")},
        "test": {p: test[p] for p in spec.protocols},
        "zero_shot": zero,
    }


def run_suite(
    spec_or_path: str | Path | Mapping | SuiteSpec,
    output_dir: str | Path,
    *,
    max_cells: int | None = None,
    on_event: Callable[[SuiteEvent], None] | None = None,
    quiet: bool = False,
) -> SuiteResult:
    """Run a suite: zero-shot evaluations, then one fit + evaluation per unfinished cell.

    Everything is checked first (:func:`load_spec`, :func:`plan_suite`,
    :func:`read_datasets`): a bad spec, a missing or malformed dataset or a run folder trained
    with other settings stops the run before anything is written. Finished cells are skipped, interrupted ones resumed.

    Args:
        spec_or_path: a YAML file, a mapping or a :class:`SuiteSpec`.
        output_dir: the suite's folder (created; reused by reruns).
        max_cells: run at most this many unfinished cells, then stop (a rerun continues):
            for time-boxed jobs. Skipped cells do not count.
        on_event: called with a :class:`SuiteEvent` at each step.
        quiet: no progress bars.

    Returns:
        :class:`SuiteResult`; the leaderboard is also written to ``output_dir``.

    Raises:
        ConfigError, UnknownNameError, MissingFileError, DataError: see :func:`load_spec`,
            :func:`plan_suite` and :func:`read_datasets` (nothing is written then); RunError:
            a fit failed (a rerun resumes it).
    """
    import yaml

    from .train.config import check_range, check_type

    check_type("max_cells", max_cells, int | None)
    check_range("max_cells", max_cells, minimum=1)
    spec = load_spec(spec_or_path)
    plan = plan_suite(spec, output_dir)
    read_datasets(spec)
    out = Path(output_dir)
    inputs = [spec_or_path] if isinstance(spec_or_path, (str, Path)) else []
    _adopt_earlier_suite(out)
    with claim_output(out, command="suite", names=SUITE_ENTRIES, inputs=[*inputs, *_inputs(spec)]):
        with atomic_write(out / "spec.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        return _run(spec, plan, out, max_cells, on_event, quiet)


SUITE_ENTRIES = ("spec.yaml", "zero-shot", "runs", "leaderboard.md", "leaderboard.json",
                 "leaderboard.png")  # fmt: skip
"""What a suite writes into its folder (see the module docstring)."""


def _adopt_earlier_suite(out: Path) -> None:
    """A suite folder of a samtune that kept no :data:`~samtune.io.RUN_MARKER`, recognised by
    its zero-shot records, is recorded as the suite's so that a rerun continues it."""
    from .io import RUN_MARKER

    if (out / RUN_MARKER).exists() or not (out / "zero-shot").is_dir():
        return
    if not any(read_record(p) for p in (out / "zero-shot").rglob("zero-shot.json")):
        return
    entries = {name: "suite" for name in SUITE_ENTRIES if (out / name).exists()}
    _write_json(out / RUN_MARKER, {"written_by": "samtune", "entries": entries})


def _inputs(spec: SuiteSpec) -> list[Path]:
    """The local model and dataset folders a suite reads: never written."""
    given = [m.source for m in spec.models] + [d.root for d in spec.datasets]
    return [Path(v) for v in given if v and Path(v).exists()]


def _run(spec: SuiteSpec, plan: list, out: Path, max_cells: int | None,
         on_event: Callable | None, quiet: bool) -> SuiteResult:  # fmt: skip
    """The zero-shot evaluations, the cells and the leaderboard of :func:`run_suite`."""
    runner = _Runner(spec, out, on_event, quiet)
    runner.zero_shot()
    ran = skipped = 0
    for i, item in enumerate(plan):
        position = f"[{i + 1}/{len(plan)}]"
        if item.status == "done":
            skipped += 1
            runner.emit("skip", item.folder, f"{position} {item.cell.label}: done, skipped")
        elif max_cells is not None and ran >= max_cells:
            left = sum(p.status != "done" for p in plan[i:])
            message = f"max_cells={max_cells} reached; {left} cell(s) left for a rerun"
            runner.emit("stop", item.folder, message)
            break
        else:
            runner.cell(item, position)
            ran += 1
    board = build_leaderboard(spec, out)
    markdown, files = write_leaderboard(board, out)
    pending = board["cells"]["total"] - board["cells"]["done"]
    return SuiteResult(out, markdown, board, files, ran, skipped, pending)


# --------------------------------------------------------------------------- the leaderboard


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation; None below two values)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _row(
    spec: SuiteSpec,
    records: dict,
    model: ModelEntry,
    strategy: StrategyEntry,
    dataset: DatasetEntry,
    protocol: str,
) -> dict:
    """One leaderboard cell: the mIoU and gain of every finished seed, their mean and spread.

    ``records``: ``{(dataset label, seed): (run folder, cell.json or None)}``.
    """
    done = [(seed, *records[(dataset.label, seed)]) for seed in spec.seeds]
    # a metric is null (NaN in metrics.json) when the test split has no instance
    done = [
        (seed, run, r)
        for seed, run, r in done
        if r is not None and None not in (r["test"][protocol]["miou"], r["zero_shot"][protocol])
    ]
    miou = [r["test"][protocol]["miou"] for _, _, r in done]
    gain = [r["test"][protocol]["miou"] - r["zero_shot"][protocol] for _, _, r in done]
    (miou_mean, miou_std), (gain_mean, gain_std) = _stats(miou), _stats(gain)
    return {
        "model": model.label,
        "strategy": strategy.label,
        "dataset": dataset.label,
        "protocol": protocol,
        "seeds": [seed for seed, _, _ in done],
        "runs": [run for _, run, _ in done],
        "miou": miou,
        "gain": gain,
        "miou_mean": miou_mean,
        "miou_std": miou_std,
        "gain_mean": gain_mean,
        "gain_std": gain_std,
    }


def _strategy_summary(model: ModelEntry, strategy: StrategyEntry, records: dict) -> dict:
    """Trainable parameters, adapter bytes and training time of a strategy's finished cells."""
    done = [(run, r) for run, r in records.values() if r is not None]
    training = [r["training"] for _, r in done]
    seconds = [t["seconds"] for t in training]
    return {
        "model": model.label,
        "strategy": strategy.label,
        "name": strategy.name,
        "options": strategy.options,
        "runs": [run for run, _ in done],
        "trainable_params": [t["trainable_params"] for t in training],
        "adapter_bytes": [t["adapter_bytes"] for t in training],
        "train_seconds": seconds,
        "train_seconds_mean": _stats(seconds)[0],
        "resumed": [t["resumed_from_step"] is not None for t in training],
    }


def build_leaderboard(spec: str | Path | Mapping | SuiteSpec, output_dir: str | Path) -> dict:
    """The leaderboard's data, read from the suite's ``zero-shot.json`` and ``cell.json`` files.

    Returns:
        ``{"rows": [...], "strategies": [...], "zero_shot": [...], "cells": {"total",
        "done"}, ...}``: a row per (model, strategy, dataset, protocol) with the mIoU and the
        gain over zero-shot of each finished seed (fractions) and their mean and standard
        deviation; per (model, strategy) the trainable parameters, adapter bytes and training
        seconds of each finished cell. Unfinished cells are left out (``cells`` counts them).
    """
    spec = load_spec(spec)
    out = Path(output_dir)
    board: dict[str, Any] = {
        "format": FORMAT,
        "name": spec.name,
        "protocols": list(spec.protocols),
        "datasets": [d.label for d in spec.datasets],
        "seeds": list(spec.seeds),
        "rows": [],
        "strategies": [],
        "zero_shot": [],
    }
    done = 0
    for m in spec.models:
        for d in spec.datasets:
            for p in spec.protocols:
                rel = (_zero_shot_folder(Path(), m, d, p) / "zero-shot.json").as_posix()
                record = read_record(out / rel)
                board["zero_shot"].append(
                    {
                        "model": m.label,
                        "source": m.source,
                        "dataset": d.label,
                        "protocol": p,
                        "miou": record and record["miou"],
                        "file": rel,
                    }
                )
        for s in spec.strategies:
            cells = [Cell(m, s, d, seed) for d in spec.datasets for seed in spec.seeds]
            records = {
                (c.dataset.label, c.seed): (
                    f"runs/{c.label}",
                    read_record(c.folder(out) / "cell.json"),
                )
                for c in cells
            }
            done += sum(r is not None for _, r in records.values())
            board["rows"] += [
                _row(spec, records, m, s, d, p) for d in spec.datasets for p in spec.protocols
            ]
            board["strategies"].append(_strategy_summary(m, s, records))
    board["cells"] = {"total": len(spec.cells()), "done": done}
    return board


def _pct(value: float | None) -> str:
    return format_number(value, percent=True)


def _gain(value: float | None, base: float | None) -> str:
    return format_change(value, base, percent=True)


def _span(values: list[int], fmt: Callable[[int], str]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)}-{fmt(high)}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def _cell_text(row: dict, n_seeds: int) -> str:
    """``68.60 ± 0.40 (+10.05)``: mean mIoU, its spread over seeds, mean gain (percent points)."""
    if not row["seeds"]:
        return "pending"
    text = _pct(row["miou_mean"])
    if row["miou_std"] is not None:
        text += f" ± {_pct(row['miou_std'])}"
    text += f" ({format_number(row['gain_mean'], percent=True, signed=True)})"
    if len(row["seeds"]) < n_seeds:
        text += f" [{len(row['seeds'])}/{n_seeds} seeds]"
    return text


def _model_table(board: dict, model: str) -> list[str]:
    columns = [(d, p) for d in board["datasets"] for p in board["protocols"]]
    zero = {
        (z["dataset"], z["protocol"]): z["miou"] for z in board["zero_shot"] if z["model"] == model
    }
    rows = {
        (r["strategy"], r["dataset"], r["protocol"]): r
        for r in board["rows"]
        if r["model"] == model
    }
    header = ["strategy", *(f"{d} {p}" for d, p in columns)]
    header += ["trainable params", "adapter", "train time / run"]
    table = [["zero-shot", *(_pct(zero[c]) for c in columns), "", "", ""]]
    for s in (s for s in board["strategies"] if s["model"] == model):
        cells = [_cell_text(rows[(s["strategy"], d, p)], len(board["seeds"])) for d, p in columns]
        table.append(
            [
                s["strategy"],
                *cells,
                _span(s["trainable_params"], lambda n: f"{n:,}"),
                _span(s["adapter_bytes"], _size),
                _duration(s["train_seconds_mean"]) + (" *" if any(s["resumed"]) else ""),
            ]
        )
    return markdown_table(header, table).split("\n")


def format_leaderboard(board: dict) -> str:
    """The leaderboard as Markdown: one table per base model (see :func:`build_leaderboard`)."""
    seeds = board["seeds"]
    lines = [
        f"# {board['name']}",
        "",
        "Test-split instance mIoU (%) per dataset and protocol, with the gain over the "
        "zero-shot base model in parentheses"
        + (
            f"; mean ± standard deviation over seeds {', '.join(map(str, seeds))}."
            if len(seeds) > 1
            else f" (seed {seeds[0]})."
        )
        + f" {board['cells']['done']} of {board['cells']['total']} cells done.",
    ]
    for model in dict.fromkeys(z["model"] for z in board["zero_shot"]):
        source = next(z["source"] for z in board["zero_shot"] if z["model"] == model)
        lines += ["", f"## `{source}`", "", *_model_table(board, model)]
    if any(any(s["resumed"]) for s in board["strategies"]):
        lines += [
            "",
            "\\* some runs were resumed: their time counts only the part after the resume.",
        ]
    return "\n".join(lines) + "\n"


def plot_gains(board: dict, path: str | Path) -> Path:
    """Bar chart of the mean mIoU gain over zero-shot per strategy and dataset (one panel per
    model and protocol; error bars: standard deviation over seeds), written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(dict.fromkeys(z["model"] for z in board["zero_shot"]))
    protocols, datasets = board["protocols"], board["datasets"]
    fig, axes = plt.subplots(
        len(models),
        len(protocols),
        squeeze=False,
        figsize=(max(4.0, 1.6 * len(datasets) + 2) * len(protocols), 3.2 * len(models)),
    )
    for (mi, model), (pi, protocol) in (
        (m, p) for m in enumerate(models) for p in enumerate(protocols)
    ):
        ax = axes[mi][pi]
        rows = [r for r in board["rows"] if r["model"] == model and r["protocol"] == protocol]
        strategies = list(dict.fromkeys(r["strategy"] for r in rows))
        width = 0.8 / max(1, len(strategies))
        for si, strategy in enumerate(strategies):
            by = {r["dataset"]: r for r in rows if r["strategy"] == strategy}
            gain = [
                100 * (by[d]["gain_mean"] if by[d]["gain_mean"] is not None else np.nan)
                for d in datasets
            ]
            spread = [by[d]["gain_std"] for d in datasets]
            err = [100 * (v or 0.0) for v in spread] if any(spread) else None
            ax.bar(
                np.arange(len(datasets)) + (si + 0.5) * width - 0.4,
                gain,
                width,
                yerr=err,
                label=strategy,
                capsize=2,
            )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(datasets)), datasets)
        ax.set_ylabel("mIoU gain (points)")
        ax.set_title(f"{model}, {protocol} prompts")
        ax.legend(fontsize=8)
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_leaderboard(board: dict, output_dir: str | Path) -> tuple[str, dict[str, Path]]:
    """Write ``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.png``; return the
    Markdown and the paths."""
    out = Path(output_dir)
    markdown = format_leaderboard(board)
    files = {
        "markdown": out / "leaderboard.md",
        "json": out / "leaderboard.json",
        "plot": out / "leaderboard.png",
    }
    with atomic_write(files["markdown"]) as tmp:
        tmp.write_text(markdown)
    _write_json(files["json"], board)
    plot_gains(board, files["plot"])
    return markdown, files


__all__ = [
    "Cell",
    "PlannedCell",
    "SuiteEvent",
    "SuiteResult",
    "SuiteSpec",
    "build_leaderboard",
    "fit_config",
    "format_leaderboard",
    "load_spec",
    "parse_spec",
    "plan_suite",
    "plot_gains",
    "read_record",
    "run_suite",
    "write_leaderboard",
]
