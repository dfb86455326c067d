"""The leaderboard: computed from the ``cell.json`` records alone (mean and spread over seeds,
gain over zero-shot), written as Markdown, JSON and a plot."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..io import atomic_write
from ..tables import format_change, format_number, markdown_table
from .plan import _write_json, _zero_shot_folder, read_record
from .spec import FORMAT, Cell, DatasetEntry, ModelEntry, StrategyEntry, SuiteSpec, load_spec
from .text import TEXT, is_text


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
        With the ``text`` protocol also ``text_zero_shot``, ``text_rows`` and
        ``text_ranking`` (:func:`samtune.suite.leaderboard_text.add_text`): its cells are
        scored by class-aware AP, semantic mIoU and cgF1, apart from the mIoU rows.
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
        prompted = [p for p in spec.protocols_for(m) if not is_text(p)]
        for d in spec.datasets:
            for p in prompted:
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
                _row(spec, records, m, s, d, p) for d in spec.datasets for p in prompted
            ]
            board["strategies"].append(_strategy_summary(m, s, records))
    board["cells"] = {"total": len(spec.cells()), "done": done}
    board["test_splits"] = list(dict.fromkeys(d.splits["test"] for d in spec.datasets))
    if TEXT in spec.protocols:
        from .leaderboard_text import add_text

        add_text(board, spec, out)
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
    zero = {
        (z["dataset"], z["protocol"]): z["miou"] for z in board["zero_shot"] if z["model"] == model
    }
    columns = [(d, p) for d in board["datasets"] for p in board["protocols"] if (d, p) in zero]
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
        table.append([s["strategy"], *cells, *_strategy_columns(s)])
    return markdown_table(header, table).split("\n")


def _split_words(board: dict) -> str:
    """``Test-split``, or the split a spec scores instead (``val-split``: choosing on val)."""
    splits = board.get("test_splits", ["test"])  # absent from boards built before it was added
    return "Test-split" if splits == ["test"] else f"{'/'.join(splits)}-split"


def _strategy_columns(s: dict) -> list[str]:
    """Trainable parameters, adapter size and mean training time of a strategy summary."""
    return [
        _span(s["trainable_params"], lambda n: f"{n:,}"),
        _span(s["adapter_bytes"], _size),
        _duration(s["train_seconds_mean"]) + (" *" if any(s["resumed"]) else ""),
    ]


def format_leaderboard(board: dict) -> str:
    """The leaderboard as Markdown: one table per base model (see :func:`build_leaderboard`);
    the text cells' tables (class-aware AP) after the instance-mIoU ones."""
    seeds = board["seeds"]
    done = f" {board['cells']['done']} of {board['cells']['total']} cells done."
    lines = [f"# {board['name']}", ""]
    if board["zero_shot"] or not board.get("text_zero_shot"):
        lines[-1:] = [
            "",
            f"{_split_words(board)} instance mIoU (%) per dataset and protocol, with the gain "
            "over the zero-shot base model in parentheses"
            + (
                f"; mean ± standard deviation over seeds {', '.join(map(str, seeds))}."
                if len(seeds) > 1
                else f" (seed {seeds[0]})."
            )
            + done,
        ]
    for model in dict.fromkeys(z["model"] for z in board["zero_shot"]):
        source = next(z["source"] for z in board["zero_shot"] if z["model"] == model)
        lines += ["", f"## `{source}`", "", *_model_table(board, model)]
    if board.get("text_zero_shot"):
        from .leaderboard_text import format_text

        text = format_text(board, _strategy_columns)
        text[0] += "" if board["zero_shot"] else done
        lines += ["", *text] if board["zero_shot"] else text
    if any(any(s["resumed"]) for s in board["strategies"]):
        lines += [
            "",
            "\\* some runs were resumed: their time counts only the part after the resume.",
        ]
    return "\n".join(lines) + "\n"


def _panels(board: dict) -> dict[str, list[str]]:
    """``{model: its panels}``: each prompted protocol it was evaluated with, then ``text``."""
    panels: dict[str, list[str]] = {}
    for z in board["zero_shot"]:
        panels.setdefault(z["model"], [])
        if z["protocol"] not in panels[z["model"]]:
            panels[z["model"]].append(z["protocol"])
    for z in board.get("text_zero_shot", []):
        panels.setdefault(z["model"], [])
        if TEXT not in panels[z["model"]]:
            panels[z["model"]].append(TEXT)
    return panels


def _bars(board: dict, model: str, protocol: str) -> dict[str, tuple[list, list]]:
    """``{strategy: (mean gain per dataset, its spread over seeds)}``: mIoU, or AP for text."""
    if is_text(protocol):
        from .leaderboard_text import text_bars

        return text_bars(board, model)
    rows = [r for r in board["rows"] if r["model"] == model and r["protocol"] == protocol]
    out = {}
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        by = {r["dataset"]: r for r in rows if r["strategy"] == strategy}
        out[strategy] = ([by[d]["gain_mean"] for d in board["datasets"]],
                         [by[d]["gain_std"] for d in board["datasets"]])  # fmt: skip
    return out


def plot_gains(board: dict, path: str | Path) -> Path:
    """Bar chart of the mean gain over zero-shot per strategy and dataset (one panel per
    model and protocol: instance mIoU, class-aware AP for ``text``; error bars: standard
    deviation over seeds), written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    panels, datasets = _panels(board), board["datasets"]
    width_n = max(len(p) for p in panels.values())
    fig, axes = plt.subplots(
        len(panels),
        width_n,
        squeeze=False,
        figsize=(max(4.0, 1.6 * len(datasets) + 2) * width_n, 3.2 * len(panels)),
    )
    for (mi, model), (pi, protocol) in (
        (m, p) for m in enumerate(panels) for p in enumerate(panels[m[1]])
    ):
        ax = axes[mi][pi]
        bars = _bars(board, model, protocol)
        width = 0.8 / max(1, len(bars))
        for si, (strategy, (gains, spread)) in enumerate(bars.items()):
            gain = [100 * (g if g is not None else np.nan) for g in gains]
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
        ax.set_ylabel("AP gain (points)" if is_text(protocol) else "mIoU gain (points)")
        ax.set_title(f"{model}, {protocol} prompts")
        ax.legend(fontsize=8)
    for mi, model in enumerate(panels):  # a model with fewer panels than the widest row
        for pi in range(len(panels[model]), width_n):
            axes[mi][pi].axis("off")
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
