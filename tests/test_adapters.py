"""Adapter files and exports, each checked against an independent loader: transformers'
``SamModel.from_pretrained``, Meta's ``segment_anything``, ``peft.PeftModel``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import randomize_
from safetensors.torch import save_file
from transformers import SamModel
from typer.testing import CliRunner

import samtune
from samtune.adapters import load_adapter, merge_adapter, read_adapter, save_adapter
from samtune.cli import app
from samtune.errors import (
    AdapterMismatchError,
    CheckpointError,
    InputError,
    MissingFileError,
    OfflineError,
    UnknownNameError,
)
from samtune.export.formats import export_adapter
from samtune.models.convert.sam import build_meta_sam
from samtune.strategies import get_strategy

BOX = torch.tensor([[[10.0, 12.0, 70.0, 90.0]]])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A tiny SAM with random weights everywhere, saved as an HF folder (its own source)."""
    path = tmp_path_factory.mktemp("base") / "sam"
    randomize_(samtune.load_model("tiny")).save_pretrained(path)
    return path


def pixels() -> torch.Tensor:
    return torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))


def masks(model) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=pixels(), input_boxes=BOX).pred_masks[0, 0]


def tuned(base_dir: Path, name: str, **config):
    model = get_strategy(name, **config).apply(samtune.load_model(base_dir))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # stand-in for training: every trained tensor moves
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def meta_masks(sam, model) -> torch.Tensor:
    """Low-res mask logits from Meta's modules, fed exactly what SamModel is fed."""
    with torch.no_grad():
        emb = sam.image_encoder(pixels())
        sparse, dense = sam.prompt_encoder(points=None, boxes=BOX[0], masks=None)
        low, _ = sam.mask_decoder(
            image_embeddings=emb,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    return low[0]


@pytest.mark.parametrize(
    ("name", "config"),
    [("lora", {"decoder_attention": True, "use_dora": True}), ("peft", {}), ("full", {})],
)
def test_merged_hf_folder_and_meta_pth_give_the_tuned_masks(base_dir, tmp_path, name, config):
    model = tuned(base_dir, name, **config)
    expected = masks(model)
    export_adapter(model, tmp_path / "hf", "hf")
    plain = SamModel.from_pretrained(tmp_path / "hf").eval()
    assert not any("lora" in n or "ia3" in n for n in plain.state_dict())
    assert (masks(plain) - expected).abs().max().item() < 1e-4

    export_adapter(model, tmp_path / "sam.pth", "segment-anything")
    sam = build_meta_sam(plain.config).eval()
    sam.load_state_dict(torch.load(tmp_path / "sam.pth", weights_only=True), strict=True)
    assert (meta_masks(sam, model) - expected).abs().max().item() < 1e-4
    # the tuned model itself is untouched by merging
    assert (masks(model) - expected).abs().max().item() == 0


@pytest.mark.parametrize("config", [{}, {"decoder_attention": True, "mlp": True}])
def test_lora_peft_directory_loads_with_plain_peft(base_dir, tmp_path, config):
    from peft import PeftModel

    model = tuned(base_dir, "lora", **config)
    expected = masks(model)
    export_adapter(model, tmp_path / "peft", "peft")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (tmp_path / "peft").iterdir()
    }
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] is None
    peft_model = PeftModel.from_pretrained(SamModel.from_pretrained(base_dir), tmp_path / "peft")
    assert (masks(peft_model.eval()) - expected).abs().max().item() < 1e-4


def test_adapter_strategy_cannot_merge_and_says_why(base_dir, tmp_path):
    model = tuned(base_dir, "adapter")
    with pytest.raises(InputError, match="nonlinearity"):
        merge_adapter(model)
    with pytest.raises(InputError, match="cannot be written as a peft directory"):
        export_adapter(tuned(base_dir, "decoder"), tmp_path / "p", "peft")
    with pytest.raises(UnknownNameError, match="choose one of hf, .*, hub, onnx"):
        export_adapter(model, tmp_path / "x", "tflite")


def test_hub_folder_has_adapter_config_and_card(base_dir, tmp_path):
    model = tuned(base_dir, "lora")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"metrics": {"miou": 0.81234, "dice": 0.9}}))
    out = export_adapter(model, tmp_path / "hub", "hub", metrics=metrics)
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert 'library_name: "samtune"' in front and f'base_model: "{base_dir}"' in front
    assert '- "lora"' in front
    assert "| mIoU | 81.23 |" in card and "| Dice | 90.00 |" in card
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["strategy"] == "lora" and config["strategy_config"]["rank"] == 8
    restored = load_adapter(samtune.load_model(base_dir), out)
    assert (masks(restored) - masks(model)).abs().max().item() <= 1e-6


def test_hub_ids_download_and_fail_offline_with_advice(base_dir, tmp_path, monkeypatch):
    import huggingface_hub

    model = tuned(base_dir, "decoder")
    save_adapter(model, tmp_path / "snap")
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo_id, **kw: tmp_path / "snap"
    )
    restored = load_adapter(samtune.load_model(base_dir), "someone/sam-trash-decoder")
    assert (masks(restored) - masks(model)).abs().max().item() <= 1e-6
    monkeypatch.undo()
    with pytest.raises(OfflineError, match="huggingface-cli download someone/not-cached"):
        load_adapter(samtune.load_model(base_dir), "someone/not-cached")


def test_wrong_base_is_refused_naming_both_fingerprints(base_dir, tmp_path):
    model = tuned(base_dir, "lora")
    save_adapter(model, tmp_path)
    other = samtune.load_model("tiny", seed=1)
    with pytest.raises(AdapterMismatchError) as info:
        load_adapter(other, tmp_path)
    text = str(info.value)
    assert samtune.fingerprint(samtune.load_model(base_dir)) in text
    assert samtune.fingerprint(other) in text


def test_missing_corrupt_and_foreign_files(base_dir, tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        read_adapter(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="has no adapter.safetensors"):
        read_adapter(tmp_path / "empty")
    save_adapter(tuned(base_dir, "decoder"), tmp_path / "ok")
    data = (tmp_path / "ok" / "adapter.safetensors").read_bytes()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_adapter(samtune.load_model(base_dir), tmp_path / "bad")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a samtune adapter"):
        read_adapter(tmp_path / "plain.safetensors")
    with pytest.raises(InputError, match="no strategy applied"):
        save_adapter(samtune.load_model(base_dir), tmp_path / "x")


def test_adapter_of_an_uninstalled_strategy_names_its_package(base_dir, tmp_path):
    save_adapter(tuned(base_dir, "decoder"), tmp_path)
    adapter = read_adapter(tmp_path)
    meta = {**adapter.metadata, "strategy": "medsa", "strategy_package": "samtune-medsa"}
    save_file(adapter.tensors, str(tmp_path / "adapter.safetensors"), metadata=meta)
    with pytest.raises(UnknownNameError, match="pip install samtune-medsa"):
        load_adapter(samtune.load_model(base_dir), tmp_path)


def test_cli_merge_and_export(base_dir, tmp_path):
    model = tuned(base_dir, "lora")
    save_adapter(model, tmp_path / "run")
    runner = CliRunner()
    result = runner.invoke(app, ["merge", str(tmp_path / "run"), str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = SamModel.from_pretrained(tmp_path / "merged")
    assert (masks(merged) - masks(model)).abs().max().item() < 1e-4
    result = runner.invoke(
        app, ["export", str(tmp_path / "run"), str(tmp_path / "s.pth"), "-f", "segment-anything"]
    )
    assert result.exit_code == 0 and (tmp_path / "s.pth").is_file()
    result = runner.invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "h")])
    assert result.exit_code == 0 and (tmp_path / "h" / "README.md").is_file()
    result = runner.invoke(
        app, ["merge", str(tmp_path / "run"), str(tmp_path / "m2"), "--base", "tiny"]
    )
    assert result.exit_code == 2 and "was trained on base" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output
