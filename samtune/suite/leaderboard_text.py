"""The leaderboard of the text cells (SAM 3 asked by name): class-aware mask AP, semantic mIoU
and cgF1 per dataset, zero-shot and fine-tuned, with the gain and the spread over seeds;
strategies ranked by their mean AP over the datasets. Apart from the instance-mIoU tables of
the prompted protocols, which it leaves as they are."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..tables import format_number, markdown_table
from .leaderboard import _pct, _stats
from .plan import _zero_shot_folder, read_record
from .spec import Cell, ModelEntry, SuiteSpec
from .text import TEXT, TEXT_METRICS, TEXT_NAMES


def _metric(done: list[tuple[dict, dict]], key: str) -> dict:
    """One metric over the finished seeds ``[(test entry, zero-shot numbers)]``: the values,
    gains, their means and spreads (a seed whose value or zero-shot value is null counts in
    neither)."""
    pairs = [(t[key], z[key]) for t, z in done if t.get(key) is not None and z.get(key) is not None]
    values, gains = [v for v, _ in pairs], [v - z for v, z in pairs]
    (mean, std), (gain_mean, gain_std) = _stats(values), _stats(gains)
    return {"values": values, "gain": gains, "mean": mean, "std": std,
            "gain_mean": gain_mean, "gain_std": gain_std}  # fmt: skip


def text_row(
    spec: SuiteSpec, records: dict, model: ModelEntry, strategy: Any, dataset: Any
) -> dict:
    """A (model, strategy, dataset) row of the text protocol: per metric of
    :data:`~samtune.suite.text.TEXT_METRICS`, each finished seed's value and gain, their mean
    and sample standard deviation. ``records``: ``{(dataset label, seed): (run, cell.json)}``."""
    done = [(seed, *records[(dataset.label, seed)]) for seed in spec.seeds]
    done = [(seed, run, r) for seed, run, r in done if r is not None]
    pairs = [(r["test"][TEXT], r["zero_shot"][TEXT]) for _, _, r in done]
    return {
        "model": model.label,
        "strategy": strategy.label,
        "dataset": dataset.label,
        "protocol": TEXT,
        "seeds": [seed for seed, _, _ in done],
        "runs": [run for _, run, _ in done],
        **{key: _metric(pairs, key) for key in TEXT_METRICS},
    }


def text_zero_shot(out: Path, model: ModelEntry, dataset: Any) -> dict:
    """The zero-shot numbers of a model on a dataset (None where not evaluated yet)."""
    rel = (_zero_shot_folder(Path(), model, dataset, TEXT) / "zero-shot.json").as_posix()
    record = read_record(out / rel) or {}
    return {"model": model.label, "source": model.source, "dataset": dataset.label,
            **{key: record.get(key) for key in TEXT_METRICS}, "file": rel}  # fmt: skip


def add_text(board: dict, spec: SuiteSpec, out: Path) -> None:
    """Add the text cells to ``board``: ``text_zero_shot``, ``text_rows`` and
    ``text_ranking`` (per model, strategies by mean AP over the datasets, best first)."""
    board.update(text_zero_shot=[], text_rows=[], text_ranking=[])
    for m in (m for m in spec.models if TEXT in spec.protocols_for(m)):
        board["text_zero_shot"] += [text_zero_shot(out, m, d) for d in spec.datasets]
        ranking = []
        for s in spec.strategies:
            cells = [Cell(m, s, d, seed) for d in spec.datasets for seed in spec.seeds]
            records = {(c.dataset.label, c.seed): (f"runs/{c.label}",
                                                   read_record(c.folder(out) / "cell.json"))
                       for c in cells}  # fmt: skip
            rows = [text_row(spec, records, m, s, d) for d in spec.datasets]
            board["text_rows"] += rows
            ranking.append({"model": m.label, "strategy": s.label, "ap_mean": _mean_ap(rows)})
        ranking.sort(key=lambda r: (r["ap_mean"] is None, -(r["ap_mean"] or 0.0)))
        board["text_ranking"] += [{**r, "rank": i + 1} for i, r in enumerate(ranking)]


def _mean_ap(rows: list[dict]) -> float | None:
    """The mean over the datasets of a strategy's mean AP; None until every dataset has one."""
    means = [r["ap"]["mean"] for r in rows]
    return None if not means or None in means else statistics.fmean(means)


def _cell(metric: dict, seeds: int, n_seeds: int) -> str:
    """``24.10 ± 0.40 (+3.20)``: mean, spread over seeds, mean gain (percent points)."""
    if metric["mean"] is None:
        return "pending" if not seeds else "n/a"
    text = _pct(metric["mean"])
    if metric["std"] is not None:
        text += f" ± {_pct(metric['std'])}"
    text += f" ({format_number(metric['gain_mean'], percent=True, signed=True)})"
    if seeds < n_seeds:
        text += f" [{seeds}/{n_seeds} seeds]"
    return text


def _text_table(board: dict, model: str, strategies: dict[str, dict], tail) -> list[str]:
    """One model's table: mean AP, then AP, semantic mIoU and cgF1 per dataset."""
    datasets = board["datasets"]
    zero = {z["dataset"]: z for z in board["text_zero_shot"] if z["model"] == model}
    rows = {(r["strategy"], r["dataset"]): r for r in board["text_rows"] if r["model"] == model}
    header = ["rank", "strategy", "mean AP"]
    header += [f"{d} {TEXT_NAMES[k]}" for d in datasets for k in TEXT_METRICS]
    header += ["trainable params", "adapter", "train time / run"]
    zero_ap = [zero[d]["ap"] for d in datasets]
    mean = None if None in zero_ap else statistics.fmean(zero_ap)
    table = [["", "zero-shot", _pct(mean),
              *(_pct(zero[d][k]) for d in datasets for k in TEXT_METRICS), "", "", ""]]  # fmt: skip
    for rank in (r for r in board["text_ranking"] if r["model"] == model):
        name, n = rank["strategy"], len(board["seeds"])
        cells = [_cell(rows[(name, d)][k], len(rows[(name, d)]["seeds"]), n)
                 for d in datasets for k in TEXT_METRICS]  # fmt: skip
        shown = str(rank["rank"]) if rank["ap_mean"] is not None else ""
        table.append([shown, name, _pct(rank["ap_mean"]), *cells, *tail(strategies[name])])
    return markdown_table(header, table).split("\n")


def format_text(board: dict, tail) -> list[str]:
    """The text section of ``leaderboard.md``: an intro and one table per SAM 3 model.
    ``tail(strategy summary)`` gives the parameters, adapter and time columns."""
    seeds = board["seeds"]
    lines = [
        "Text prompts (SAM 3 asked for every category by name): test-split class-aware mask AP "
        "(COCO segm AP, mean over classes), semantic mIoU and cgF1 (%), with the gain over the "
        "zero-shot base model in parentheses"
        + (
            f"; mean ± standard deviation over seeds {', '.join(map(str, seeds))}."
            if len(seeds) > 1
            else f" (seed {seeds[0]})."
        )
        + " Strategies ranked by AP (mean over the datasets).",
    ]
    for model in dict.fromkeys(z["model"] for z in board["text_zero_shot"]):
        source = next(z["source"] for z in board["text_zero_shot"] if z["model"] == model)
        own = {s["strategy"]: s for s in board["strategies"] if s["model"] == model}
        lines += ["", f"## `{source}`, text prompts", "", *_text_table(board, model, own, tail)]
    return lines


def text_bars(board: dict, model: str) -> dict[str, tuple[list, list]]:
    """``{strategy: (mean AP gain per dataset, its spread)}`` (fractions; None where pending)."""
    rows = [r for r in board["text_rows"] if r["model"] == model]
    out = {}
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        by = {r["dataset"]: r["ap"] for r in rows if r["strategy"] == strategy}
        out[strategy] = ([by[d]["gain_mean"] for d in board["datasets"]],
                         [by[d]["gain_std"] for d in board["datasets"]])  # fmt: skip
    return out


__all__ = ["add_text", "format_text", "text_bars", "text_row"]
