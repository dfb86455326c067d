"""Bad recipes on the command line: one line, exit 2, the recipe names, nothing written."""

from __future__ import annotations

import pytest
from test_bad_input import Case, _write, run_case

NAMES = ["default", "lightning-sam", "micro-sam"]

CASES = [
    Case("fit-unknown-recipe", ["fit", "--recipe", "sam2", "-o", "run"],
         ["unknown recipe 'sam2'", *NAMES], absent=["run"]),
    Case("fit-unknown-recipe-in-config", ["fit", "-c", "c.yaml", "-o", "run"],
         ["unknown recipe 'lightning'", *NAMES], setup=_write("c.yaml", "recipe: lightning\n"),
         absent=["run"], kept={"c.yaml": "recipe: lightning\n"}),
    Case("fit-recipe-not-text", ["fit", "-c", "c.yaml", "-o", "run"],
         ["recipe must be one of", *NAMES, "found list"], setup=_write("c.yaml", "recipe: [a]\n"),
         absent=["run"]),
    Case("fit-decay-steps-not-increasing", ["fit", "-c", "c.yaml", "-o", "run"],
         ["decay_steps must be increasing", "[20, 10]"],
         setup=_write("c.yaml", "schedule: step\ndecay_steps: [20, 10]\n"), absent=["run"]),
    Case("fit-decay-factor-below-1", ["fit", "-c", "c.yaml", "-o", "run"],
         ["decay_factor must be >= 1", "0.5"], setup=_write("c.yaml", "decay_factor: 0.5\n"),
         absent=["run"]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_recipe_gets_one_line_and_exit_2(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)
