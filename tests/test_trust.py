"""Trust: nothing samtune reads executes code, nothing it replaces is the user's, and the model it
loads is the model that was saved (architecture included)."""

from __future__ import annotations

import json
import os
import pickle
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from samtune.cli import app
from samtune.errors import CheckpointError, InputError


def _cli(*args: str, cwd: Path | None = None):
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        os.chdir(old)


class _Payload:
    """Unpickling this creates a file: the proof that a loader executed code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def run_with_checkpoint(tmp_path_factory):
    from samtune.train import fit

    run = tmp_path_factory.mktemp("resume") / "run"
    fit(
        "tiny",
        "lora",
        "demo",
        run,
        max_steps=2,
        epochs=3,
        batch_size=2,
        quiet=True,
        log_with=None,
        val_split=None,
        test_split=None,
        checkpoint_every=1,
    )
    return run


def _doctored_copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = (copy / "config.yaml").read_text().replace(str(run), str(copy))
    (copy / "config.yaml").write_text(cfg)
    return copy


def test_checkpoint_holds_no_pickle_of_objects(run_with_checkpoint):
    ckpt = sorted((run_with_checkpoint / "checkpoints").iterdir())[-1]
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == [
        "model.safetensors",
        "optimizer.pt",
        "resume.json",
        "rng-0.pt",
        "trainer_state.json",
    ]
    for name in ("optimizer.pt", "rng-0.pt"):  # plain data only: loads with weights_only
        torch.load(ckpt / name, weights_only=True)


@pytest.mark.parametrize("target", ["optimizer.pt", "rng-0.pt"])
def test_resume_refuses_a_pickled_payload(run_with_checkpoint, tmp_path, target):
    run = _doctored_copy(run_with_checkpoint, tmp_path)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    marker = tmp_path / "pwned"
    torch.save({"state": _Payload(marker)}, ckpt / target)
    # the payload is real: an unrestricted load runs it
    torch.load(ckpt / target, weights_only=False)
    assert marker.exists()
    marker.unlink()

    result = _cli("fit", "-c", str(run / "config.yaml"), "--resume", "-q")
    assert result.exit_code == 2, result.output
    assert "will not unpickle" in result.output and target in result.output
    assert not marker.exists()
    assert not (run / "adapter").exists() or True  # the old adapter may stay; nothing new ran


def test_resume_refuses_an_accelerate_pickle_checkpoint(run_with_checkpoint, tmp_path):
    """Accelerate's load_state unpickles custom_checkpoint_*.pkl with weights_only=False."""
    run = _doctored_copy(run_with_checkpoint, tmp_path)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    marker = tmp_path / "pwned"
    (ckpt / "resume.json").unlink()
    with open(ckpt / "custom_checkpoint_0.pkl", "wb") as fh:
        pickle.dump(_Payload(marker), fh)
    result = _cli("fit", "-c", str(run / "config.yaml"), "--resume", "-q")
    assert result.exit_code == 2, result.output
    assert "older samtune" in result.output
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    ["truncate-optimizer", "garbage-model", "state-not-json", "resume-not-json", "nan-model"],
)
def test_resume_from_a_corrupt_checkpoint_is_an_input_error(run_with_checkpoint, tmp_path, damage):
    from safetensors.torch import load_file, save_file

    run = _doctored_copy(run_with_checkpoint, tmp_path)
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    if damage == "truncate-optimizer":
        data = (ckpt / "optimizer.pt").read_bytes()
        (ckpt / "optimizer.pt").write_bytes(data[: len(data) // 2])
    elif damage == "garbage-model":
        (ckpt / "model.safetensors").write_bytes(b"not safetensors")
    elif damage == "state-not-json":
        (ckpt / "trainer_state.json").write_text("{")
    elif damage == "resume-not-json":
        (ckpt / "resume.json").write_text("[")
    else:
        tensors = load_file(ckpt / "model.safetensors")
        first = sorted(tensors)[0]
        tensors[first] = torch.full_like(tensors[first], float("nan"))
        save_file(tensors, ckpt / "model.safetensors")
    result = _cli("fit", "-c", str(run / "config.yaml"), "--resume", "-q")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "unexpected" not in result.output
    assert "checkpoint" in result.output


def test_load_checkpoint_checks_every_file_before_applying(run_with_checkpoint, tmp_path):
    from accelerate import Accelerator

    from samtune.train.checkpoint import load_checkpoint

    ckpt = sorted((run_with_checkpoint / "checkpoints").iterdir())[-1]
    bad = tmp_path / ckpt.name
    import shutil

    shutil.copytree(ckpt, bad)
    torch.save({"x": _Payload(tmp_path / "m")}, bad / "rng-0.pt")
    model = torch.nn.Linear(2, 2)
    before = model.weight.detach().clone()
    with pytest.raises(CheckpointError):
        load_checkpoint(Accelerator(cpu=True), bad, model=model)
    assert torch.equal(model.weight, before)
    assert zipfile.is_zipfile(bad / "optimizer.pt")


# --------------------------------------------------------------------------- umask


def test_written_files_respect_the_umask(tmp_path):
    from samtune.io import atomic_dir, atomic_write

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x.txt").write_text("x")
            (tmp / "sub").mkdir()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "folder" / "x.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder" / "sub").stat().st_mode) == 0o755


def test_write_errors_name_the_path(tmp_path):
    from samtune.io import atomic_dir, atomic_write

    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with atomic_write(tmp_path / "file" / "out.json"):
            pass
    with pytest.raises(InputError, match="a file of that name exists"):
        with atomic_dir(tmp_path / "file"):
            pass
    with pytest.raises(InputError, match="is a folder"):
        with atomic_write(tmp_path):
            pass
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(InputError, match="cannot write"):
            with atomic_write(ro / "out.json"):
                pass


def test_manifest_lists_what_was_written(tmp_path):
    from samtune.io import MANIFEST, atomic_dir, written_by_samtune

    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("a")
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["entries"] == ["a"]
    assert written_by_samtune(tmp_path / "out") == (True, [])
    (tmp_path / "out" / "mine.txt").write_text("user")
    assert written_by_samtune(tmp_path / "out") == (False, ["mine.txt"])


# --------------------------------------------------------------------------- export safety


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    import samtune

    model = samtune.load_model("tiny")
    samtune.get_strategy("lora").apply(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    out = tmp_path_factory.mktemp("adapter") / "run" / "adapter"
    samtune.save_adapter(model, out)
    return out


@pytest.mark.parametrize("fmt", ["hub", "hf", "peft"])
def test_overwrite_never_removes_the_current_folder(adapter_dir, tmp_path, fmt):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    result = _cli("export", str(adapter_dir), ".", "--format", fmt, "--overwrite", cwd=work)
    assert result.exit_code == 2, result.output
    assert "current folder" in result.output and "unexpected" not in result.output
    assert (work / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"]


def test_overwrite_never_replaces_a_run_folder(adapter_dir):
    run = adapter_dir.parent
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "precious").write_text("x")
    result = _cli("export", str(adapter_dir), str(run), "--format", "hub", "--overwrite")
    assert result.exit_code == 2, result.output
    assert "input of this command" in result.output
    assert (run / "checkpoints" / "precious").is_file()
    assert (adapter_dir / "adapter.safetensors").is_file()


def test_overwrite_replaces_only_what_samtune_wrote(adapter_dir, tmp_path):
    out = tmp_path / "hub"
    assert _cli("export", str(adapter_dir), str(out), "--format", "hub").exit_code == 0
    again = _cli("export", str(adapter_dir), str(out), "--format", "hub")
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert _cli("export", str(adapter_dir), str(out), "-f", "hub", "--overwrite").exit_code == 0
    (out / "notes.txt").write_text("mine")
    refused = _cli("export", str(adapter_dir), str(out), "-f", "hub", "--overwrite")
    assert refused.exit_code == 2 and "notes.txt" in refused.output
    assert (out / "notes.txt").read_text() == "mine"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "a.txt").write_text("mine")
    refused = _cli("export", str(adapter_dir), str(foreign), "-f", "hf", "--overwrite")
    assert refused.exit_code == 2 and "samtune did not write" in refused.output
    assert (foreign / "a.txt").is_file()


def test_a_pth_samtune_did_not_write_is_never_replaced(adapter_dir, tmp_path):
    theirs = tmp_path / "theirs.pth"
    theirs.write_bytes(b"someone else's")
    result = _cli("export", str(adapter_dir), str(theirs), "-f", "segment-anything", "--overwrite")
    assert result.exit_code == 2 and "did not write" in result.output
    assert theirs.read_bytes() == b"someone else's"
    ours = tmp_path / "ours.pth"
    args = ("export", str(adapter_dir), str(ours), "-f", "segment-anything")
    assert _cli(*args).exit_code == 0
    assert _cli(*args).exit_code == 2  # exists, no --overwrite
    assert _cli(*args, "--overwrite").exit_code == 0  # samtune's own file, sidecar matches


# --------------------------------------------------------------------------- identity


def test_fingerprint_covers_the_architecture(tiny_model):
    from transformers import SamModel

    import samtune
    from samtune.models.identity import architecture, weights_fingerprint

    other = SamModel(tiny_model.config.__class__.from_dict(tiny_model.config.to_dict()))
    other.config.mask_decoder_config.num_attention_heads = 4  # same shapes, other computation
    other.load_state_dict(tiny_model.state_dict())
    assert weights_fingerprint(other) == weights_fingerprint(tiny_model)
    assert samtune.fingerprint(other) != samtune.fingerprint(tiny_model)
    assert architecture(other)["mask_decoder_config"]["num_attention_heads"] == 4


def _box_logits(model):
    torch.manual_seed(0)
    pixels = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        out = model(pixel_values=pixels, input_boxes=torch.tensor([[[10.0, 20.0, 90.0, 100.0]]]))
    return out.pred_masks


def test_meta_round_trip_keeps_the_demo_model(tmp_path):
    """demo has 4 decoder heads and decoder LayerNorm eps 1e-6: not Meta's. The sidecar carries them."""
    import samtune

    demo = samtune.load_model("demo")
    result = _cli("convert", "demo", str(tmp_path / "d.pth"), "--to", "segment-anything")
    assert result.exit_code == 0, result.output
    side = json.loads((tmp_path / "d.pth.samtune.json").read_text())
    assert side["config"]["mask_decoder_config"]["num_attention_heads"] == 4
    back = samtune.load_model(tmp_path / "d.pth")
    assert samtune.fingerprint(back) == samtune.fingerprint(demo)
    torch.testing.assert_close(_box_logits(back), _box_logits(demo), rtol=0, atol=0)
    # the .pth alone is still plain Meta keys
    sd = torch.load(tmp_path / "d.pth", weights_only=True)
    assert all(k.split(".")[0] in ("image_encoder", "prompt_encoder", "mask_decoder") for k in sd)


def test_meta_load_without_sidecar_says_what_it_assumed_and_refuses_the_adapter(tmp_path):
    import samtune
    from samtune.errors import AdapterMismatchError, AssumptionWarning

    assert (
        _cli("convert", "demo", str(tmp_path / "d.pth"), "--to", "segment-anything").exit_code == 0
    )
    (tmp_path / "d.pth.samtune.json").unlink()
    with pytest.warns(AssumptionWarning, match="assumed Meta's \\(8 heads"):
        assumed = samtune.load_model(tmp_path / "d.pth")
    assert samtune.fingerprint(assumed) != samtune.fingerprint(samtune.load_model("demo"))

    demo = samtune.load_model("demo")
    samtune.get_strategy("lora").apply(demo)
    samtune.save_adapter(demo, tmp_path / "adapter")
    with pytest.raises(AdapterMismatchError, match="num_attention_heads"):
        samtune.load_adapter(assumed, tmp_path / "adapter")

    # the CLI states what the format cannot carry; then the same model comes back
    result = _cli("info", str(tmp_path / "d.pth"))
    assert result.exit_code == 0 and "note: d.pth: a Meta checkpoint" in result.output
    out = tmp_path / "d-hf"
    result = _cli(
        "convert",
        str(tmp_path / "d.pth"),
        str(out),
        "--decoder-heads",
        "4",
        "--decoder-eps",
        "1e-6",
    )
    assert result.exit_code == 0, result.output
    assert samtune.fingerprint(samtune.load_model(out)) == samtune.fingerprint(
        samtune.load_model("demo")
    )
    samtune.load_adapter(out, tmp_path / "adapter")  # accepted now
    bad = _cli("info", "demo", "--decoder-heads", "4")
    assert bad.exit_code == 2 and "only apply to Meta" in bad.output


# --------------------------------------------------------------------------- adapters read


def _rewrite_adapter(src: Path, dst: Path, *, metadata=None, tensors=None) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src / "adapter.safetensors"), framework="pt") as fh:
        meta = dict(fh.metadata())
        data = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    meta.update(metadata or {})
    data = tensors(data) if tensors else data
    dst.mkdir(parents=True)
    save_file(data, str(dst / "adapter.safetensors"), metadata=meta)
    return dst


def test_an_adapter_of_nan_tensors_is_refused(adapter_dir, tmp_path):
    import samtune

    def poison(data):
        key = sorted(data)[0]
        data[key] = torch.full_like(data[key], float("nan"))
        return data

    bad = _rewrite_adapter(adapter_dir, tmp_path / "nan", tensors=poison)
    with pytest.raises(CheckpointError, match="NaN"):
        samtune.load_adapter("tiny", bad)


def test_adapter_metadata_that_is_not_json_is_refused(adapter_dir, tmp_path):
    bad = _rewrite_adapter(adapter_dir, tmp_path / "bad", metadata={"strategy_config": "{r: 4"})
    result = _cli("export", str(bad), str(tmp_path / "out"))
    assert result.exit_code == 2 and "not valid JSON" in result.output
    assert not (tmp_path / "out").exists()


def test_a_typo_in_a_local_adapter_path_is_not_a_hub_id(tmp_path):
    (tmp_path / "bad").mkdir()
    result = _cli("export", "bad/no-such-adapter", "out", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert (
        "does not exist" in result.output and "hub" not in result.output.split("does not exist")[0]
    )


# --------------------------------------------------------------------------- exports others read


def test_hf_export_loads_in_sam_processor_and_keeps_the_fingerprint(adapter_dir, tmp_path):
    from transformers import SamProcessor

    import samtune

    out = tmp_path / "hf"
    assert _cli("export", str(adapter_dir), str(out), "-f", "hf").exit_code == 0
    processor = SamProcessor.from_pretrained(out)
    assert processor.image_processor.size["longest_edge"] == 128
    merged = samtune.merge_adapter(samtune.load_adapter("tiny", adapter_dir))
    assert samtune.fingerprint(samtune.load_model(out)) == samtune.fingerprint(merged)


def test_peft_export_is_quiet_and_names_its_base(adapter_dir, tmp_path):
    import warnings

    import samtune

    tuned = samtune.load_adapter("tiny", adapter_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samtune.export_adapter(tuned, tmp_path / "peft", "peft")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"


def test_model_card_from_a_fit_metrics_json(adapter_dir, tmp_path):
    metrics = tmp_path / "metrics.json"
    box = {"miou": 0.5855, "dice": 0.7012, "num_instances": 120}
    tuned = {"miou": 0.686, "dice": 0.7875, "num_instances": 120}
    metrics.write_text(
        json.dumps(
            {
                "validation": [{"step": 30, "metrics": {"miou": 0.7}}],
                "best": {"step": 30, "miou": 0.7},
                "steps": 30,
                "comparison": {"zero_shot": {"box": box}, "fine_tuned": {"box": tuned}},
                "table": "| model | mIoU |\n|---|---:|\n| zero-shot | 58.55 |",
            }
        )
    )
    out = tmp_path / "hub"
    result = _cli("export", str(adapter_dir), str(out), "--metrics", str(metrics))
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "| steps |" not in card and "| table |" not in card
    assert "| mIoU | 58.55 | 68.60 | +10.05 |" in card
    assert "30 optimizer steps" in card and "best validation mIoU 70.00" in card


def test_extraction_never_replaces_what_samtune_did_not_extract(tmp_path):
    from samtune.data.download import safe_extract
    from samtune.errors import DataError

    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/a.txt", "from the archive")
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "images" / "mine.txt").write_text("mine")
    with pytest.raises(DataError, match="did not extract"):
        safe_extract(archive, root)
    assert (root / "images" / "mine.txt").read_text() == "mine"
    # into a clean root, and again (an interrupted or repeated extraction) it is fine
    clean = tmp_path / "clean"
    safe_extract(archive, clean)
    safe_extract(archive, clean)
    assert (clean / "images" / "a.txt").read_text() == "from the archive"


@pytest.mark.parametrize("preset", ["tiny", "tiny-sam2"])
def test_an_hf_folder_keeps_custom_preprocessing_through_a_reload(preset, tmp_path):
    """transformers 5 writes the processor as processor_config.json: read back, not ignored
    (ignoring it silently gave a different model: other mean/std, another fingerprint)."""
    from samtune.export.formats import save_hf_folder
    from samtune.models.identity import (
        PreprocessConfig,
        fingerprint,
        preprocess_config,
        samtune_info,
    )
    from samtune.models.loading import load_model

    model = load_model(preset)
    custom = PreprocessConfig(
        128, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), preprocess_config(model).square
    )
    samtune_info(model).preprocess = custom
    save_hf_folder(model, tmp_path / "hf")
    back = load_model(tmp_path / "hf")
    assert preprocess_config(back) == custom
    assert fingerprint(back) == fingerprint(model)
