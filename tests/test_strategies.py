"""Every installed strategy (built-ins and the example plugin) against the strategy contract.

The tests are parametrised over ``list_strategies()`` itself, so a newly installed strategy is
checked without anyone writing a test for it (timm's habit).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import randomize_
from safetensors import safe_open

import samtune
from samtune.adapters import load_adapter, save_adapter
from samtune.errors import ConfigError, InputError, MissingDependencyError, UnknownNameError
from samtune.strategies import get_strategy, list_strategies, registry
from samtune.strategies.base import POSITIONAL_MATRIX

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "samtune-bitfit"


def install_example_plugin(site: Path) -> Path:
    """Install examples/samtune-bitfit into ``site`` as pip would: package + dist-info."""
    shutil.copytree(EXAMPLE / "samtune_bitfit", site / "samtune_bitfit")
    info = site / "samtune_bitfit-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: samtune-bitfit\nVersion: 0.1.0\nRequires-Dist: samtune\n"
    )
    (info / "entry_points.txt").write_text(
        "[samtune.strategies]\nbitfit = samtune_bitfit:BitFitStrategy\n"
    )
    (info / "top_level.txt").write_text("samtune_bitfit\n")
    return site


# The example plugin is installed before collection, so the parametrisation below sees it.
_SITE = install_example_plugin(Path(tempfile.mkdtemp(prefix="samtune-plugin-site-")))
sys.path.insert(0, str(_SITE))
registry.refresh()
STRATEGIES = sorted(list_strategies())


@pytest.fixture(autouse=True, scope="module")
def _plugin_on_path():
    yield
    if str(_SITE) in sys.path:
        sys.path.remove(str(_SITE))
    registry.refresh()
    shutil.rmtree(_SITE, ignore_errors=True)


def base():
    """The tiny SAM with every weight random (the preset's neck convs are zero, which would
    hide the image encoder from every output)."""
    return randomize_(samtune.load_model("tiny"))


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        pixel_values=torch.randn(2, 3, 128, 128, generator=g),
        input_points=torch.tensor(
            [[[[30.0, 40.0], [90.0, 20.0]]], [[[64.0, 64.0], [10.0, 110.0]]]]
        ),
        input_labels=torch.tensor([[[1, 0]], [[1, 1]]]),
    )


def _box_inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return dict(
        pixel_values=torch.randn(2, 3, 128, 128, generator=g),
        input_boxes=torch.tensor([[[10.0, 12.0, 70.0, 90.0]], [[40.0, 30.0, 120.0, 100.0]]]),
        multimask_output=False,  # the single-mask head, so every output head gets gradient
    )


def _loss(out) -> torch.Tensor:
    return out.pred_masks.sigmoid().mean() + out.iou_scores.square().mean()


def train_steps(model, steps: int = 3, lr: float = 1e-2) -> None:
    """A few Adam steps on point and box prompts (every prompt path gets gradient)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for step in range(steps):
        opt.zero_grad()
        loss = _loss(model(**_inputs(step))) + _loss(model(**_box_inputs(step)))
        loss.backward()
        opt.step()
    model.eval()


def predict(model) -> torch.Tensor:
    with torch.no_grad():
        out = model(**_box_inputs(7))
    return torch.cat([out.pred_masks.flatten(), out.iou_scores.flatten()])


def test_example_plugin_is_in_the_registry():
    assert "bitfit" in STRATEGIES
    assert {"full", "decoder", "lora", "adapter", "peft"} <= set(STRATEGIES)


@pytest.mark.parametrize("name", STRATEGIES)
def test_trainable_set_is_what_the_strategy_says(name):
    model = base()
    before = {n for n, _ in model.named_parameters()}
    strategy = get_strategy(name)
    assert strategy.apply(model) is model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    declared = {n for n, _ in model.named_parameters() if strategy.is_trainable(n)}
    assert trainable == declared
    assert trainable, f"{name} trains nothing"
    assert POSITIONAL_MATRIX not in trainable
    # frozen base tensors keep their names: injected layers only add
    assert before - {n for n, _ in model.named_parameters()} <= {
        n for n in before if name in ("lora", "peft") and ".qkv." in n
    }
    encoder = any(n.startswith("vision_encoder.") for n in trainable)
    assert strategy.freezes_image_encoder == (not encoder)
    assert set(strategy.trainable_state_dict(model)) == trainable


@pytest.mark.parametrize("name", STRATEGIES)
def test_steps_change_only_trainable_tensors_and_adapter_round_trips(name, tmp_path):
    model = get_strategy(name).apply(base())
    base_out = predict(base())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= trainable
    # every trainable tensor that a prompt can reach moved; only the mask-input path
    # (prompt_encoder.mask_embed, used when a mask prompt is given) may stay
    assert sorted(n for n in trainable - changed if "mask_embed" not in n) == []
    tuned_out = predict(model)
    assert not torch.allclose(tuned_out, base_out, atol=1e-5)

    path = save_adapter(model, tmp_path / "ad")
    with safe_open(str(path), framework="pt") as fh:
        keys, meta = set(fh.keys()), fh.metadata()
        for key in keys:
            assert torch.equal(fh.get_tensor(key), dict(model.named_parameters())[key])
    assert keys == trainable
    assert meta["strategy"] == name
    assert json.loads(meta["strategy_config"]) == get_strategy(name).config.to_dict()
    assert meta["base_fingerprint"] == samtune.fingerprint(base())
    assert meta["base_model"] == "tiny"
    assert meta["strategy_package"] == ("samtune-bitfit" if name == "bitfit" else "samtune")

    restored = load_adapter(base(), tmp_path / "ad")
    assert (predict(restored) - tuned_out).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", STRATEGIES)
def test_config_round_trips_through_json(name):
    strategy = get_strategy(name)
    text = strategy.config.to_json()
    again = get_strategy(name, **json.loads(text))
    assert again.config == strategy.config
    assert type(strategy.config).from_json(text) == strategy.config
    with pytest.raises(ConfigError, match="no option 'not_an_option'"):
        get_strategy(name, not_an_option=1)


# --------------------------------------------------------------------------- built-ins


def _count(model, prefix=""):
    return sum(
        p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)
    )


def test_lora_defaults_train_qkv_lora_and_the_decoder():
    model = get_strategy("lora").apply(base())
    decoder = sum(p.numel() for p in base().mask_decoder.parameters())
    # rank 8 on qkv (32 -> 96) in 2 blocks: (8*32 + 96*8) * 2
    assert _count(model, "vision_encoder.") == (8 * 32 + 96 * 8) * 2
    assert _count(model, "mask_decoder.") == decoder
    assert _count(model, "prompt_encoder.") == 0
    lora = [n for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(".attn.qkv." in n for n in lora)


def test_decoder_lora_stays_lora_next_to_a_trainable_decoder():
    model = get_strategy("lora", decoder_attention=True, use_dora=True).apply(base())
    params = dict(model.named_parameters())
    q = "mask_decoder.transformer.layers.0.self_attn.q_proj"
    assert not params[f"{q}.base_layer.weight"].requires_grad
    assert params[f"{q}.lora_A.default.weight"].requires_grad
    assert params[f"{q}.lora_magnitude_vector.default.weight"].requires_grad
    assert params["mask_decoder.transformer.layers.0.self_attn.k_proj.weight"].requires_grad
    assert not any("modules_to_save" in n for n in params)
    # the decoder's k_proj, out_proj and the encoder's proj are not LoRA targets
    assert not any("k_proj.lora" in n or "attn.proj.lora" in n for n in params)


def test_lora_without_decoder_trains_only_lora():
    model = get_strategy("lora", train_decoder=False, proj=True, mlp=True).apply(base())
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and n.startswith("vision_encoder.") for n in names)
    assert {n.split(".")[4] for n in names} == {"qkv", "proj", "lin1", "lin2"}


def test_decoder_strategy_options():
    model = get_strategy("decoder").apply(base())
    total = sum(p.numel() for p in model.mask_decoder.parameters())
    assert _count(model) == _count(model, "mask_decoder.") == total
    model = get_strategy("decoder", train_prompt_encoder=True).apply(base())
    assert _count(model, "prompt_encoder.") > 0 and _count(model, "vision_encoder.") == 0


def test_full_strategy_can_keep_the_prompt_encoder_frozen():
    total = sum(p.numel() for p in base().parameters())
    model = get_strategy("full").apply(base())
    assert _count(model) == total - 2 * 16  # all but the 2x16 positional matrix
    model = get_strategy("full", freeze_prompt_encoder=True).apply(base())
    assert _count(model, "prompt_encoder.") == 0 and _count(model, "vision_encoder.") > 0


def test_adapters_start_at_the_base_model_and_are_bottlenecks():
    base_out = predict(base())
    model = get_strategy("adapter", bottleneck=4).apply(base())
    assert torch.equal(predict(model), base_out)  # zero-initialised up-projection
    layer = model.vision_encoder.layers[0]
    assert tuple(layer.adapter_mlp.down.weight.shape) == (4, 32)
    assert tuple(layer.adapter_attn.up.weight.shape) == (32, 4)
    assert torch.count_nonzero(layer.adapter_mlp.up.weight) == 0
    # each adapter: 32*4+4 + 4*32+32; two per block, two blocks
    assert _count(model, "vision_encoder.") == (32 * 4 + 4 + 4 * 32 + 32) * 2 * 2


@pytest.mark.parametrize("method", ["ia3", "loha", "lokr", "lora"])
def test_peft_methods_train_and_round_trip(method, tmp_path):
    model = get_strategy("peft", method=method, train_decoder=False).apply(base())
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".attn.qkv." in n for n in names)
    train_steps(model, steps=2)
    save_adapter(model, tmp_path)
    restored = load_adapter(base(), tmp_path)
    assert (predict(restored) - predict(model)).abs().max().item() <= 1e-6


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("lora", {"rank": 0}, "rank must be a positive integer \\(>= 1\\); found 0"),
        ("lora", {"rank": 2.5}, "rank must be an integer"),
        ("lora", {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ("lora", {"use_dora": "yes"}, "use_dora must be true or false"),
        ("adapter", {"activation": "tanh"}, "activation must be one of gelu, relu, silu"),
        ("adapter", {"mlp_adapter": False, "attn_adapter": False}, "enable at least one"),
        ("adapter", {"scale": -1}, "scale must be > 0"),
        ("peft", {"method": "nope"}, "method 'nope' is not a peft method"),
        ("peft", {"options": {"task_type": "CAUSAL_LM"}}, "may not set 'task_type'"),
        ("peft", {"method": "loha", "options": {"bogus": 1}}, "invalid options for peft method"),
        ("peft", {"target_modules": "(["}, "not a valid regex"),
        ("full", {"freeze_prompt_encoder": 1}, "freeze_prompt_encoder must be true or false"),
        ("bitfit", {"parts": ["encoder"]}, "are not parts of SAM"),
    ],
)
def test_invalid_config_values_are_refused_clearly(name, options, message):
    with pytest.raises(ConfigError, match=message):
        get_strategy(name, **options)


def test_unknown_strategy_lists_the_installed_ones():
    with pytest.raises(UnknownNameError) as info:
        get_strategy("qlora")
    text = str(info.value)
    assert "'qlora' is not installed" in text
    for name in STRATEGIES:
        assert name in text


def test_applying_twice_is_refused():
    model = get_strategy("decoder").apply(base())
    with pytest.raises(InputError, match="already has strategy 'decoder'"):
        get_strategy("lora").apply(model)


def test_broken_plugins_are_reported_by_name_and_do_not_break_others(tmp_path, monkeypatch):
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[samtune.strategies]\nghost = no_such_module_xyz:Strategy\nnotastrategy = json:dumps\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    try:
        with pytest.warns(UserWarning, match="'ghost' from package 'broken-plugin'"):
            names = list_strategies()
        assert "ghost" not in names and "notastrategy" not in names
        assert {"lora", "bitfit"} <= set(names)
        broken = registry.broken_strategies()
        assert "ModuleNotFoundError" in broken["ghost"]
        assert "not a subclass of samtune.strategies.Strategy" in broken["notastrategy"]
        with pytest.raises(MissingDependencyError, match="'ghost' is installed .* failed to load"):
            get_strategy("ghost")
        assert get_strategy("lora").name == "lora"
    finally:
        monkeypatch.undo()
        registry.refresh()


def test_cli_lists_strategies_with_descriptions_and_defaults():
    from typer.testing import CliRunner

    from samtune.cli import app

    result = CliRunner().invoke(app, ["strategies"])
    assert result.exit_code == 0, result.output
    for name, description in list_strategies().items():
        assert name in result.output and description in result.output
    assert '"rank": 8' in result.output
    result = CliRunner().invoke(app, ["strategies", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["lora"]["config"]["rank"] == 8
    assert data["bitfit"]["package"] == "samtune-bitfit"
    assert data["decoder"]["freezes_image_encoder"] is True


@pytest.mark.slow
@pytest.mark.parametrize(("train_decoder", "limit_mb"), [(True, 20), (False, 2)])
def test_lora_adapter_on_vit_b_is_small(tmp_path, train_decoder, limit_mb):
    model = get_strategy("lora", train_decoder=train_decoder).apply(
        samtune.load_model("vit-b-random")
    )
    size = save_adapter(model, tmp_path).stat().st_size
    assert size < limit_mb * 1e6
    assert size > 1e6  # 12 blocks x rank 8 x (768 + 2304) x 4 bytes at the very least
