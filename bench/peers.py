"""Peer bench: samtune against micro-sam and lightning-sam, same model, data, steps and scoring.

Every runner fine-tunes the bundled ``demo`` SAM on the demo dataset's train split for the
same number of optimizer steps at the same batch size, with box prompts and its own loss,
prompt and schedule defaults:

- ``samtune-decoder``, ``samtune-lora``: ``samtune.fit`` with samtune's defaults (LoRA rank 8);
  ``--recipes default,micro-sam,lightning-sam`` adds rows for samtune's named recipes;
- ``micro-sam-decoder``, ``micro-sam-lora``: micro_sam's training path around the demo SAM
  converted to Meta's format, box prompts only (``bench/_peers_microsam.py`` says how);
- ``lightning-sam-decoder``: luca-medeiros/lightning-sam's code from a checkout
  (``--lightning-sam PATH``), only its paths, device and step count set
  (``bench/_peers_lightning.py``).

micro-sam and lightning-sam are optional (``pip install "samtune[peers]"`` and a lightning-sam
checkout); a missing one is skipped with a line saying why. Rounds are interleaved (round r
runs every runner with seed r), so load on the machine falls on all alike. Each run is its
own process: its peak RSS (``getrusage`` of that child) is the memory column, and it hands
back the trained weights in samtune's format; the parent scores all of them with one
function, samtune's box-prompt evaluation on the demo's test split (``samtune eval --prompt
box``).

Usage::

    python bench/peers.py                                     # 5 seeds x 200 steps
    OMP_NUM_THREADS=1 python bench/peers.py --seeds 2 --steps 200 \\
        --lightning-sam ~/src/lightning-sam --json peers.json

Prints a Markdown table: test box mIoU (mean +- std over seeds), seconds per step and for
the first epoch (and the ratio to the samtune runner of the same strategy), peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _peers_common import RunRecord, mean_std  # noqa: E402

GROUPS = ("samtune", "micro-sam", "lightning-sam")
RECIPES = ("default", "micro-sam", "lightning-sam")


@dataclass(frozen=True)
class Runner:
    """One row of the table: who trains (``group``), what (``strategy``), how (``recipe``)."""

    group: str
    strategy: str
    recipe: str = "default"

    @property
    def name(self) -> str:
        base = f"{self.group}-{self.strategy}"
        return base if self.recipe == "default" else f"{base}-recipe-{self.recipe}"


def all_runners(recipes: list[str]) -> list[Runner]:
    runners = [Runner("samtune", s, r) for r in recipes for s in ("decoder", "lora")]
    return runners + [
        Runner("micro-sam", "decoder"),
        Runner("micro-sam", "lora"),
        Runner("lightning-sam", "decoder"),
    ]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (the project's bad-input rule)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1; found {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=_positive, default=200, help="optimizer steps per run")
    p.add_argument("--seeds", type=_positive, default=5, help="seeds 0..N-1, one round each")
    p.add_argument("--batch-size", type=_positive, default=2, help="images per step")
    p.add_argument("--peers", default=",".join(GROUPS),
                   help=f"comma list of {', '.join(GROUPS)} and/or runner names")  # fmt: skip
    p.add_argument("--recipes", default="default",
                   help=f"samtune recipes for samtune rows: {', '.join(RECIPES)}")  # fmt: skip
    p.add_argument("--lightning-sam", type=Path, default=None,
                   help="a checkout of luca-medeiros/lightning-sam")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write every run's record here")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="keep each run's folder (log, weights) here; a new or empty folder "
                        "(default: a temporary folder, removed after)")  # fmt: skip
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--shared", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def select_runners(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Runner]:
    """The runners ``--peers`` and ``--recipes`` ask for (bad names: parser.error, exit 2)."""
    recipes = _split(args.recipes)
    bad = [r for r in recipes if r not in RECIPES]
    if bad or not recipes:
        parser.error(
            f"--recipes: expected a comma list of {', '.join(RECIPES)}; found {args.recipes!r}"
        )
    runners = all_runners(recipes)
    by_name = {r.name: r for r in runners}
    wanted = _split(args.peers)
    unknown = [w for w in wanted if w not in GROUPS and w not in by_name]
    if unknown or not wanted:
        parser.error(
            f"--peers: unknown {', '.join(unknown) or 'empty list'}; expected a comma list of "
            f"{', '.join(GROUPS)} or runner names ({', '.join(by_name)})"
        )
    chosen = [r for r in runners if r.group in wanted or r.name in wanted]
    if args.work_dir is not None and args.work_dir.exists():
        if not args.work_dir.is_dir() or any(args.work_dir.iterdir()):
            parser.error(f"--work-dir {str(args.work_dir)!r} exists and is not an empty folder")
    if args.lightning_sam is not None and any(r.group == "lightning-sam" for r in chosen):
        from _peers_lightning import check_checkout

        problem = check_checkout(args.lightning_sam)
        if problem:
            parser.error(problem)
    return chosen


def available(runners: list[Runner], lightning: Path | None) -> list[Runner]:
    """The runners whose code is installed; one printed line for each group skipped."""
    from _peers_lightning import missing_modules as lightning_missing
    from _peers_microsam import missing_modules as micro_missing

    reasons: dict[str, str] = {}
    groups = {r.group for r in runners}
    if "micro-sam" in groups and (missing := micro_missing()):
        reasons["micro-sam"] = f'{", ".join(missing)} not installed (pip install "samtune[peers]")'
    if "lightning-sam" in groups:
        if lightning is None:
            reasons["lightning-sam"] = (
                "no --lightning-sam PATH (a checkout of luca-medeiros/lightning-sam)"
            )
        elif missing := lightning_missing():
            reasons["lightning-sam"] = (
                f'{", ".join(missing)} not installed (pip install "samtune[peers]")'
            )
    for group, reason in reasons.items():
        print(f"skipped {group}: {reason}", file=sys.stderr)
    return [r for r in runners if r.group not in reasons]


# --------------------------------------------------------------------------- child side


def run_child(args: argparse.Namespace) -> int:
    """Train one runner with one seed; write ``result.json`` into ``--work``."""
    runner = {r.name: r for r in all_runners(list(RECIPES))}[args.child]
    work, shared = args.work, args.shared
    checkpoint = shared / "demo-meta.pth"
    if runner.group == "samtune":
        from _peers_samtune import run

        record = run(runner.strategy, runner.recipe, args.seed, args.steps, args.batch_size, work)
    elif runner.group == "micro-sam":
        from _peers_microsam import run

        record = run(runner.strategy, shared / "labels", checkpoint, args.seed, args.steps,
                     args.batch_size, work)  # fmt: skip
    else:
        from _peers_lightning import run

        record = run(args.lightning_sam, checkpoint, args.seed, args.steps, args.batch_size, work)
    record.runner = runner.name
    record.write(work / "result.json")
    return 0


# --------------------------------------------------------------------------- parent side


class RunFailed(Exception):
    pass


def spawn(
    runner: Runner, seed: int, args: argparse.Namespace, work: Path, shared: Path
) -> RunRecord:
    """Run one training in a child process; its record with the child's peak RSS."""
    run_dir = work / f"{runner.name}-seed{seed}"
    run_dir.mkdir(parents=True)
    cmd = [sys.executable, str(BENCH / "peers.py"), "--child", runner.name, "--seed", str(seed),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--work", str(run_dir), "--shared", str(shared)]  # fmt: skip
    if args.lightning_sam is not None:
        cmd += ["--lightning-sam", str(args.lightning_sam.resolve())]
    log = run_dir / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=run_dir)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RunFailed(f"{runner.name} seed {seed} failed (exit {proc.returncode}):\n{tail}")
    record = RunRecord.read(run_dir / "result.json")
    if record.steps_done != args.steps:
        raise RunFailed(
            f"{runner.name} seed {seed} ran {record.steps_done} steps, not {args.steps}"
        )
    record.peak_rss_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
    return record


def prepare(shared: Path, runners: list[Runner]) -> dict:
    """The demo in Meta's format (and micro-sam's label images); the conversion's gap."""
    from _peers_common import conversion_gap, demo_model, write_meta_checkpoint

    from samtune.data import load_dataset

    shared.mkdir(parents=True, exist_ok=True)
    if all(r.group == "samtune" for r in runners):
        return {}
    model = demo_model()
    write_meta_checkpoint(model, shared / "demo-meta.pth")
    gap = conversion_gap(model, load_dataset("demo", "test")[0])
    facts = {"meta_conversion_max_abs_logit_diff": gap}
    if any(r.group == "micro-sam" for r in runners):
        from _peers_microsam import prepare_data

        prepare_data(shared / "labels")
    return facts


def bench(args: argparse.Namespace, runners: list[Runner]) -> tuple[dict, list[RunRecord]]:
    """Interleaved rounds: for each seed, every runner once. Scored by one function."""
    from _peers_common import score

    from samtune.data import load_dataset

    test = load_dataset("demo", "test")
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="samtune-peers-")))
        else:
            work = args.work_dir
            work.mkdir(parents=True, exist_ok=True)
        facts = prepare(work / "shared", runners)
        facts["zero_shot_miou"] = score(None, test)
        records = []
        for seed in range(args.seeds):
            for runner in runners:
                record = spawn(runner, seed, args, work, work / "shared")
                record.miou = score(record.weights, test)
                if args.work_dir is None:  # the folder goes with the run
                    record.weights = Path(record.weights).name
                print(f"seed {seed} {runner.name}: mIoU {record.miou:.2f}, "
                      f"{record.s_per_step:.3f} s/step, {record.peak_rss_mb:.0f} MB",
                      file=sys.stderr, flush=True)  # fmt: skip
                records.append(record)
    return facts, records


# --------------------------------------------------------------------------- table


def summarize(records: list[RunRecord], runners: dict[str, Runner]) -> list[dict]:
    """One row per runner, in first-seen order: means over seeds, the peak RSS over seeds,
    and the time per step as a ratio to the samtune runner of the same strategy."""
    runs: dict[str, list[RunRecord]] = {}
    for rec in records:
        runs.setdefault(rec.runner, []).append(rec)
    rows = []
    for name, group in runs.items():
        miou, miou_sd = mean_std([r.miou for r in group])
        epochs = [r.s_epoch1 for r in group if r.s_epoch1 is not None]
        rows.append({
            "runner": name, "seeds": len(group), "miou": miou, "miou_std": miou_sd,
            "s_per_step": mean_std([r.s_per_step for r in group])[0],
            "s_epoch1": mean_std(epochs)[0] if epochs else None,
            "peak_rss_mb": max(r.peak_rss_mb for r in group),
        })  # fmt: skip
    steps = {row["runner"]: row["s_per_step"] for row in rows}
    for row in rows:
        base = steps.get(f"samtune-{runners[row['runner']].strategy}")
        row["vs_samtune"] = row["s_per_step"] / base if base else None
    return rows


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def table(facts: dict, rows: list[dict]) -> str:
    lines = [
        "| run | test box mIoU | s/step | vs samtune | s/epoch (1st) | peak RSS MB | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| zero-shot | {facts['zero_shot_miou']:.2f} | | | | | |",
    ]
    for r in rows:
        miou = f"{r['miou']:.2f}" + ("" if r["miou_std"] is None else f" ± {r['miou_std']:.2f}")
        lines.append(
            f"| {r['runner']} | {miou} | {r['s_per_step']:.3f} | {_num(r['vs_samtune'], '.2f')} "
            f"| {_num(r['s_epoch1'], '.1f')} | {r['peak_rss_mb']:.0f} | {r['seeds']} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "samtune_commit": commit or None,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    runners = available(select_runners(args, parser), args.lightning_sam)
    if not runners:
        print("error: no runner left to run (see the lines above)", file=sys.stderr)
        return 2
    try:
        facts, records = bench(args, runners)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = summarize(records, {r.name: r for r in runners})
    payload = {"args": {"steps": args.steps, "seeds": args.seeds, "batch_size": args.batch_size,
                        "runners": [r.name for r in runners]},
               "machine": machine(), **facts}  # fmt: skip
    print(json.dumps(payload, indent=2))
    print()
    print(table(facts, rows))
    if args.json is not None:
        args.json.write_text(json.dumps({**payload, "rows": rows,
                                         "runs": [asdict(r) for r in records]}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
