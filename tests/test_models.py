"""load_model from every source, fingerprints, and the errors a user meets."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import randomize_
from typer.testing import CliRunner

import samtune
from samtune.cli import app
from samtune.models.convert import sam as convert
from samtune.models.identity import fingerprint, preprocess_config
from samtune.models.loading import load_model
from samtune.models.presets import tiny_config

runner = CliRunner()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_preset_is_deterministic_by_seed():
    a, b, c = load_model("tiny", seed=1), load_model("tiny", seed=1), load_model("tiny", seed=2)
    assert _same_weights(a, b)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert not a.training


def test_local_hf_directory(tmp_path):
    model = load_model("tiny", seed=4)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert _same_weights(model, loaded)
    assert fingerprint(loaded) == fingerprint(model)
    assert preprocess_config(loaded).image_size == 128


def test_meta_checkpoint_pth_and_safetensors(tmp_path):
    meta = randomize_(convert.build_meta_sam(tiny_config()), seed=5)
    torch.save({"model": meta.state_dict()}, tmp_path / "sam_tiny.pth")
    from_pth = load_model(tmp_path / "sam_tiny.pth")
    ref = convert.meta_to_hf_state_dict(meta.state_dict())
    for k, v in from_pth.state_dict().items():
        assert torch.equal(v, ref[k]), k
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in meta.state_dict().items()}, tmp_path / "sam.safetensors"
    )
    assert _same_weights(load_model(tmp_path / "sam.safetensors"), from_pth)


def test_fingerprint_ignores_dtype_but_sees_changes(tiny_model):
    fp = fingerprint(tiny_model)
    assert fingerprint(tiny_model.to(torch.bfloat16)) == fp
    tiny_model = tiny_model.float()
    with torch.no_grad():
        tiny_model.mask_decoder.iou_token.weight[0, 0] += 0.5
    assert fingerprint(tiny_model) != fp


def test_missing_path():
    with pytest.raises(samtune.MissingFileError, match="does not exist"):
        load_model("./no/such/checkpoint.pth")


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    with pytest.raises(samtune.CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(bad)


def test_checkpoint_of_another_architecture(tmp_path):
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(samtune.CheckpointError, match="not a SAM checkpoint"):
        load_model(tmp_path / "linear.pth")
    other = tmp_path / "vit"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(samtune.CheckpointError, match="'vit' model, not SAM"):
        load_model(other)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(samtune.CheckpointError):
        load_model(tmp_path / "evil.pth")


def test_hub_id_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(samtune.OfflineError, match="HF_HUB_OFFLINE"):
        load_model("facebook/sam-vit-base")


@pytest.mark.parametrize(
    "source",
    ["./no/such.pth", "facebook/sam-vit-base"],
)
def test_cli_errors_are_one_line_exit_2(source, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = runner.invoke(app, ["info", source])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_cli_info_version_and_module():
    result = runner.invoke(app, ["info", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["image_size"] == 128
    assert runner.invoke(app, ["--version"]).output.strip() == f"samtune {samtune.__version__}"
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "samtune", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "samtune" in out.stdout


def test_cli_convert_both_ways(tmp_path):
    meta = randomize_(convert.build_meta_sam(tiny_config()), seed=7)
    torch.save(meta.state_dict(), tmp_path / "meta.pth")
    r = runner.invoke(app, ["convert", str(tmp_path / "meta.pth"), str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        ["convert", str(tmp_path / "hf"), str(tmp_path / "back.pth"), "--to", "segment-anything"],
    )
    assert r.exit_code == 0, r.output
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    for k, v in meta.state_dict().items():
        assert torch.equal(back[k], v), k
    r = runner.invoke(app, ["convert", "tiny", str(tmp_path / "x"), "--to", "onnx"])
    assert r.exit_code == 2 and "unknown format" in r.output


def test_hub_id_unreachable_fails_fast_without_retries(monkeypatch, tmp_path):
    import time

    from samtune.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    start = time.monotonic()
    with pytest.raises(samtune.OfflineError, match="could not be reached"):
        load_model("facebook/sam-vit-base")
    assert time.monotonic() - start < 10
