"""Bad input files through the command line (issue #22): crafted configs, devices, metrics.

Each case is one line ``error: ...`` with its exit code, nothing written (the table and runner
of ``tests/test_bad_input.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bad_input import ADAPTER, Case, _all, _image, _write, run_case
from test_input_limits import billion_laughs


def _fifo(name: str):
    def setup(root: Path, _mp) -> None:
        os.mkfifo(root / name)

    return setup


def _huge_image(root: Path, mp) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(root / "huge.png")
    mp.setattr(Image, "MAX_IMAGE_PIXELS", 600)


FIT_METRICS = {"steps": 4, "best": {"miou": 0.5, "step": 4}}

CASES = [
    # ---- config files: limits (samtune.io)
    Case(
        "fit-config-billion-laughs",
        ["fit", "-c", "lol.yaml", "-o", "run"],
        ["lol.yaml", "expands to more than", "aliases"],
        setup=_write("lol.yaml", billion_laughs()),
        absent=["run"],
    ),
    Case(
        "fit-config-nested-too-deep",
        ["fit", "-c", "deep.yaml", "-o", "run"],
        ["deep.yaml", "deeper than 100 levels"],
        setup=_write("deep.yaml", "a: " + "[" * 50_000 + "]" * 50_000 + "\n"),
        absent=["run"],
    ),
    Case(
        "fit-config-dev-zero",
        ["fit", "-c", "/dev/zero", "-o", "run"],
        ["'/dev/zero'", "not a regular file"],
        absent=["run"],
    ),
    Case(
        "eval-config-fifo",
        ["eval", "-m", "tiny", "-c", "pipe.yaml", "--split", "test", "-o", "rep"],
        ["pipe.yaml", "not a regular file"],
        setup=_fifo("pipe.yaml"),
        absent=["rep"],
    ),
    Case(
        "fit-config-too-large",
        ["fit", "-c", "big.yaml", "-o", "run"],
        ["big.yaml", "more than the 16 MiB"],
        setup=_write("big.yaml", "# " + "x" * (16 * 2**20) + "\n"),
        absent=["run"],
    ),
    Case(
        "fit-config-yaml-syntax-error",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["c.yaml", "not valid YAML at line 3, column 1", "starts at line 2, column 5"],
        setup=_write("c.yaml", "epochs: 2\nlr: [0.1\n"),
        absent=["run"],
    ),
    Case(
        "predict-prompts-nested-too-deep",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--prompts", "p.json"],
        ["p.json", "deeper than 100 levels"],
        setup=_write("p.json", "[" * 100_000 + "]" * 100_000),
        absent=["o"],
    ),
    Case(
        "predict-image-past-the-bomb-limit",
        ["predict", "huge.png", "-m", "tiny", "-o", "o", "--boxes", "1,2,30,40"],
        ["huge.png", "decompression-bomb limit"],
        setup=_huge_image,
        absent=["o"],
    ),
    # ---- devices
    Case(
        "eval-device-meta",
        ["eval", "-m", "tiny", "--device", "meta", "--split", "test", "-o", "rep"],
        ["'meta'", "cannot run a model", "use one of: cpu"],
        absent=["rep"],
    ),
    Case(
        "eval-device-unknown",
        ["eval", "-m", "tiny", "--device", "gpu0", "--split", "test", "-o", "rep"],
        ["'gpu0'", "is not a device", "cpu"],
        absent=["rep"],
    ),
    Case(
        "predict-device-meta",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--boxes", "1,2,3,4", "--device", "meta"],
        ["--device 'meta'", "cannot run a model", "cpu"],
        setup=lambda r, mp: _image(r),
        absent=["o"],
    ),
    Case(
        "segment-device-meta",
        ["segment", "scene.png", "-m", "tiny", "-o", "o", "--device", "meta"],
        ["'meta'", "cpu"],
        setup=lambda r, mp: _image(r),
        absent=["o"],
    ),
    # ---- files samtune wrote earlier, damaged
    Case(
        "fit-resume-metrics-not-json",
        ["fit", "--resume", "-o", "run"],
        ["run/metrics.json", "not valid JSON"],
        setup=_write("run/metrics.json", "{oops"),
        kept={"run/metrics.json": "{oops"},
    ),
    Case(
        "fit-resume-metrics-comparison-a-list",
        ["fit", "--resume", "-o", "run"],
        ["run/metrics.json", "'comparison' must be a JSON object"],
        setup=_write("run/metrics.json", json.dumps({"comparison": [1, 2]})),
    ),
    Case(
        "export-metrics-comparison-a-list",
        ["export", "adapter", "out", "--format", "hub", "--metrics", "m.json"],
        ["m.json", "'comparison.fine_tuned' must be a JSON object", "found list"],
        setup=_all(
            ADAPTER,
            _write("m.json", json.dumps({**FIT_METRICS, "comparison": {"fine_tuned": [1, 2]}})),
        ),
        absent=["out"],
    ),
    Case(
        "export-metrics-protocol-a-list",
        ["export", "adapter", "out", "--format", "hub", "--metrics", "m.json"],
        ["'comparison.zero_shot.box' must be a JSON object of metrics"],
        setup=_all(
            ADAPTER,
            _write("m.json", json.dumps({**FIT_METRICS, "comparison": {"zero_shot": {"box": []}}})),
        ),
        absent=["out"],
    ),
    Case(
        "export-metrics-best-a-list",
        ["export", "adapter", "out", "--format", "hub", "--metrics", "m.json"],
        ["'best' must be a JSON object"],
        setup=_all(
            ADAPTER,
            _write("m.json", json.dumps({"steps": 4, "best": [0.5], "comparison": {}})),
        ),
        absent=["out"],
    ),
    Case(
        "export-metrics-value-a-list",
        ["export", "adapter", "out", "--format", "hub", "--metrics", "m.json"],
        ["'miou' must be a number", "found list"],
        setup=_all(ADAPTER, _write("m.json", json.dumps({"miou": [0.5, 0.6]}))),
        absent=["out"],
    ),
]

if torch.cuda.is_available():  # `cuda` must be refused only where there is none
    CASES = [c for c in CASES if "cuda" not in c.id]
else:
    CASES.append(
        Case(
            "eval-device-cuda-without-cuda",
            ["eval", "-m", "tiny", "--device", "cuda", "--split", "test", "-o", "rep"],
            ["no CUDA GPU is available", "use one of: cpu"],
            absent=["rep"],
        )
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_file_gets_one_line_and_its_exit_code(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)
