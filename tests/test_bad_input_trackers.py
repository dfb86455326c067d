"""Bad input for SAM 3's tracker and EdgeTAM: one `error:` line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("timm")  # EdgeTAM's backbone; in the dev extra

from test_bad_input import Case, run_case  # noqa: E402


def _tracker_adapter(root: Path, _mp) -> None:
    import samtune

    model = samtune.get_strategy("decoder").apply(samtune.load_model("tiny-sam3-tracker"))
    samtune.save_adapter(model, root / "adapter")


CASES = [
    Case(
        "export-original-sam3-tracker",
        ["export", "adapter", "out.pt", "--format", "original"],
        ["no converter", "sam3-tracker", "'hf'"],
        setup=_tracker_adapter,
        absent=["out.pt"],
    ),
    Case(
        "fit-adapter-on-edgetam",
        [
            "fit",
            "--model",
            "tiny-edgetam",
            "--strategy",
            "adapter",
            "--dataset",
            "demo",
            "-o",
            "run",
        ],  # fmt: skip
        ["edgetam", "RepViT", "no transformer blocks", "'decoder'"],
        absent=["run"],
    ),
    Case(
        "fit-lora-on-edgetam-without-decoder-attention",
        ["fit", "--model", "tiny-edgetam", "--strategy", "lora", "--dataset", "demo", "-o", "run"],
        ["edgetam", "no attention to adapt", "decoder_attention: true"],
        absent=["run"],
    ),
]


SLOW = {"fit-lora-on-edgetam-without-decoder-attention"}  # the same path as fit-adapter


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.id in SLOW else []) for c in CASES],
)
def test_bad_input(case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)
