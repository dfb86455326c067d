"""The plan of a suite: its cells in order, where each writes (the folder layout in
:mod:`samtune.suite`), and which are finished, to evaluate, to resume or to run; input files
and datasets are checked here, before anything trains."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingFileError
from ..io import atomic_write, dump_json, read_json
from .spec import (
    FORMAT,
    NEUTRAL,
    Cell,
    DatasetEntry,
    ModelEntry,
    SuiteSpec,
    _at,
    _needed_splits,
    fit_config,
    load_spec,
)


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
    from ..train.config import FitConfig, load_yaml

    try:
        config = FitConfig.from_dict(load_yaml(folder / "config.yaml"))
    except ConfigError:
        return {"config.yaml": "unreadable"}
    return _plain({k: v for k, v in config.to_dict().items() if k not in NEUTRAL})


# Training options a suite cell's training never reads: the suite turns fit's comparison off
# and scores the test split itself, so a trained cell can be scored on another split (choose
# on val, then confirm on test) without training again.
SCORING_ONLY = frozenset({"test_split"})


def _check_same(folder: Path, recorded: dict, wanted: dict) -> None:
    from ..train.config import FitConfig

    def was(key: str) -> Any:  # a field newer than the record had its default when it trained
        fields = FitConfig.__dataclass_fields__
        default = _plain(FitConfig.field_default(key)) if key in fields else None
        return recorded.get(key, default)

    keys = sorted((set(recorded) | set(wanted)) - SCORING_ONLY)
    diff = [k for k in keys if was(k) != wanted.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {was(k)!r} there, {wanted.get(k)!r} in the spec" for k in diff[:4])
        raise ConfigError(
            f"run folder {str(folder)!r} was trained with other settings ({shown}); delete that "
            "folder to train it again with the spec's, or choose another output folder"
        )


def _status(folder: Path, settings: dict, protocols: tuple[str, ...]) -> str:
    from ..train.checkpoint import list_checkpoints

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
    from ..data.recipes import check_dataset
    from ..models.hub import looks_like_local_path

    for i, m in enumerate(spec.models):
        if looks_like_local_path(m.source) and not Path(m.source).expanduser().exists():
            raise MissingFileError(f"models[{i}]: model path {m.source!r} does not exist")
    for i, d in enumerate(spec.datasets):
        with _at(f"datasets[{i}] ({d.name})"):
            check_dataset(d.name, _needed_splits(d), d.root, **d.options)


def read_datasets(spec: SuiteSpec) -> None:
    """Read every split the suite's runs use (its annotations, checked, and that each image
    file is there), so that a bad dataset stops the suite before its first run, not hours in.

    With a model asked by name (protocol ``text``), the training and test splits must name
    their categories, and the prompt map must fit them.

    Raises:
        DataError, MissingFileError: as :func:`samtune.data.load_dataset`, the message
            prefixed with the dataset and split.
        ConfigError: a prompt map that names a category the split lacks, or gives two
            categories one phrase.
    """
    from ..data import load_dataset
    from .text import phrases, prompt_map

    by_name = any(spec.asks_by_name(m) for m in spec.models)
    for i, d in enumerate(spec.datasets):
        for split in _needed_splits(d):
            with _at(f"{spec.source}: datasets[{i}] ({d.label}, split {split!r})"):
                data = load_dataset(d.name, split, d.root, **d.options)
                if by_name and split in (d.splits["train"], d.splits["test"]):
                    phrases(data, prompt_map(spec, d), d.name)  # names, prompt map, phrases


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
    from ..train.config import check_inputs

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
                status = _status(cell.folder(out), settings, spec.protocols_for(cell.model))
            planned.append(PlannedCell(cell, cell.folder(out), config, settings, status))
    return planned


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(dump_json(data, indent=2) + "\n")


def _slug(protocol: str) -> str:
    return protocol.replace(":", "-")


def _zero_shot_folder(out: Path, model: ModelEntry, dataset: DatasetEntry, protocol: str) -> Path:
    return out / "zero-shot" / model.label / dataset.label / _slug(protocol)
