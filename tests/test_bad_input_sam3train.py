"""Bad input of ``samtune fit --prompt text`` (SAM 3 by category name): one line, exit 2,
nothing written. Cases in the shape of :mod:`test_bad_input`'s table."""

from __future__ import annotations

import pytest
from test_bad_input import Case, _write, run_case

CASES = [
    Case(
        "fit-text-prompt-on-a-model-without-text-encoder",
        ["fit", "--prompt", "text", "--dataset", "demo", "-o", "run"],
        ["no text encoder", "SamModel", "SAM 3", "--prompt box"],
        absent=["run"],
    ),
    Case(
        "fit-prompt-map-names-a-missing-category",
        ["fit", "--prompt", "text", "--prompt-map", "bottles=bottle", "-o", "run"],
        ["prompt_map names category 'bottles'", "lacks", "'bottle'"],
        absent=["run"],
    ),
    Case(
        "fit-prompt-map-empty-phrase",
        ["fit", "--prompt", "text", "--prompt-map", "bottle=", "-o", "run"],
        ["prompt_map", "'bottle'", "empty phrase"],
        absent=["run"],
    ),
    Case(
        "fit-prompt-map-without-phrase",
        ["fit", "--prompt", "text", "--prompt-map", "bottle", "-o", "run"],
        ["--prompt-map expects NAME=PHRASE"],
        absent=["run"],
    ),
    Case(
        "fit-prompt-map-phrase-not-text",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["phrase", "must be text"],
        setup=_write("c.yaml", "prompt: text\nprompt_map:\n  bottle: 3\n"),
        absent=["run"],
    ),
    Case(
        "fit-sam3-loss-unknown-setting",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["sam3_loss has no setting 'weight_maks'", "weight_mask"],
        setup=_write("c.yaml", "prompt: text\nsam3_loss:\n  weight_maks: 100\n"),
        absent=["run"],
    ),
    Case(
        "fit-unknown-training-prompt",
        ["fit", "--prompt", "words", "-o", "run"],
        ["training prompt", "text", "text+exemplar"],
        absent=["run"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_sam3train(case: Case, tmp_path, monkeypatch) -> None:
    run_case(case, tmp_path, monkeypatch)
