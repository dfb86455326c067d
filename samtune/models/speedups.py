"""Speed options: FlexAttention for SAM's image encoder, and ``torch.compile`` in place.

SAM's image encoder adds a decomposed relative-position bias to every attention head. The
transformers SDPA path materialises that bias as a dense ``(B, heads, L, L)`` tensor (400 MB
per 1024 px image per global-attention block at ViT-B size) and passes it as an additive mask,
which rules out the flash kernel. :func:`use_flex_attention` instead computes the two small
factors ``rel_h (B, heads, L, H)`` and ``rel_w (B, heads, L, W)`` and adds them inside a fused
FlexAttention kernel (``score + rel_h[q, k // W] + rel_w[q, k % W]``), so the bias never exists
in memory. The parameters and ``state_dict`` are unchanged: adapters, fingerprints and
checkpoints are the same with either attention.

FlexAttention runs as a compiled Triton kernel on CUDA; on other devices (and for a CPU
backward pass, which FlexAttention lacks) the module uses the SDPA path, so a model prepared
this way runs everywhere.

:func:`compile_model` compiles SAM's parts in place (``nn.Module.compile``), which also keeps
parameter names, so saving adapters and checkpoints is unaffected.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = [
    "ATTENTION_CHOICES",
    "COMPILE_MODES",
    "compile_model",
    "flex_attention_forward",
    "sam_parts",
    "use_flex_attention",
]

ATTENTION_CHOICES = ("sdpa", "flex")
# Modes without CUDA graphs only: a CUDA graph's outputs are overwritten by its next replay,
# and evaluation keeps an image's embedding across many decoder calls.
COMPILE_MODES = ("no", "default", "max-autotune-no-cudagraphs")

_compiled_flex = None


def _flex():
    """``flex_attention``, compiled once per process (eager FlexAttention is a slow reference)."""
    global _compiled_flex
    if _compiled_flex is None:
        from torch.nn.attention.flex_attention import flex_attention

        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def flex_attention_forward(module: nn.Module, hidden_states: torch.Tensor, *, compiled=True):
    """SAM vision attention (``SamVisionAttention`` weights) with the bias inside FlexAttention.

    ``hidden_states``: (B, H, W, C). Returns (B, H, W, C), equal to the SDPA path up to
    floating-point rounding. ``compiled=False`` runs FlexAttention's eager reference (slow; for
    tests on CPU, forward only).
    """
    from torch.nn.attention.flex_attention import flex_attention

    batch, height, width, _ = hidden_states.shape
    heads = module.num_attention_heads
    length = height * width
    qkv = module.qkv(hidden_states).reshape(batch, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.unbind(0)  # (B, heads, L, d)
    dim = query.shape[-1]
    table_h = module.get_rel_pos(height, height, module.rel_pos_h).to(query.dtype)  # (H, H, d)
    table_w = module.get_rel_pos(width, width, module.rel_pos_w).to(query.dtype)  # (W, W, d)
    grid = query.reshape(batch, heads, height, width, dim)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid, table_h).reshape(batch, heads, length, height)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid, table_w).reshape(batch, heads, length, width)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + rel_h[b, h, q_idx, kv_idx // width] + rel_w[b, h, q_idx, kv_idx % width]

    attend = _flex() if compiled else flex_attention
    out = attend(query, key, value, score_mod=score_mod, scale=module.scale)
    out = out.permute(0, 2, 1, 3).reshape(batch, height, width, -1)
    return module.proj(out)


def _attention_classes():
    from transformers.models.sam import modeling_sam

    return modeling_sam.SamVisionAttention, modeling_sam.SamVisionSdpaAttention


def _make_flex_class():
    base, sdpa = _attention_classes()

    class SamVisionFlexAttention(base):
        """SAM vision attention through FlexAttention on CUDA, SDPA elsewhere."""

        def forward(self, hidden_states: torch.Tensor, output_attentions=False):
            on_gpu = hidden_states.is_cuda
            if not (on_gpu and self.use_rel_pos):
                return sdpa.forward(self, hidden_states)
            return flex_attention_forward(self, hidden_states), None

    return SamVisionFlexAttention


_FLEX_CLASS = None


def sam_parts(model: nn.Module) -> dict[str, nn.Module]:
    """The ``SamModel`` parts (vision_encoder, prompt_encoder, mask_decoder) of ``model``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parts = {
        name: getattr(base, name, None)
        for name in ("vision_encoder", "prompt_encoder", "mask_decoder")
    }
    if any(p is None for p in parts.values()):
        raise ConfigError(f"expected a transformers SamModel; got {type(model).__name__}")
    return parts


def use_flex_attention(model: nn.Module, enable: bool = True, *, windowed: bool = True) -> int:
    """Switch the image encoder's attention to FlexAttention (``enable=False``: back to SDPA).

    In place; weights and parameter names are untouched. Returns how many attention modules
    changed. ``windowed=False`` leaves the windowed blocks (14x14-token windows, whose bias is
    small) on SDPA and switches only the global-attention blocks. Works for models with LoRA
    or adapters applied (they wrap ``qkv``/``proj``).
    """
    global _FLEX_CLASS
    if _FLEX_CLASS is None:
        _FLEX_CLASS = _make_flex_class()
    base, sdpa = _attention_classes()
    encoder = sam_parts(model)["vision_encoder"]
    changed = 0
    for layer in encoder.layers:
        module = layer.attn
        if not isinstance(module, base):
            continue
        flex = enable and (windowed or not layer.window_size)
        target = _FLEX_CLASS if flex else sdpa
        if type(module) is not target:
            module.__class__ = target
            changed += 1
    return changed


def compile_model(
    model: nn.Module,
    mode: str = "default",
    parts: tuple[str, ...] | None = None,
    *,
    cuda_graphs: bool = False,
) -> list[str]:
    """``torch.compile`` SAM's parts in place (parameter names unchanged); returns their names.

    ``parts`` defaults to all three. ``mode`` is one of :data:`COMPILE_MODES`; with
    ``cuda_graphs=True`` also ``reduce-overhead`` and ``max-autotune``, whose outputs are only
    valid until the next replay: the caller must mark each step
    (``torch.compiler.cudagraph_mark_step_begin``) and not keep outputs across calls.
    Compilation happens lazily, on the first call of each part.
    """
    allowed = COMPILE_MODES + (("reduce-overhead", "max-autotune") if cuda_graphs else ())
    if mode not in allowed:
        raise ConfigError(f"compile mode must be one of {', '.join(allowed)}; found {mode!r}")
    if mode == "no":
        return []
    found = sam_parts(model)
    names = list(parts or found)
    for name in names:
        if name not in found:
            raise ConfigError(f"unknown SAM part {name!r}; choose from {', '.join(found)}")
        found[name].compile(mode=None if mode == "default" else mode)
    return names
