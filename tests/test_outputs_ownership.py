"""One ownership rule for every command's outputs (samtune.io, docs/security.md).

samtune never replaces a file it did not write, never an input of the same command, never
writes outside the folder it was given, and one command writes a folder at a time. Each test
reproduces a data loss of issue #22 on the command line (or the function the command calls)
and checks that the user's files keep their bytes.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import samtune
from samtune.cli import app
from samtune.errors import InputError, SamtuneWarning
from samtune.io import (
    LOCK,
    MANIFEST,
    RUN_MARKER,
    atomic_dir,
    atomic_write,
    claim_output,
    output_lock,
    write_safetensors,
)

TINY_FIT = {
    "model": "tiny",
    "strategy": "decoder",
    "dataset": "demo",
    "dataset_options": {"counts": {"train": 2, "val": 1, "test": 1}},
    "max_steps": 1,
    "batch_size": 1,
    "max_instances": 2,
    "val_split": None,
    "compare": False,
    "cache": "off",
    "log_with": None,
}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    return result, errors


def _refused(result, errors, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(errors) == 1, result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output
    for word in words:
        assert word in errors[0], (word, errors[0])


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _host() -> str:
    from samtune.io import _host

    return _host()


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    model = samtune.load_model("tiny")
    samtune.get_strategy("lora").apply(model)
    samtune.save_adapter(model, folder)
    return folder


# --------------------------------------------------------------------------- 1. fit


def test_fit_never_replaces_its_own_config_file(in_tmp):
    text = "# my settings, with comments\n" + yaml.safe_dump(TINY_FIT)
    (in_tmp / "config.yaml").write_text(text)
    result, errors = _invoke("fit", "-c", "config.yaml", "-o", ".")
    _refused(result, errors, "config.yaml", "input of this command")
    assert (in_tmp / "config.yaml").read_text() == text
    assert sorted(p.name for p in in_tmp.iterdir()) == ["config.yaml"]  # no marker, no lock


def test_fit_refuses_a_folder_holding_files_of_the_names_it_writes(in_tmp):
    (in_tmp / "c.yaml").write_text(yaml.safe_dump(TINY_FIT))
    mine = in_tmp / "mine"
    (mine / "adapter").mkdir(parents=True)
    (mine / "metrics.json").write_text('{"mine": 1}')
    (mine / "adapter" / "notes.txt").write_text("mine")
    before = _tree(in_tmp)
    result, errors = _invoke("fit", "-c", "c.yaml", "-o", "mine")
    _refused(result, errors, "metrics.json", "adapter", "did not write")
    assert _tree(in_tmp) == before
    assert sorted(p.name for p in mine.iterdir()) == ["adapter", "metrics.json"]


def test_fit_reuses_its_own_run_folder_and_records_what_it_wrote(in_tmp):
    (in_tmp / "c.yaml").write_text(yaml.safe_dump(TINY_FIT))
    (in_tmp / "run").mkdir()
    (in_tmp / "run" / "notes.md").write_text("mine")  # a file fit does not write is kept
    result, _ = _invoke("fit", "-c", "c.yaml", "-o", "run")
    assert result.exit_code == 0, result.output
    marker = json.loads((in_tmp / "run" / RUN_MARKER).read_text())["entries"]
    written = ("adapter", "checkpoints", "config.yaml", "metrics.json")
    assert marker == {name: "fit" for name in written}, marker
    assert not (in_tmp / "run" / LOCK).exists()
    assert (in_tmp / "run" / "notes.md").read_text() == "mine"
    # the run's own config.yaml given back with -c (the documented way to resume) is its record
    again, _ = _invoke("fit", "-c", "run/config.yaml", "--resume")
    assert again.exit_code == 0, again.output


# --------------------------------------------------------------------------- 2. eval


def test_eval_refuses_to_replace_a_report_it_did_not_write(in_tmp):
    (in_tmp / "mine").mkdir()
    (in_tmp / "mine" / "report.md").write_text("my report")
    result, errors = _invoke("eval", "-m", "tiny", "--max-images", "1", "-o", "mine")
    _refused(result, errors, "report.md", "did not write")
    assert (in_tmp / "mine" / "report.md").read_text() == "my report"
    assert sorted(p.name for p in (in_tmp / "mine").iterdir()) == ["report.md"]


def test_eval_into_a_run_folder_keeps_fits_metrics(in_tmp):
    with claim_output(in_tmp / "run", command="fit", names=["metrics.json"]):
        (in_tmp / "run" / "metrics.json").write_text('{"fit": 1}')
    result, errors = _invoke("eval", "-m", "tiny", "--max-images", "1", "-o", "run")
    _refused(result, errors, "metrics.json", "samtune fit wrote")
    assert (in_tmp / "run" / "metrics.json").read_text() == '{"fit": 1}'


# --------------------------------------------------------------------------- 3. suite


def test_suite_never_replaces_its_spec(in_tmp):
    spec = {
        "models": ["tiny"],
        "strategies": ["decoder"],
        "datasets": [{"name": "demo", "options": {"counts": {"train": 1, "val": 1, "test": 1}}}],
        "train": {"max_steps": 1},
    }
    text = "# my suite\n" + yaml.safe_dump(spec)
    (in_tmp / "spec.yaml").write_text(text)
    result, errors = _invoke("suite", "spec.yaml", "-o", ".")
    _refused(result, errors, "spec.yaml", "input of this command")
    assert (in_tmp / "spec.yaml").read_text() == text
    assert sorted(p.name for p in in_tmp.iterdir()) == ["spec.yaml"]


# --------------------------------------------------------------------------- 4. export


def test_export_never_replaces_the_adapters_base_model(in_tmp):
    base = samtune.load_model("tiny")
    samtune.models.save_original_checkpoint(base, in_tmp / "base.pth")
    tuned = samtune.load_model("base.pth")
    samtune.get_strategy("lora").apply(tuned)
    samtune.save_adapter(tuned, in_tmp / "adapter")
    before = (in_tmp / "base.pth").read_bytes()
    result, errors = _invoke(
        "export", "adapter", "base.pth", "-f", "segment-anything", "--overwrite"
    )
    _refused(result, errors, "base.pth", "input of this command")
    assert (in_tmp / "base.pth").read_bytes() == before
    assert samtune.load_adapter(samtune.load_model("base.pth"), in_tmp / "adapter") is not None


# --------------------------------------------------------------------------- 5. demo data


def test_regenerating_the_demo_keeps_files_inside_its_folders(tmp_path):
    from samtune.data.synthetic import ensure_demo_dataset

    root = tmp_path / "demo"
    ensure_demo_dataset(root, counts={"train": 1, "val": 1, "test": 1})
    (root / "train" / "mine.txt").write_text("mine")
    with pytest.raises(InputError, match="train/mine.txt"):
        ensure_demo_dataset(root, counts={"train": 2, "val": 1, "test": 1})
    assert (root / "train" / "mine.txt").read_text() == "mine"


def test_a_demo_folder_of_an_earlier_manifest_is_still_regenerated(tmp_path):
    from samtune.data.synthetic import ensure_demo_dataset

    root = tmp_path / "demo"
    ensure_demo_dataset(root, counts={"train": 1, "val": 1, "test": 1})
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["files"]  # the top-level list earlier samtune versions wrote
    (root / MANIFEST).write_text(json.dumps(manifest))
    ensure_demo_dataset(root, counts={"train": 2, "val": 1, "test": 1})
    assert len(list((root / "train" / "images").iterdir())) == 2
    assert "files" in json.loads((root / MANIFEST).read_text())


# --------------------------------------------------------------------------- the lock


@pytest.fixture
def other_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _foreign_lock(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "host": _host(), "command": "fit", "started": "2026-12-07T12:00:00"}
    path.write_text(json.dumps(info))


def test_a_second_fit_into_a_folder_in_use_is_refused(in_tmp, other_process):
    (in_tmp / "c.yaml").write_text(yaml.safe_dump(TINY_FIT))
    _foreign_lock(in_tmp / "run" / LOCK, other_process)
    result, errors = _invoke("fit", "-c", "c.yaml", "-o", "run")
    _refused(result, errors, "folder in use", str(other_process))
    assert sorted(p.name for p in (in_tmp / "run").iterdir()) == [LOCK]  # nothing written


def test_a_second_export_into_an_output_in_use_is_refused(in_tmp, other_process, tiny_adapter):
    _foreign_lock(in_tmp / f".out{LOCK}", other_process)
    result, errors = _invoke("export", tiny_adapter, "out", "--format", "hub")
    _refused(result, errors, "folder in use")
    assert not (in_tmp / "out").exists()


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path):
    _foreign_lock(tmp_path / "run" / LOCK, _dead_pid())
    with pytest.warns(SamtuneWarning, match="no longer running"):
        with output_lock(tmp_path / "run", command="fit") as lock:
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK).exists()


# --------------------------------------------------------------------------- symlinks, temporaries


def test_a_symlinked_output_folder_stays_a_symlink(tmp_path):
    target = tmp_path / "disk" / "out"
    target.parent.mkdir()
    link = tmp_path / "out"
    link.symlink_to(target, target_is_directory=True)
    for text in ("first", "second"):
        with atomic_dir(link, overwrite=True) as tmp:
            (tmp / "a.txt").write_text(text)
    assert link.is_symlink() and (target / "a.txt").read_text() == "second"
    litter = [p.name for p in [*tmp_path.iterdir(), *target.parent.iterdir()] if "old" in p.name]
    assert litter == [] and sorted(p.name for p in target.parent.iterdir()) == ["out"]


def test_stale_temporaries_of_a_killed_export_are_cleaned(in_tmp, tiny_adapter):
    dead = _dead_pid()
    stale = in_tmp / f".sam.pth.abcd1234.{_host()}-{dead}.tmp"
    legacy = in_tmp / ".sam.pth.k2j4h5g6.tmp"  # an earlier samtune's name: no owner, a day old
    live = in_tmp / f".sam.pth.zzzz9999.{_host()}-{os.getpid()}.tmp"
    other = in_tmp / ".notes.txt.abcd1234.tmp"
    for path in (stale, legacy, live, other):
        path.write_text("partial")
    os.utime(legacy, (time.time() - 2 * 86400,) * 2)
    os.utime(other, (time.time() - 2 * 86400,) * 2)
    samtune.export_adapter(samtune.load_tuned(tiny_adapter), "sam.pth", "segment-anything")
    assert not stale.exists() and not legacy.exists()
    assert live.exists() and other.exists()  # a writer still running; another file's


# --------------------------------------------------------------------------- full disks


def _full_disk(*args, **kwargs):
    path = Path(args[1] if len(args) > 1 else kwargs.get("filename", args[0]))
    path.write_bytes(b"half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(in_tmp, monkeypatch, tiny_adapter):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", _full_disk)
    result, errors = _invoke("export", tiny_adapter, "hub-out", "--format", "hub")
    _refused(result, errors, "disk", "full")
    assert sorted(p.name for p in in_tmp.iterdir()) == []


def test_torchs_report_of_a_full_disk_is_one_line(in_tmp, monkeypatch, tiny_adapter):
    def torch_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 12")

    monkeypatch.setattr(torch, "save", torch_full)
    result, errors = _invoke("export", tiny_adapter, "sam.pth", "-f", "segment-anything")
    _refused(result, errors, "disk", "full")
    assert sorted(p.name for p in in_tmp.iterdir()) == []


def test_a_full_disk_while_checkpointing_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    from accelerate import Accelerator

    from samtune.train.checkpoint import TrainerState, save_checkpoint

    model = torch.nn.Linear(2, 2)
    monkeypatch.setattr(torch, "save", _full_disk)
    with pytest.raises(InputError, match="full"):
        save_checkpoint(Accelerator(cpu=True), tmp_path, TrainerState(step=1), model=model)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_atomic_write_turns_enospc_into_input_error(tmp_path):
    with pytest.raises(InputError, match="disk holding it is full"):
        with atomic_write(tmp_path / "a.json") as tmp:
            tmp.write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- same bytes


def test_two_saves_of_the_same_adapter_are_byte_identical(tmp_path):
    model = samtune.load_model("tiny", seed=0)
    samtune.get_strategy("lora").apply(model)
    files = [samtune.save_adapter(model, tmp_path / f"a{i}").read_bytes() for i in range(4)]
    assert all(f == files[0] for f in files)
    size = int.from_bytes(files[0][:8], "little")
    header = json.loads(files[0][8 : 8 + size])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])


def test_write_safetensors_is_byte_deterministic_and_readable(tmp_path):
    from safetensors.torch import load_file, safe_open

    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    metadata = {k: "é" * i for i, k in enumerate("qwertyuiopasdf")}
    blobs = []
    for i in range(4):
        write_safetensors(tensors, tmp_path / f"{i}.safetensors", metadata)
        blobs.append((tmp_path / f"{i}.safetensors").read_bytes())
    assert all(b == blobs[0] for b in blobs)
    loaded = load_file(str(tmp_path / "0.safetensors"))
    assert torch.equal(loaded["a"], tensors["a"]) and torch.equal(loaded["b"], tensors["b"])
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as fh:
        assert fh.metadata() == metadata
