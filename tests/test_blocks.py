"""Late-block LoRA and adapters (the ``blocks`` option of ``lora`` and ``adapter``): exactly the
chosen blocks train, backward stops at the first of them (with and without checkpointing), and
adapter files, merging and peft directories keep the choice."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import randomize_
from typer.testing import CliRunner

from samtune.adapters import load_adapter, merge_adapter, save_adapter
from samtune.cli import app
from samtune.errors import ConfigError
from samtune.export.formats import export_adapter
from samtune.models.loading import load_model
from samtune.options import parse_key_values
from samtune.strategies import get_strategy
from samtune.train.config import build_config, check_inputs
from samtune.train.loop import enable_checkpointing

BOX = torch.tensor([[[10.0, 12.0, 70.0, 90.0]], [[40.0, 30.0, 120.0, 100.0]]])


def base():
    """The tiny SAM (2 encoder blocks) with every weight random, the same every call."""
    return randomize_(load_model("tiny"))


def pixels(seed: int = 3) -> torch.Tensor:
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(seed))


def loss_of(model, seed: int = 3) -> torch.Tensor:
    out = model(pixel_values=pixels(seed), input_boxes=BOX, multimask_output=False)
    return out.pred_masks.sigmoid().mean() + out.iou_scores.square().mean()


def encoder_blocks_of(names) -> set[int]:
    return {int(m[1]) for n in names if (m := re.match(r"vision_encoder\.layers\.(\d+)\.", n))}


@pytest.mark.parametrize(
    ("name", "blocks", "expected"),
    [("lora", "last:1", {1}), ("lora", [0], {0}), ("adapter", "last:1", {1}),
     ("adapter", [0], {0})],
)  # fmt: skip
def test_exactly_the_chosen_blocks_train(name, blocks, expected):
    model = get_strategy(name, blocks=blocks).apply(base())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert encoder_blocks_of(trainable) == expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(2):
        opt.zero_grad()
        loss_of(model, step).backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable
    assert {n for n in trainable - changed if n.startswith("vision_encoder.")} == set()


def _saved_bytes_and_grad_flags(model) -> tuple[int, dict[int, tuple[bool, bool]]]:
    """Bytes autograd keeps for backward in one training forward, and per encoder block
    whether its input and output require grad."""
    flags: dict[int, tuple[bool, bool]] = {}

    def record(index):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            flags[index] = (args[0].requires_grad, out.requires_grad)

        return hook

    hooks = [
        layer.register_forward_hook(record(i))
        for i, layer in enumerate(model.vision_encoder.layers)
    ]
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_of(model)
    loss.backward()
    for h in hooks:
        h.remove()
    return sum(saved), flags


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("name", ["lora", "adapter"])
def test_backward_stops_at_the_first_adapted_block(name, checkpointing):
    late = get_strategy(name, blocks="last:1").apply(base())
    every = get_strategy(name).apply(base())
    if checkpointing:
        enable_checkpointing(late)
        enable_checkpointing(every)
    late_bytes, late_flags = _saved_bytes_and_grad_flags(late)
    every_bytes, every_flags = _saved_bytes_and_grad_flags(every)
    # nothing before block 1 is part of the graph: block 0 neither needs nor makes grads
    assert late_flags == {0: (False, False), 1: (False, True)}
    assert every_flags == {0: (False, True), 1: (True, True)}
    if not checkpointing:  # (checkpointing keeps block inputs outside autograd's saved tensors)
        assert late_bytes < every_bytes
    # the frozen block 0 got no gradient even though the tensors after it did
    assert all(
        p.grad is None
        for n, p in late.named_parameters()
        if n.startswith("vision_encoder.layers.0.")
    )


@pytest.mark.parametrize("name", ["lora", "adapter"])
def test_adapter_files_keep_the_blocks(name, tmp_path):
    model = get_strategy(name, blocks=[1]).apply(base())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # stand-in for training: every trained tensor moves
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    with torch.no_grad():
        expected = model(pixel_values=pixels(), input_boxes=BOX).pred_masks
    save_adapter(model, tmp_path / "ad")
    restored = load_adapter(base(), tmp_path / "ad").eval()
    assert encoder_blocks_of(n for n, p in restored.named_parameters() if p.requires_grad) == {1}
    with torch.no_grad():
        assert torch.equal(restored(pixel_values=pixels(), input_boxes=BOX).pred_masks, expected)
    if name != "lora":
        return
    merged = merge_adapter(model).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        got = merged(pixel_values=pixels(), input_boxes=BOX).pred_masks
    assert (got - expected).abs().max().item() < 1e-4

    from peft import PeftModel

    export_adapter(model, tmp_path / "peft", "peft")
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert re.fullmatch(cfg["exclude_modules"], "vision_encoder.layers.0.attn.qkv")
    assert not re.fullmatch(cfg["exclude_modules"], "vision_encoder.layers.1.attn.qkv")
    peft_model = PeftModel.from_pretrained(base(), tmp_path / "peft").eval()
    with torch.no_grad():
        got = peft_model(pixel_values=pixels(), input_boxes=BOX).pred_masks
    assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    ("name", "blocks", "message"),
    [
        ("lora", "last:0", r"blocks must be all, last:K \(K >= 1\)"),
        ("lora", "first:2", r"blocks must be all, last:K"),
        ("adapter", [], "empty list"),
        ("adapter", [1, 1], "lists an index twice"),
        ("lora", [-1], "indices must be >= 0"),
        ("lora", [True], "blocks must be all, last:K"),
        ("adapter", 3, "blocks must be all"),
    ],
)
def test_bad_blocks_are_refused_when_configured(name, blocks, message):
    with pytest.raises(ConfigError, match=message):
        get_strategy(name, blocks=blocks)


@pytest.mark.parametrize("name", ["lora", "adapter"])
@pytest.mark.parametrize(
    ("blocks", "message"),
    [("last:3", r"asks for 3 blocks; this image encoder has 2"),
     ([0, 2], r"blocks \[2\] are out of range: this image encoder has 2 blocks")],
)  # fmt: skip
def test_blocks_beyond_the_encoder_are_refused_when_applied(name, blocks, message):
    with pytest.raises(ConfigError, match=message):
        get_strategy(name, blocks=blocks).apply(base())


def test_blocks_from_yaml_and_the_command_line(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text("strategy: lora\nstrategy_options:\n  blocks: last:3\n  rank: 4\n")
    strategy = check_inputs(build_config(file))
    assert (strategy.config.blocks, strategy.config.rank) == ("last:3", 4)
    given = parse_key_values(["blocks=[9, 10, 11]"])  # what -S blocks=[9,10,11] passes
    strategy = check_inputs(build_config(file, strategy_options=given))
    assert (strategy.config.blocks, strategy.config.rank) == ([9, 10, 11], 4)
    result = CliRunner().invoke(app, ["fit", "-S", "blocks=last:0", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "blocks must be all, last:K (K >= 1)" in result.output
