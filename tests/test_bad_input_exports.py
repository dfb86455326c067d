"""Bad input to the annotation-tool exports (`--format x-anylabeling`, `--format cvat`): one
`error:` line, exit 2, nothing written or removed (the table of tests/test_bad_input.py)."""

from __future__ import annotations

import pytest
from test_bad_input import ADAPTER, Case, _all, _write, run_case


def _sam2_adapter(root, _mp) -> None:
    import samtune

    model = samtune.load_model("tiny-sam2")
    samtune.get_strategy("lora").apply(model)
    samtune.save_adapter(model, root / "adapter2")


CASES = [
    Case(
        "unknown-profile",
        ["export", "adapter", "out", "--format", "x-anylabeling", "--profile", "labelme"],
        ["unknown", "'labelme'", "x-anylabeling, samexporter, osam"],
        setup=ADAPTER,
        absent=["out"],
    ),
    Case(
        "profile-with-another-format",
        ["export", "adapter", "out", "--format", "onnx", "--profile", "osam"],
        ["--profile", "x-anylabeling format only"],
        setup=ADAPTER,
        absent=["out"],
    ),
    Case(
        "xanylabeling-over-a-folder-samtune-did-not-write",
        ["export", "adapter", "theirs", "--format", "x-anylabeling", "--overwrite"],
        ["samtune did not write"],
        setup=_all(ADAPTER, _write("theirs/a.txt", "mine")),
        kept={"theirs/a.txt": "mine"},
    ),
    Case(
        "cvat-over-a-folder-samtune-did-not-write",
        ["export", "adapter", "theirs", "--format", "cvat", "--overwrite"],
        ["samtune did not write"],
        setup=_all(ADAPTER, _write("theirs/function.yaml", "mine")),
        kept={"theirs/function.yaml": "mine"},
    ),
    Case(
        "cvat-over-an-existing-folder",
        ["export", "adapter", "theirs", "--format", "cvat"],
        ["exists and is not empty", "--overwrite"],
        setup=_all(ADAPTER, _write("theirs/main.py", "mine")),
        kept={"theirs/main.py": "mine"},
    ),
    Case(
        "xanylabeling-of-sam2",
        ["export", "adapter2", "out", "--format", "x-anylabeling"],
        ["'x-anylabeling' holds SAM (SamModel) only", "Sam2Model"],
        setup=_sam2_adapter,
        absent=["out"],
    ),
    Case(
        "cvat-of-sam2",
        ["export", "adapter2", "out", "--format", "cvat"],
        ["'cvat' holds SAM (SamModel) only"],
        setup=_sam2_adapter,
        absent=["out"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exports(case: Case, tmp_path, monkeypatch) -> None:
    run_case(case, tmp_path, monkeypatch)
