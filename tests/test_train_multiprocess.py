"""Two CPU processes (gloo) through ``accelerate launch -m samtune fit``: every instance once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import free_port

from samtune.data import load_dataset

CPU_CONFIG = Path(__file__).parents[1] / "examples" / "accelerate" / "cpu.yaml"
COUNTS = {"train": 6, "val": 5, "test": 3}  # odd sizes: shards of unequal length


@pytest.mark.slow
def test_two_process_cpu_run_counts_every_validation_instance_once(tmp_path):
    data = tmp_path / "demo"
    config = {
        "model": "tiny",
        "dataset": "demo",
        "dataset_root": str(data),
        "dataset_options": {"counts": COUNTS},
        "epochs": 1,
        "batch_size": 1,
        "lr": 1e-3,
        "log_with": None,
        "compare_point": False,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    # the shipped CPU config: Accelerate starts 2 processes through torchrun; without GPUs
    # samtune then builds a gloo (CPU) process group
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
           "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "samtune", "fit", "--strategy", "decoder", "--config", str(tmp_path / "config.yaml"),
           "-o", str(run), "--quiet"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "trainable parameters" in done.stdout and "note:" not in done.stdout

    # the oracle: the instance counts of the splits, read independently
    instances = {s: sum(int((~x.iscrowd).sum()) for x in load_dataset("demo", s, root=data, counts=COUNTS)) for s in ("val", "test")}  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    # 6 images, batch 1 per process, 2 processes: 3 steps
    assert metrics["steps"] == 3
    [validation] = metrics["validation"]
    assert validation["metrics"]["num_instances"] == instances["val"]
    assert validation["metrics"]["num_images"] == COUNTS["val"]
    for when in ("zero_shot", "fine_tuned"):
        assert metrics["comparison"][when]["box"]["num_instances"] == instances["test"]
    assert (run / "adapter" / "adapter.safetensors").is_file()
    assert (run / "results.md").is_file()


@pytest.mark.parametrize("path", sorted(CPU_CONFIG.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 2 and config.num_machines >= 1
    assert config.mixed_precision in ("no", "fp16", "bf16")
