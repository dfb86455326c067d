"""Running a suite: zero-shot evaluations once per model, dataset and protocol; each cell's
fit and evaluation; records written atomically so that a rerun skips finished work."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write, claim_output, read_json_object
from .leaderboard import _gain, _pct, build_leaderboard, write_leaderboard
from .plan import (
    PlannedCell,
    _plain,
    _slug,
    _write_json,
    _zero_shot_folder,
    plan_suite,
    read_datasets,
    read_record,
)
from .spec import FORMAT, DatasetEntry, SuiteSpec, load_spec
from .text import TEXT_NAMES, check_family, headline, is_text, phrases, prompt_map


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


def _device() -> Any:
    from accelerate import PartialState

    return PartialState().device


class _Runner:
    """The work of one :func:`run_suite` call: evaluations, fits and their records."""

    def __init__(self, spec: SuiteSpec, out: Path, on_event: Callable | None, quiet: bool):
        self.spec, self.out, self.on_event, self.quiet = spec, out, on_event, quiet
        self._test_splits: dict[str, Any] = {}
        self._phrases: dict[str, dict[int, str]] = {}

    def emit(self, kind: str, folder: Path, message: str) -> None:
        if self.on_event is not None:
            self.on_event(SuiteEvent(kind, folder, message))

    def test_split(self, dataset: DatasetEntry) -> Any:
        """The dataset's test split, loaded once per run."""
        if dataset.label not in self._test_splits:
            from ..data import load_dataset

            self._test_splits[dataset.label] = load_dataset(
                dataset.name, dataset.splits["test"], dataset.root, **dataset.options
            )
        return self._test_splits[dataset.label]

    def phrases(self, dataset: DatasetEntry) -> dict[int, str]:
        """``{category id: phrase}`` of the test split: the phrases its text cells train with."""
        if dataset.label not in self._phrases:
            test = self.test_split(dataset)
            self._phrases[dataset.label] = phrases(
                test, prompt_map(self.spec, dataset), dataset.name
            )
        return self._phrases[dataset.label]

    def evaluate(self, model: Any, dataset: DatasetEntry, protocol: str, folder: Path) -> dict:
        """Evaluate on the test split (``text``: by its phrases), save the report in
        ``folder``, return its metrics as saved (so that a record's numbers equal its
        ``metrics.json``)."""
        from ..evaluation import evaluate

        report = evaluate(
            model,
            self.test_split(dataset),
            protocol,
            phrases=self.phrases(dataset) if is_text(protocol) else None,
            prompt_batch=self.spec.eval["prompt_batch"],
            max_images=self.spec.eval["max_images"],
            # the box protocol's boxes: the others take none (and refuse the option)
            box_source=self.spec.eval.get("box_source", "mask") if protocol == "box" else "mask",
            progress=False if self.quiet else None,
            name=str(folder.relative_to(self.out)),
        )
        paths = report.save(folder)
        return read_json_object(paths["metrics"], what="metrics file")["metrics"]

    def zero_shot(self) -> None:
        """Evaluate each base model once per dataset and protocol, or read the result back."""
        from ..models.loading import load_model

        for m in self.spec.models:
            base, protocols = None, self.spec.protocols_for(m)
            for d, protocol in ((d, p) for d in self.spec.datasets for p in protocols):
                folder = _zero_shot_folder(self.out, m, d, protocol)
                settings = self.zero_shot_settings(m.source, d, protocol)
                record = read_record(folder / "zero-shot.json")
                cached = record is not None and record["settings"] == settings
                if not cached:
                    if base is None:
                        base = load_model(m.source, device=_device())
                        check_family(base, m.source, protocols)
                    metrics = self.evaluate(base, d, protocol, folder)
                    record = {"format": FORMAT, "settings": settings,
                              **headline(metrics, protocol), "metrics": metrics}  # fmt: skip
                    _write_json(folder / "zero-shot.json", record)
                self.emit(
                    "zero-shot-cached" if cached else "zero-shot",
                    folder,
                    f"zero-shot {m.label} on {d.label}, {protocol}: {_scores(record, protocol)}"
                    + (" (cached)" if cached else ""),
                )

    def zero_shot_settings(self, source: str, dataset: DatasetEntry, protocol: str) -> dict:
        """What a zero-shot result depends on (``text``: also the phrases it asks by)."""
        settings = {
            "model": source,
            "dataset": dataclasses.asdict(dataset),
            "protocol": protocol,
            "eval": self.spec.eval,
        }
        if is_text(protocol):
            settings["phrases"] = self.phrases(dataset)
        return _plain(settings)

    def train(self, item: PlannedCell) -> tuple[dict, Any]:
        """Run fit for a cell (from its last checkpoint if any); write ``train.json``."""
        from ..train import fit
        from ..train.checkpoint import latest_checkpoint, read_state

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
        protocols = self.spec.protocols_for(cell.model)
        for protocol in (p for p in protocols if p not in test):
            metrics = self.evaluate(
                model, cell.dataset, protocol, folder / "eval" / _slug(protocol)
            )
            file = f"eval/{_slug(protocol)}/metrics.json"
            test[protocol] = {**headline(metrics, protocol), "metrics": metrics, "file": file}
        record = _cell_record(self.spec, self.out, item, training, test)
        _write_json(folder / "cell.json", record)
        zero, test = record["zero_shot"], record["test"]
        gains = [f"{p} {_pct(test[p]['miou'])} ({_gain(test[p]['miou'], zero[p])})"
                 for p in protocols if not is_text(p)]  # fmt: skip
        done = [f"test mIoU {', '.join(gains)}"] if gains else []
        done += [f"test {p} {_scores(test[p], p, zero[p])}" for p in protocols if is_text(p)]
        self.emit("done", folder, f"{name}: done, {'; '.join(done)}")


def _scores(record: dict, protocol: str, zero: dict | None = None) -> str:
    """``mIoU 58.55``, or for ``text`` ``AP 1.20 (+0.40), semantic mIoU 40.00 (+2.00)``
    (gains over ``zero`` where given)."""
    if not is_text(protocol):
        return f"mIoU {_pct(record['miou'])}"
    return ", ".join(
        f"{TEXT_NAMES[k]} {_pct(v)}" + (f" ({_gain(v, zero[k])})" if zero is not None else "")
        for k, v in headline(record, protocol).items()
    )


def _tuned_model(item: PlannedCell) -> Any:
    """A cell's fine-tuned model from its saved adapter (for cells trained earlier)."""
    from ..adapters import load_adapter
    from ..models.loading import load_model

    base = load_model(item.cell.model.source, seed=item.cell.seed)
    return load_adapter(base, item.folder / "adapter").to(_device())


def _cell_record(spec: SuiteSpec, out: Path, item: PlannedCell, training: dict, test: dict) -> dict:
    """``cell.json``: what the cell is, its settings, training and test results, and the
    zero-shot numbers it is compared with (mIoU; ``text``: AP, semantic mIoU, cgF1), copied
    so that the cell's file holds every number."""
    cell, protocols = item.cell, spec.protocols_for(item.cell.model)
    zero = {}
    for p in protocols:
        record = read_record(_zero_shot_folder(out, cell.model, cell.dataset, p) / "zero-shot.json")
        zero[p] = headline(record, p) if is_text(p) else record["miou"]
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
        "test": {p: test[p] for p in protocols},
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

    from ..options import check_range, check_type

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


def _adopt_earlier_suite(out: Path) -> None:
    """A suite folder of a samtune that kept no :data:`~samtune.io.RUN_MARKER`, recognised by
    its zero-shot records, is recorded as the suite's so that a rerun continues it."""
    from ..io import RUN_MARKER

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
