"""The example scripts under examples/python run as documented (fast settings, tiny model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "python"


def _run(script: str, *args: str, cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_fit_evaluate_and_use_adapter_examples(tmp_path):
    fit_out = _run(
        "fit_demo.py",
        "--model",
        "tiny",
        "--strategy",
        "decoder",
        "--max-steps",
        "3",
        "--set",
        "compare_point=false",
        "--set",
        "val_split=null",
        "--out",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert "| zero-shot |" in fit_out and "| fine-tuned |" in fit_out
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter.safetensors").is_file()

    eval_out = _run("evaluate_adapter.py", str(adapter), "--model", "tiny", cwd=tmp_path)
    assert "| zero-shot |" in eval_out and "| fine-tuned |" in eval_out

    use_out = _run(
        "use_adapter.py",
        str(adapter),
        "--model",
        "tiny",
        "--merged-out",
        str(tmp_path / "merged"),
        cwd=tmp_path,
    )
    assert "IoU" in use_out and (tmp_path / "merged" / "config.json").is_file()


@pytest.mark.slow
def test_sam_family_example_compares_the_three_families(tmp_path):
    out = _run("sam_family.py", "--max-steps", "2", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    for row in ("| tiny (zero-shot) |", "| sam |", "| sam-hq |", "| sam2 |"):
        assert row in out


@pytest.mark.slow
def test_segment_everything_example(tmp_path):
    out = _run("segment_everything.py", "--points-per-side", "4", cwd=tmp_path)
    assert "masks; predicted IoU" in out and "pixels per class:" in out
