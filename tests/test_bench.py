"""The benchmark scripts run end to end on the tiny model and print JSON, then a table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

CASES = {
    "train_step": ["--model", "tiny", "--strategies", "decoder", "lora", "--batch", "1",
                   "--warmup", "1", "--repeat", "1"],
    # compiled variants are left to the GPU suite: inductor's CPU compile alone took 35 s here,
    # and tests/test_fast.py already checks that compile + flex computes what eager does
    "encoder_flops": ["--model", "tiny", "--variants", "sdpa", "eager-attention",
                      "--repeat", "1"],
    "eval_throughput": ["--model", "tiny", "--images", "1", "--instances", "4", "--size", "64"],
    "strategy_sizes": ["--model", "tiny"],
    "automatic": ["--model", "tiny", "--size", "96", "--points-per-side", "3",
                  "--points-per-batch", "4", "9"],
    "train_mfu": ["--model", "tiny", "--strategies", "full", "lora",
                  "--blocks", "last:1", "--grad-ckpt", "--peak-n", "256", "--warmup", "0",
                  "--repeat", "1"],
    "sam3_step": ["--model", "tiny-sam3", "--phrases", "3", "--peak-n", "256", "--repeat", "1"],
}  # fmt: skip


def _json_head(stdout: str) -> dict:
    """The JSON object the script prints before its Markdown table."""
    text = stdout[stdout.index("{") :]
    return json.JSONDecoder().raw_decode(text)[0]


@pytest.mark.slow  # a fresh interpreter (torch, transformers) per script
@pytest.mark.parametrize("name", sorted(CASES))
def test_bench_script_prints_json_and_a_table(name, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *CASES[name]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = _json_head(proc.stdout)
    assert payload, proc.stdout[:500]
    assert "|---" in proc.stdout  # the Markdown table
    if name == "encoder_flops":
        rows = {r["variant"]: r for r in payload["results"]}
        assert set(rows) == {"sdpa", "eager-attention"}
        for row in rows.values():  # every variant computes the SDPA encoder's output
            assert row["max_abs_diff"] < 1e-4 and 0 < row["fraction_of_peak"]
    if name == "automatic":
        assert [r["points_per_batch"] for r in payload["results"]] == [4, 9]
        assert all(
            r["same_masks_as_first"] and r["seconds_per_image"] > 0 for r in payload["results"]
        )
    if name == "train_step":
        row = payload["results"][0]
        assert row["strategy"] == "decoder" and row["cached_s"] > 0
    if name == "sam3_step":
        off, on = payload["results"]
        assert (off["grad_ckpt"], on["grad_ckpt"]) == (False, True) and off["rows"] == 3
        # recomputation adds FLOPs and leaves the gradients as they were
        assert on["step_gflop"] > off["step_gflop"] > 0
        assert on["grad_max_rel_diff"] < 1e-6 and on["trained"] > 0
        assert on["hfu"] > on["mfu"] > 0 and off["peak_mem_mib"] > 0
    if name == "train_mfu":
        rows = {r["strategy"]: r for r in payload["results"]}
        assert set(rows) == {"full", "lora"}
        # the counted step (forward, backward, recomputation) matches forward FLOPs x the
        # backward factors of bench/train_mfu.py:expected_step_flops (3x for what trains
        # with its input's gradient, 2x for frozen blocks backward crosses, +1x recomputed)
        assert abs(rows["full"]["counted/expected"] - 1) < 0.02
        assert abs(rows["lora"]["counted/expected"] - 1) < 0.02
        # full fine-tuning with checkpointing: about 3x forward plus the recomputed blocks;
        # LoRA on the last block only: backward skips the first block
        assert rows["full"]["step_gflop"] > rows["lora"]["step_gflop"]
        for row in rows.values():
            assert 0 < row["mfu"] < 1 and row["peak_mem_mib"] > 0
