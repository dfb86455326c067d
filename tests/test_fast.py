"""Speed options: FlexAttention with the fused relative-position bias, and torch.compile in place.

The oracle is transformers' own SDPA attention on the same weights. FlexAttention has no CPU
backward and its CPU forward is a reference implementation, so the CPU tests check the forward
math and the fallback; the CUDA tests (run on a GPU machine) check forward and backward.
"""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_

import samtune
from samtune.errors import ConfigError
from samtune.models.speedups import compile_model, flex_attention_forward, use_flex_attention

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _layer_input(attn, batch=2, seed=0):
    side = attn.rel_pos_h.shape[0] // 2 + 1  # the grid the rel-pos tables were made for
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, side, side, attn.qkv.in_features, generator=g)


def test_flex_forward_equals_sdpa_on_every_block(tiny_model):
    randomize_(tiny_model, std=0.3)  # non-zero rel-pos tables, so the bias matters
    layers = tiny_model.vision_encoder.layers
    assert {layer.window_size for layer in layers} == {0, 4}  # global and windowed blocks
    with torch.no_grad():
        for layer in layers:
            x = _layer_input(layer.attn)
            expected = layer.attn(x)[0]
            got = flex_attention_forward(layer.attn, x, compiled=False)
            assert torch.allclose(got, expected, atol=1e-5), layer.window_size
            # and the bias is not a no-op: dropping it changes the output
            saved = layer.attn.rel_pos_h.detach().clone()
            layer.attn.rel_pos_h.zero_()
            assert not torch.allclose(layer.attn(x)[0], expected, atol=1e-3)
            layer.attn.rel_pos_h.copy_(saved)


def test_use_flex_attention_keeps_weights_and_runs_sdpa_off_gpu(tiny_model):
    randomize_(tiny_model, std=0.3)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    size = tiny_model.config.vision_config.image_size
    pix = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = tiny_model.vision_encoder(pix).last_hidden_state
        assert use_flex_attention(tiny_model) == 2
        assert use_flex_attention(tiny_model) == 0  # idempotent
        assert type(tiny_model.vision_encoder.layers[0].attn).__name__ == "SamVisionFlexAttention"
        got = tiny_model.vision_encoder(pix).last_hidden_state
    assert torch.equal(got, expected)  # CPU: the SDPA path, bit for bit
    after = tiny_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert use_flex_attention(tiny_model, enable=False) == 2
    assert use_flex_attention(tiny_model, windowed=False) == 1  # global block only


def test_flex_attention_works_under_lora(tiny_model):
    from samtune.strategies import get_strategy

    get_strategy("lora").apply(tiny_model)
    assert use_flex_attention(tiny_model) == 2
    layer = tiny_model.vision_encoder.layers[1]
    x = _layer_input(layer.attn)
    with torch.no_grad():
        assert torch.allclose(
            flex_attention_forward(layer.attn, x, compiled=False), layer.attn(x)[0], atol=1e-5
        )


@pytest.mark.slow  # inductor's CPU compile: about 2 minutes on 2 busy cores
def test_compile_model_keeps_parameter_names_and_outputs(tiny_model):
    names = list(tiny_model.state_dict())
    size = tiny_model.config.vision_config.image_size
    pix = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    boxes = torch.tensor([[[4.0, 6.0, 40.0, 50.0]]])
    with torch.no_grad():
        expected = tiny_model(pixel_values=pix, input_boxes=boxes).pred_masks
    assert compile_model(tiny_model, "default", parts=("prompt_encoder", "mask_decoder")) == [
        "prompt_encoder",
        "mask_decoder",
    ]
    assert list(tiny_model.state_dict()) == names  # no "_orig_mod." prefixes
    with torch.no_grad():
        got = tiny_model(pixel_values=pix, input_boxes=boxes).pred_masks
    assert torch.allclose(got, expected, atol=1e-5)
    assert samtune.fingerprint(tiny_model) == samtune.fingerprint(samtune.load_model("tiny"))


def test_compile_and_attention_options_are_checked(tiny_model):
    from samtune.train.config import FitConfig

    with pytest.raises(ConfigError, match="compile mode"):
        compile_model(tiny_model, "fastest")
    with pytest.raises(ConfigError, match="unknown SAM part"):
        compile_model(tiny_model, "default", parts=("decoder",))
    assert compile_model(tiny_model, "no") == []
    with pytest.raises(ConfigError, match="compile must be one of"):
        FitConfig(compile="yes")
    with pytest.raises(ConfigError, match="attention must be one of"):
        FitConfig(attention="flash")


# ---------------------------------------------------------------- CUDA: the real kernel


@cuda
@pytest.mark.parametrize("window", [0, 14])
def test_flex_kernel_matches_sdpa_forward_and_backward_on_gpu(window):
    from transformers import SamVisionConfig
    from transformers.models.sam.modeling_sam import SamVisionSdpaAttention

    config = SamVisionConfig(hidden_size=768, num_attention_heads=12, image_size=1024)
    torch.manual_seed(0)
    ref = SamVisionSdpaAttention(config, window).cuda()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.05)
    side = 64 if window == 0 else window
    x = torch.randn(2, side, side, 768, device="cuda", requires_grad=True)
    out_ref = ref(x)[0]
    grads_ref = torch.autograd.grad(out_ref.square().sum(), [x, *ref.parameters()])
    got = flex_attention_forward(ref, x)
    grads = torch.autograd.grad(got.square().sum(), [x, *ref.parameters()])
    assert torch.allclose(got, out_ref, atol=2e-4, rtol=1e-3)
    for (name, _), a, b in zip(ref.named_parameters(), grads[1:], grads_ref[1:], strict=True):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-2), name
    assert torch.allclose(grads[0], grads_ref[0], atol=1e-3, rtol=1e-2)


@cuda
def test_flex_encoder_matches_sdpa_encoder_in_bf16_on_gpu():
    sdpa = samtune.load_model("vit-b-random").vision_encoder.cuda().eval()
    flex = samtune.load_model("vit-b-random")
    use_flex_attention(flex)
    flex = flex.vision_encoder.cuda().eval()
    pix = torch.randn(2, 3, 1024, 1024, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a = sdpa(pix).last_hidden_state.float()
        b = flex(pix).last_hidden_state.float()
    rel = (a - b).norm() / a.norm()
    assert rel < 2e-2, float(rel)


@pytest.mark.slow
def test_fit_with_compile_and_flex_matches_the_eager_run(tmp_path):
    """The speed options change how the step runs, not what it computes."""
    from safetensors.torch import load_file

    from samtune.data import load_dataset
    from samtune.train import fit

    train = load_dataset("demo", "train", counts={"train": 2, "val": 1, "test": 1})
    common = dict(epochs=1, batch_size=1, max_instances=2, compare=False, quiet=True,
                  log_with=None, val_split=None, test_split=None)  # fmt: skip
    runs = {}
    for name, options in {"eager": {}, "fast": {"compile": "default", "attention": "flex"}}.items():
        fit("tiny", "lora", {"train": train}, tmp_path / name, **common, **options)
        runs[name] = load_file(tmp_path / name / "adapter" / "adapter.safetensors")
    assert runs["eager"].keys() == runs["fast"].keys()
    for key, eager in runs["eager"].items():
        assert torch.allclose(runs["fast"][key], eager, atol=1e-4), key
    # LoRA's B matrices start at zero: the run trained them
    assert any(v.abs().max() > 0 for k, v in runs["fast"].items() if "lora_B" in k)
    assert (tmp_path / "fast" / "config.yaml").read_text().count("compile: default") == 1
