"""Gradient checkpointing on the families whose transformers class refuses it (SAM 2, SAM 3):
the blocks really recompute in backward, and the gradients are those of a plain backward."""

from __future__ import annotations

import pytest
import torch
from test_sam3_training import PHRASES, batch_for, scene, tiny_sam3, word_tokenize

import samtune
from samtune.errors import ConfigError
from samtune.train.loop import enable_checkpointing
from samtune.train.recompute import checkpoint_layers
from samtune.train.sam3_step import Sam3TextStep, text_step_loss


def _inner(block: torch.nn.Module) -> torch.nn.Module:
    """A module inside ``block``: it runs again when the block's forward is recomputed (the
    block's own hooks do not: transformers checkpoints ``forward``, not ``__call__``)."""
    return next(m for m in block.children() if any(True for _ in m.parameters()))


def _sam2_grads(checkpointed: bool) -> tuple[dict[str, torch.Tensor], int]:
    model = samtune.load_model("tiny-sam2", seed=0).train()
    assert not type(model).supports_gradient_checkpointing  # why samtune does it itself
    if checkpointed:
        enable_checkpointing(model)
    calls = []
    _inner(model.vision_encoder.backbone.blocks[0]).register_forward_hook(
        lambda *a: calls.append(1)
    )
    torch.manual_seed(1)
    pixels = torch.randn(1, 3, 128, 128)
    out = model(pixel_values=pixels, input_boxes=torch.tensor([[[10.0, 20.0, 90.0, 100.0]]]),
                multimask_output=False)  # fmt: skip
    (out.pred_masks.square().mean() + out.iou_scores.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, len(calls)


def _sam3_grads(checkpointed: bool) -> tuple[dict[str, torch.Tensor], int]:
    model = tiny_sam3(0)
    if checkpointed:
        enable_checkpointing(model)
    calls = []
    _inner(model.vision_encoder.backbone.layers[0]).register_forward_hook(
        lambda *a: calls.append(1)
    )
    step = Sam3TextStep(model, list(PHRASES.values()), word_tokenize)
    batch = batch_for(model, [scene(0), scene(1)])
    text_step_loss(step(batch["pixel_values"]), batch["targets"])[0].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, len(calls)


@pytest.mark.parametrize("grads", [_sam2_grads, _sam3_grads], ids=["sam2", "sam3"])
def test_checkpointed_gradients_equal_plain_ones(grads):
    plain, plain_calls = grads(False)
    recomputed, calls = grads(True)
    assert (plain_calls, calls) == (1, 2)  # the first encoder block ran again in backward
    assert plain.keys() == recomputed.keys() and len(plain) > 50
    for name, grad in plain.items():
        torch.testing.assert_close(recomputed[name], grad, atol=1e-6, rtol=1e-6, msg=name)


def test_sam3_checkpoints_vision_and_text_blocks():
    model = tiny_sam3(0)
    assert checkpoint_layers(model) == 2 + 2  # 2 ViT layers, 2 CLIP layers
    assert model.text_encoder.text_model.encoder.layers[1].gradient_checkpointing


def test_a_model_without_blocks_is_refused():
    with pytest.raises(ConfigError, match="gradient_checkpointing off"):
        enable_checkpointing(torch.nn.Linear(2, 2))
