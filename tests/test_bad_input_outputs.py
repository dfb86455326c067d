"""Bad-input table of the output-ownership rule (issue #22): outputs that would replace a
user's file or an input, folders in use, mount points and full disks.

Each case runs through :func:`test_bad_input.run_case`: exit 2, one ``error:`` line with the
words, and nothing written or removed.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml
from test_bad_input import ADAPTER, Case, _all, _write, run_case

TINY_FIT = {
    "model": "tiny",
    "strategy": "decoder",
    "dataset": "demo",
    "dataset_options": {"counts": {"train": 1, "val": 1, "test": 1}},
    "max_steps": 1,
    "val_split": None,
    "compare": False,
    "cache": "off",
    "log_with": None,
}
SPEC = {
    "models": ["tiny"],
    "strategies": ["decoder"],
    "datasets": [{"name": "demo", "options": {"counts": {"train": 1, "val": 1, "test": 1}}}],
    "train": {"max_steps": 1},
}


def _locked(lock: str):
    """``lock`` held by a live process of this host that is not this one (pid 1 never ends)."""

    def setup(root: Path, _mp) -> None:
        from samtune.io import _host

        (root / lock).parent.mkdir(parents=True, exist_ok=True)
        info = {"pid": 1, "host": _host(), "command": "fit", "started": "2026-12-07T12:00:00"}
        (root / lock).write_text(json.dumps(info))

    return setup


def _base_pth(root: Path, _mp) -> None:
    """An adapter trained on ``base.pth``, a checkpoint samtune wrote (with its sidecar)."""
    import samtune

    samtune.models.save_original_checkpoint(samtune.load_model("tiny"), root / "base.pth")
    tuned = samtune.load_model("base.pth")
    samtune.get_strategy("lora").apply(tuned)
    samtune.save_adapter(tuned, root / "adapter")


def _mount_point(name: str):
    def setup(root: Path, mp) -> None:
        (root / name).mkdir()
        real = os.path.ismount
        mp.setattr(os.path, "ismount", lambda p: Path(p).name == name or real(p))

    return setup


def _full_disk(root: Path, mp) -> None:
    import safetensors.torch

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(safetensors.torch, "save_file", save_file)


FIT_CONFIG = _write("c.yaml", yaml.safe_dump(TINY_FIT))

CASES = [
    Case(
        "fit-over-my-config-in-the-current-folder",
        ["fit", "-c", "config.yaml", "-o", "."],
        ["config.yaml", "input of this command"],
        setup=_write("config.yaml", "# mine\n" + yaml.safe_dump(TINY_FIT)),
        kept={"config.yaml": "# mine\n" + yaml.safe_dump(TINY_FIT)},
    ),
    Case(
        "fit-into-a-folder-with-my-results",
        ["fit", "-c", "c.yaml", "-o", "out"],
        ["results.md", "did not write", "--output-dir"],
        setup=_all(FIT_CONFIG, _write("out/results.md", "mine")),
        kept={"out/results.md": "mine"},
    ),
    Case(
        "fit-into-a-folder-in-use",
        ["fit", "-c", "c.yaml", "-o", "run"],
        ["folder in use", "process 1"],
        setup=_all(FIT_CONFIG, _locked("run/.samtune-lock")),
    ),
    Case(
        "eval-into-a-folder-with-my-records",
        ["eval", "-m", "tiny", "--max-images", "1", "-o", "out"],
        ["records.jsonl", "did not write"],
        setup=_write("out/records.jsonl", "mine"),
        kept={"out/records.jsonl": "mine"},
    ),
    Case(
        "eval-into-a-folder-in-use",
        ["eval", "-m", "tiny", "--max-images", "1", "-o", "out"],
        ["folder in use"],
        setup=_locked("out/.samtune-lock"),
    ),
    Case(
        "suite-into-a-folder-with-my-leaderboard",
        ["suite", "spec.yaml", "-o", "out"],
        ["leaderboard.md", "did not write"],
        setup=_all(_write("spec.yaml", yaml.safe_dump(SPEC)), _write("out/leaderboard.md", "x")),
        kept={"out/leaderboard.md": "x"},
    ),
    Case(
        "export-original-over-its-base-model",
        ["export", "adapter", "base.pth", "-f", "original", "--overwrite"],
        ["base.pth", "input of this command"],
        setup=_base_pth,
    ),
    Case(
        "export-into-a-mount-point",
        ["export", "adapter", "mnt", "--format", "hub"],
        ["mount point", "inside it"],
        setup=_all(ADAPTER, _mount_point("mnt")),
    ),
    Case(
        "export-to-a-full-disk",
        ["export", "adapter", "out", "--format", "hub"],
        ["disk", "full"],
        setup=_all(ADAPTER, _full_disk),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_output(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)
