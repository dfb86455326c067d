"""Bad input to segmenting and evaluating by name (``segment --text/--classes``, ``eval
--prompt text``): one ``error:`` line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_bad_input import Case, _all, _write, run_case


def _scene(root: Path, _mp) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(root / "scene.png")


def _sam3_folder_without_tokenizer(root: Path, _mp) -> None:
    from samtune.models.loading import load_model

    load_model("tiny-sam3").save_pretrained(root / "sam3-plain")


SEGMENT = ["segment", "scene.png", "-o", "out"]
CASES = [
    Case(
        "text-on-a-model-without-text-encoder",
        [*SEGMENT, "-m", "tiny", "--text", "can"],
        ["sam (SamModel)", "no text encoder", "SAM 3"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "empty-text",
        [*SEGMENT, "-m", "tiny-sam3", "--text", " "],
        ["--text", "is empty"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "text-longer-than-the-text-encoder-reads",
        [*SEGMENT, "-m", "tiny-sam3", "--text", "a " * 31],
        ["33 tokens long", "at most 32", "shorten"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "the-same-text-twice",
        [*SEGMENT, "-m", "tiny-sam3", "--text", "can", "--text", "CAN"],
        ["given twice"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "text-and-classes",
        [*SEGMENT, "-m", "tiny-sam3", "--text", "can", "--classes", "demo"],
        ["--text or with --classes", "not both"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "classes-of-an-unknown-recipe",
        [*SEGMENT, "-m", "tiny-sam3", "--classes", "nosuchdata"],
        ["nosuchdata"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "score-threshold-outside-0-1",
        [*SEGMENT, "-m", "tiny-sam3", "--text", "can", "--score-threshold", "1.5"],
        ["score_threshold", "[0, 1)", "1.5"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "automatic-option-with-text",
        [*SEGMENT, "-m", "tiny-sam3", "--text", "can", "--points-per-side", "8"],
        ["--points-per-side", "automatic segmentation"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "mask-threshold-without-text",
        [*SEGMENT, "-m", "tiny", "--mask-threshold", "0.3"],
        ["--mask-threshold", "segmenting by name"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "sam3-folder-without-tokenizer",
        [*SEGMENT, "-m", "sam3-plain", "--text", "can"],
        ["without its tokenizer", "tokenizer.json"],
        setup=_all(_scene, _sam3_folder_without_tokenizer),
        absent=["out"],
    ),
    Case(
        "over-a-folder-samtune-did-not-write",
        [*SEGMENT, "-m", "tiny-sam3", "--text", "can"],
        ["samtune did not write"],
        setup=_all(_scene, _write("out/scene/mine.txt", "mine")),
        kept={"out/scene/mine.txt": "mine"},
    ),
    Case(
        "segment-everything-with-sam3",
        [*SEGMENT, "-m", "tiny-sam3"],
        ["segmenting everything", "sam3 (Sam3Model)", "--text PHRASE"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "predict-boxes-with-sam3",
        ["predict", "scene.png", "-m", "tiny-sam3", "--boxes", "1,1,20,20", "-o", "out"],
        ["samtune predict", "point and box prompts", "--text PHRASE"],
        setup=_scene,
        absent=["out"],
    ),
    Case(
        "eval-text-on-a-sam-model",
        ["eval", "-m", "tiny", "-d", "demo", "--prompt", "text", "-o", "ev"],
        ["--prompt text", "text encoder", "'tiny' is sam"],
        absent=["ev"],
    ),
    Case(
        "eval-box-on-sam3",
        ["eval", "-m", "tiny-sam3", "-d", "demo", "--prompt", "box", "-o", "ev"],
        ["SAM 3", "--prompt text", "not 'box'"],
        absent=["ev"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_by_name(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)
