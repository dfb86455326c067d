"""The example plugin (examples/samtune-bitfit), pip-installed into a temporary --target with
no network, is found through its entry point, listed by ``samtune strategies``, and trains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import randomize_
from typer.testing import CliRunner

import samtune
from samtune.adapters import load_adapter, save_adapter
from samtune.cli import app
from samtune.strategies import get_strategy, list_strategies, registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "samtune-bitfit"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
           "--no-index", "--quiet", "--target", str(target), str(EXAMPLE)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(target.glob("samtune_bitfit-*.dist-info/entry_points.txt"))
    sys.path.insert(0, str(target))
    for name in [m for m in sys.modules if m.startswith("samtune_bitfit")]:
        del sys.modules[name]  # use the pip-installed copy, not one imported earlier
    registry.refresh()
    yield target
    sys.path.remove(str(target))
    registry.refresh()


def test_pip_installed_plugin_is_listed_and_trains(installed_plugin, tmp_path):
    assert "bitfit" in list_strategies()
    result = CliRunner().invoke(app, ["strategies"])
    assert result.exit_code == 0
    assert "bitfit" in result.output and "(from samtune-bitfit)" in result.output

    strategy = get_strategy("bitfit")
    assert Path(sys.modules[type(strategy).__module__].__file__).is_relative_to(installed_plugin)
    model = strategy.apply(randomize_(samtune.load_model("tiny")))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".bias") or "norm" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[[10.0, 12.0, 70.0, 90.0]]])
    losses = []
    for _ in range(5):  # push the mask logits down: a loss that must fall when biases train
        opt.zero_grad()
        loss = model(pixel_values=x, input_boxes=box).pred_masks.sigmoid().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)

    save_adapter(model, tmp_path)
    restored = load_adapter(randomize_(samtune.load_model("tiny")), tmp_path)
    assert restored.samtune_info.strategy.name == "bitfit"
