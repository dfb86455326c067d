"""bench/peers.py: argument errors, the pieces every runner shares (Meta round trip, micro-sam
LoRA folding, the one scoring function), the samtune runner for 2 steps, the table. Never
needs micro-sam or lightning-sam: their runners are skipped with a printed line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _peers_common as common  # noqa: E402
import peers  # noqa: E402


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--steps", "0"], "--steps"),
        (["--seeds", "two"], "whole number"),
        (["--peers", "samtune,nosuch"], "unknown nosuch"),
        (["--recipes", "default,fast"], "--recipes"),
        (["--peers", "lightning-sam", "--lightning-sam", "/nonexistent/ls"], "not a checkout"),
    ],
)
def test_bad_arguments_exit_2_with_one_error_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        peers.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


def test_work_dir_must_be_new_or_empty(tmp_path, capsys):
    (tmp_path / "someone's.txt").write_text("kept")
    with pytest.raises(SystemExit) as exc:
        peers.main(["--peers", "samtune", "--work-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "someone's.txt").read_text() == "kept"


def test_a_lightning_sam_checkout_is_recognised(tmp_path):
    (tmp_path / "lightning_sam").mkdir()
    (tmp_path / "lightning_sam" / "train.py").write_text("")
    argv = ["--peers", "lightning-sam", "--lightning-sam", str(tmp_path)]
    args = peers.build_parser().parse_args(argv)
    runners = peers.select_runners(args, peers.build_parser())
    assert [r.name for r in runners] == ["lightning-sam-decoder"]


def test_peers_and_recipes_select_runners():
    args = peers.build_parser().parse_args(
        ["--peers", "samtune,micro-sam-lora", "--recipes", "default,micro-sam"]
    )
    names = [r.name for r in peers.select_runners(args, peers.build_parser())]
    assert names == [
        "samtune-decoder",
        "samtune-lora",
        "samtune-decoder-recipe-micro-sam",
        "samtune-lora-recipe-micro-sam",
        "micro-sam-lora",
    ]


def test_absent_peers_are_skipped_with_a_line(capsys, monkeypatch):
    import _peers_microsam

    monkeypatch.setattr(_peers_microsam, "REQUIRED", ("no_such_module_for_peers",))
    runners = peers.all_runners(["default"])
    kept = peers.available(runners, lightning=None)
    assert {r.group for r in kept} == {"samtune"}
    err = capsys.readouterr().err
    assert "skipped micro-sam: no_such_module_for_peers not installed" in err
    assert "skipped lightning-sam: no --lightning-sam PATH" in err


def test_meta_round_trip_is_lossless(tmp_path):
    """What every peer hands back (a Meta state dict) scores as the same demo model."""
    model = common.demo_model()
    meta = common.write_meta_checkpoint(model, tmp_path / "demo.pth")
    back = common.samtune_state_from_meta(common.read_meta_checkpoint(meta))
    weights = common.save_weights(back, tmp_path / "w.safetensors")
    loaded = common.load_scored_model(weights).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded[name], tensor), name


def _micro_sam_lora_forward(w, bias, parts, x):
    """micro_sam 1.8.14 models/peft_sam.py AttentionLoRA.forward (alpha 1), written out."""
    dim = w.shape[1]
    qkv = x @ w.T + bias
    new = {n: x @ parts[f"w_a_linear_{n}.weight"].T @ parts[f"w_b_linear_{n}.weight"].T
           if f"w_a_linear_{n}.weight" in parts else 0 for n in "qkv"}  # fmt: skip
    return torch.cat(
        [qkv[..., :dim] + new["q"], qkv[..., dim:-dim] + new["k"], qkv[..., -dim:] + new["v"]], -1
    )


def test_micro_sam_lora_folds_into_qkv():
    g = torch.Generator().manual_seed(0)
    dim, rank = 12, 4
    w, bias = torch.randn(3 * dim, dim, generator=g), torch.randn(3 * dim, generator=g)
    parts = {
        "w_a_linear_q.weight": torch.randn(rank, dim, generator=g),
        "w_b_linear_q.weight": torch.randn(dim, rank, generator=g),
        "w_a_linear_v.weight": torch.randn(rank, dim, generator=g),
        "w_b_linear_v.weight": torch.randn(dim, rank, generator=g),
    }
    p = "image_encoder.blocks.0.attn.qkv."
    sd = {p + "qkv_proj.weight": w, p + "qkv_proj.bias": bias, "other": torch.ones(2)}
    sd.update({p + k: v for k, v in parts.items()})
    merged = common.merge_micro_sam_lora(sd)
    assert set(merged) == {p + "weight", p + "bias", "other"}
    x = torch.randn(5, dim, generator=g)
    expected = _micro_sam_lora_forward(w, bias, parts, x)
    got = x @ merged[p + "weight"].T + merged[p + "bias"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(sd[p + "qkv_proj.weight"], w)  # the input is left as it was


def test_meta_rebuild_matches_samtune_logits():
    pytest.importorskip("segment_anything")
    from samtune.data import load_dataset

    gap = common.conversion_gap(common.demo_model(), load_dataset("demo", "test")[0])
    assert gap < 1e-4


def test_label_image_numbers_instances_and_leaves_crowd_out():
    import numpy as np

    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:3] = True  # covers row 1 of the first
    masks[2, 3] = True
    labels = common.label_image(masks, np.array([False, False, True]))
    assert labels.dtype == np.uint16
    assert labels.tolist() == [[1] * 4, [2] * 4, [2] * 4, [0] * 4]


def test_samtune_runner_two_steps_is_timed_and_scored(tmp_path):
    import _peers_samtune

    from samtune.data import load_dataset

    record = _peers_samtune.run("decoder", "default", 0, 2, 2, tmp_path)
    assert record.steps_done == 2 and record.s_per_step > 0 and record.s_epoch1 is None
    subset = [load_dataset("demo", "test")[i] for i in range(2)]
    trained = common.score(record.weights, subset)
    assert 0 < trained < 100
    # the one scoring function is samtune.evaluate's box protocol
    import samtune

    model = common.load_scored_model(record.weights)
    assert trained == pytest.approx(100 * samtune.evaluate(model, subset, "box").metrics["miou"])
    assert trained != common.score(None, subset)  # the trained weights were read


def test_table_rows_ratios_and_spread():
    def rec(runner, seed, miou, step):
        return common.RunRecord(runner, seed, 4, 2, 2, 4, 4 * step, step, 2 * step, "w",
                                miou=miou, peak_rss_mb=100.0 + seed)  # fmt: skip

    records = [rec("samtune-decoder", 0, 60.0, 1.0), rec("micro-sam-decoder", 0, 62.0, 2.0),
               rec("samtune-decoder", 1, 62.0, 1.0), rec("micro-sam-decoder", 1, 64.0, 1.0)]  # fmt: skip
    runners = {r.name: r for r in peers.all_runners(["default"])}
    rows = peers.summarize(records, runners)
    assert [r["runner"] for r in rows] == ["samtune-decoder", "micro-sam-decoder"]
    assert rows[1]["vs_samtune"] == pytest.approx(1.5) and rows[1]["peak_rss_mb"] == 101.0
    text = peers.table({"zero_shot_miou": 58.5}, rows)
    assert "| micro-sam-decoder | 63.00 ± 1.41 | 1.500 | 1.50 | 3.0 | 101 | 2 |" in text
    assert "| zero-shot | 58.50 |" in text


@pytest.mark.slow  # a fresh interpreter, 2 steps, two evaluations of the demo test split
def test_bench_end_to_end_samtune_only(tmp_path):
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "peers.py"), "--steps", "2", "--seeds", "1",
         "--peers", "samtune-decoder", "--json", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| samtune-decoder |" in proc.stdout and "| zero-shot | 58.55 |" in proc.stdout
    assert out.is_file()
