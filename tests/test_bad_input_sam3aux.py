"""Bad input of the SAM 3 ``aux_loss`` setting (``sam3_loss: {aux_loss: ...}``): one line,
exit 2, nothing written. Cases in the shape of :mod:`test_bad_input`'s table."""

from __future__ import annotations

import pytest
from test_bad_input import Case, _write, run_case

CASES = [
    Case(
        "fit-sam3-aux-loss-not-a-switch",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["sam3_loss.aux_loss must be true or false", "'yes please'"],
        setup=_write("c.yaml", "prompt: text\nsam3_loss:\n  aux_loss: yes please\n"),
        absent=["run"],
    ),
    Case(
        "fit-sam3-aux-loss-a-number",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["sam3_loss.aux_loss must be true or false", "1"],
        setup=_write("c.yaml", "prompt: text\nsam3_loss:\n  aux_loss: 1\n"),
        absent=["run"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_sam3aux(case: Case, tmp_path, monkeypatch) -> None:
    run_case(case, tmp_path, monkeypatch)
