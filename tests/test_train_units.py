"""Training building blocks: SAM loss against independent oracles, cache keys, config, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as tv_focal

from samtune.errors import ConfigError
from samtune.options import parse_key_values
from samtune.train import losses
from samtune.train.cache import EmbeddingCache, cache_key, image_digest
from samtune.train.config import FitConfig, build_config, save_yaml


def test_focal_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 8, 8, generator=g) * 3
    targets = torch.rand(3, 2, 8, 8, generator=g) > 0.5
    ours = losses.sigmoid_focal_loss(logits, targets)
    ref = tv_focal(logits, targets.float(), alpha=0.25, gamma=2.0, reduction="none").mean((-2, -1))
    torch.testing.assert_close(ours, ref)


def test_dice_and_iou_by_hand():
    t = torch.zeros(1, 4, 4, dtype=torch.bool)
    t[0, :2, :2] = True  # 4 pixels
    logits = torch.full((1, 4, 4), -100.0)
    logits[0, :2, :] = 100.0  # predicts 8 pixels, 4 of them right
    assert losses.mask_iou(logits, t).item() == pytest.approx(0.5)
    # soft dice with eps=1: 1 - (2*4 + 1) / (8 + 4 + 1)
    assert losses.dice_loss(logits, t).item() == pytest.approx(1 - 9 / 13, abs=1e-5)
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert losses.mask_iou(torch.full((1, 4, 4), -5.0), empty).item() == 1.0


def test_sam_loss_backpropagates_only_the_best_of_three():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[:, 2:6, 2:6] = True
    good = torch.where(target, 8.0, -8.0)
    pred = torch.stack([-good, good, torch.zeros_like(good)], dim=1).clone().requires_grad_(True)
    iou_pred = torch.full((2, 3), 0.5, requires_grad=True)
    out = losses.sam_loss(pred, iou_pred, target)
    assert out.best.tolist() == [1, 1]
    assert out.iou.tolist() == [1.0, 1.0]
    out.total.backward()
    assert pred.grad[:, 0].abs().sum() == 0 and pred.grad[:, 2].abs().sum() == 0
    assert pred.grad[:, 1].abs().sum() > 0
    # IoU head: MSE against the real IoU of every candidate (0, 1, 0 here: logits 0 -> empty)
    expected_mse = ((0.5 - 0.0) ** 2 + (0.5 - 1.0) ** 2 + (0.5 - 0.0) ** 2) / 3
    assert out.iou_mse.item() == pytest.approx(expected_mse)
    manual = (
        20 * losses.sigmoid_focal_loss(good, target).mean()
        + losses.dice_loss(good, target).mean()
        + expected_mse
    )
    assert out.total.item() == pytest.approx(manual.item(), rel=1e-5)


def test_cache_key_covers_weights_preprocessing_and_image(tiny_model):
    from samtune.models.identity import PreprocessConfig, fingerprint

    pre = PreprocessConfig(image_size=128)
    img = image_digest(b"\x89PNG fake image bytes")
    fp = fingerprint(tiny_model.vision_encoder)
    key = cache_key(fp, pre, img)
    assert key == cache_key(fingerprint(tiny_model.vision_encoder), PreprocessConfig(128), img)
    with torch.no_grad():
        next(tiny_model.vision_encoder.parameters()).view(-1)[0] += 0.5
    assert cache_key(fingerprint(tiny_model.vision_encoder), pre, img) != key
    assert cache_key(fp, PreprocessConfig(image_size=256), img) != key
    assert cache_key(fp, PreprocessConfig(128, mean=(0.0, 0.0, 0.0)), img) != key
    assert cache_key(fp, pre, image_digest(b"\x89PNG other bytes")) != key
    arr = torch.zeros(4, 4, 3, dtype=torch.uint8)
    assert image_digest(arr) != image_digest(arr.reshape(4, 12))


def test_embedding_cache_disk_roundtrip_and_memory_budget(tmp_path):
    emb = torch.randn(32, 8, 8)
    cache = EmbeddingCache(tmp_path, memory_mb=emb.numel() * 4 * 1.5 / 2**20)
    assert cache.get("a" * 32) is None
    cache.put("a" * 32, emb)
    cache.put("b" * 32, emb + 1)  # evicts "a" from memory (budget: 1.5 embeddings)
    assert len(cache) == 1
    fresh = EmbeddingCache(tmp_path, memory_mb=0)
    torch.testing.assert_close(fresh.get("a" * 32), emb)
    torch.testing.assert_close(cache.get("b" * 32), emb + 1)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


def test_config_yaml_roundtrip_and_overrides(tmp_path):
    cfg = build_config(None, dataset="demo", strategy="decoder", epochs=3).resolved()
    assert cfg.model == "demo" and cfg.epochs == 3 and cfg.lr == pytest.approx(3e-4)
    assert build_config(None, dataset="trashcan").resolved().model == "facebook/sam-vit-base"
    save_yaml(cfg, tmp_path / "config.yaml")
    again = build_config(tmp_path / "config.yaml", epochs=5)
    assert again.epochs == 5 and again.strategy == "decoder"
    assert build_config(tmp_path / "config.yaml").resolved() == cfg
    with pytest.raises(ConfigError, match="prompt must be one of box, point, interactive"):
        FitConfig(prompt="scribble")
    with pytest.raises(ConfigError, match="unknown training option"):
        build_config({"epoch": 3})
    assert parse_key_values(["r=8", "alpha=16.5", "name=x"]) == {"r": 8, "alpha": 16.5, "name": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_key_values(["r8"])


def test_checkpoint_folders_are_atomic(tmp_path):
    from accelerate import Accelerator

    from samtune.train.checkpoint import (
        TrainerState,
        latest_checkpoint,
        load_checkpoint,
        save_checkpoint,
    )

    acc = Accelerator(cpu=True)
    model = acc.prepare(torch.nn.Linear(2, 2))
    # a folder left by a run killed while saving is hidden and ignored
    (tmp_path / "checkpoints" / ".step-000001.tmp").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3):
        save_checkpoint(
            acc, tmp_path, TrainerState(step=step, batch_in_epoch=step), model=model, keep=2
        )
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003"]
    with torch.no_grad():
        model.weight.zero_()
    state = load_checkpoint(acc, latest_checkpoint(tmp_path), model=model)
    assert state.step == 3 and state.batch_in_epoch == 3
    assert model.weight.abs().sum() > 0


def test_embedding_cache_memory_tier_lives_on_its_device(tmp_path):
    cache = EmbeddingCache(tmp_path, memory_mb=1, device="meta")
    emb = torch.randn(4, 8, 8)
    cache.put("k", emb)
    assert cache.get("k").device.type == "meta"  # memory tier: the given device
    from safetensors.torch import load_file

    on_disk = load_file(next(tmp_path.rglob("*.safetensors")))["embedding"]
    assert torch.equal(on_disk, emb)  # the disk copy is the CPU tensor, exactly
    fresh = EmbeddingCache(tmp_path, memory_mb=1, device="meta")
    assert fresh.get("k").device.type == "meta"  # read from disk, then kept on the device
