"""Adapter metadata is untrusted JSON: it is read within the limits of every other JSON file."""

from __future__ import annotations

import pytest
from test_bad_input import Case, _adapter, run_case

DEEP = "[" * 100_000 + "]" * 100_000

CASES = [
    Case(
        "adapter-metadata-nested-100k-deep",
        ["export", "adapter", "out"],
        ["strategy_config", "deeper than 100 levels"],
        setup=lambda r, mp: _adapter(r, metadata={"strategy_config": DEEP}),
        absent=["out"],
    ),
    Case(
        "adapter-architecture-nested-100k-deep",
        ["export", "adapter", "out"],
        ["base_architecture", "deeper than 100 levels"],
        setup=lambda r, mp: _adapter(r, metadata={"base_architecture": DEEP}),
        absent=["out"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_adapter_metadata_within_limits(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)
