"""``samtune suite``: a matrix of fine-tuning runs from a YAML spec, with a leaderboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def suite(
    spec: Annotated[
        Path, typer.Argument(help="Suite spec (YAML), e.g. examples/suites/demo.yaml.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Suite folder (default suites/SPEC-NAME); reruns reuse it."
        ),
    ] = None,
    max_cells: Annotated[
        int | None,
        typer.Option(
            "--max-cells", help="Run at most N unfinished cells, then stop (rerun to go on)."
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Check the spec, the data and earlier runs; print the plan; run nothing.",
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress lines or bars.")
    ] = False,
) -> None:
    """Run every cell of a suite (model x strategy x dataset x seed) and print the leaderboard.

    The whole spec is checked before anything trains. Each cell is one `samtune fit` run plus
    its evaluation on the test split with every protocol, in OUT/runs/MODEL/DATASET/STRATEGY/
    seed-N/; each base model is evaluated zero-shot once per dataset and protocol. A rerun
    skips finished cells and resumes interrupted ones. Writes OUT/leaderboard.md, .json and
    .png.

    Examples:

        samtune suite examples/suites/demo.yaml -o suites/demo

        samtune suite examples/suites/waste-vit-b.yaml -o suites/waste-vit-b --max-cells 4
    """
    from ..suite.plan import plan_suite
    from ..suite.run import run_suite
    from ..suite.spec import load_spec

    output = output if output is not None else Path("suites") / spec.stem
    if check:
        plan = plan_suite(load_spec(spec), output)
        for item in plan:
            typer.echo(f"{item.status:<8} {item.folder}")
        todo = sum(item.status != "done" for item in plan)
        typer.echo(f"{len(plan)} cells, {todo} to run; the spec and data check out")
        return

    def show(event) -> None:
        typer.echo(f"[suite] {event.message}", err=True)

    result = run_suite(
        spec, output, max_cells=max_cells, on_event=None if quiet else show, quiet=quiet
    )
    typer.echo(result.markdown, nl=False)
    typer.echo(
        f"\nwrote {result.files['markdown']}, {result.files['json'].name}, {result.files['plot'].name}"
    )
    if not result.complete:
        typer.echo(
            f"{result.pending} of {result.leaderboard['cells']['total']} cells not done yet: "
            "run the same command again to continue",
            err=True,
        )


def register(app: typer.Typer) -> None:
    app.command()(suite)
