"""Model-FLOPs utilisation (MFU) of samtune's training step, per strategy.

For each case (strategy, batch) the script

1. counts the FLOPs of one whole training step (forward, backward, and the recomputation that
   gradient checkpointing adds) with ``torch.utils.flop_counter.FlopCounterMode``, on an
   eager-attention copy of the model (its attention is plain matmuls; the counter has no
   formula for some fused SDPA kernels). The count is checked against an independent one:
   the forward FLOPs of each part (patch embedding, every encoder block, neck, prompt encoder
   + mask decoder) times the usual backward factors, stated in :func:`expected_step_flops`;
2. times the step of the model as configured (attention, compile, precision) and, interleaved
   with it, a large square matmul in the same dtype (the machine's peak matmul FLOP/s), so load
   from other processes hits both alike;
3. reports TFLOP/s, MFU = (step FLOPs / step time) / peak, and peak memory in MiB: on CUDA
   ``max_memory_allocated``; on CPU the high-water mark of the allocations the profiler
   records during one step, above what was held before it (weights, optimizer state).

Strategies: ``full``, ``lora``, ``adapter``, ``decoder`` (encoder runs every step, frozen) and
``decoder-cached`` (the embedding cache serves the encoder's output). ``--blocks`` sets the
``blocks`` option of ``lora``/``adapter`` (``all``, ``last:K``).

Usage::

    python bench/train_mfu.py                                   # ViT-B, 1024 px, fp32 on CPU
    python bench/train_mfu.py --model vit-h-random --batch 4 --precision bf16 --grad-ckpt \\
        --attention flex --compile default

Prints JSON, then a Markdown table. Ratios are measured in one run, on one device.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch
from _common import device_info, emit, pick_device, reset_peak, sync, time_it
from torch.utils.flop_counter import FlopCounterMode
from train_step import make_inputs
from transformers import SamModel

import samtune
from samtune.models.speedups import (
    ATTENTION_CHOICES,
    COMPILE_MODES,
    compile_model,
    use_flex_attention,
)
from samtune.strategies import get_strategy
from samtune.strategies.base import select_blocks
from samtune.train.loop import enable_checkpointing
from samtune.train.losses import sam_loss
from samtune.train.step import SamTrainStep

STRATEGIES = ("full", "lora", "adapter", "decoder", "decoder-cached")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load(name: str, attention: str):
    """The model with ``attention`` (``eager`` rebuilds it: the class is chosen at construction)."""
    model = samtune.load_model(name)
    if attention == "eager":
        weights = model.state_dict()
        model = SamModel._from_config(model.config, attn_implementation="eager")
        model.load_state_dict(weights)
    elif attention == "flex":
        use_flex_attention(model)
    return model


def strategy_for(name: str, blocks: str):
    base = "decoder" if name == "decoder-cached" else name
    return get_strategy(base, blocks=blocks) if base in ("lora", "adapter") else get_strategy(base)


def build(args, name: str, device, attention: str):
    """Model with the strategy applied, the step module, its optimizer and inputs factory."""
    model = load(args.model, attention)
    strategy = strategy_for(name, args.blocks)
    strategy.apply(model)
    model.to(device).train()
    if args.grad_ckpt and not strategy.freezes_image_encoder:
        enable_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, SamTrainStep(model), torch.optim.AdamW(params, lr=1e-5)


def step_inputs(model, name, pix, boxes, autocast) -> dict:
    batch, prompts = boxes.shape[:2]
    device = pix.device
    inputs = {
        "image_index": torch.arange(batch, device=device).repeat_interleave(prompts),
        "boxes": boxes.flatten(0, 1),
    }
    if name == "decoder-cached":
        with torch.no_grad(), autocast():
            inputs["image_embeddings"] = model.vision_encoder(pix).last_hidden_state.float()
    else:
        inputs["pixel_values"] = pix
    return inputs


def train_step(step_module, opt, inputs, targets, autocast) -> None:
    with autocast():
        (pred, iou_pred), *_ = step_module(**inputs)
    loss = sam_loss(pred, iou_pred, targets).total
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def forward_parts(model, inputs) -> dict[str, float]:
    """Forward FLOPs of each part of one step's forward (no grad), from module hooks."""
    encoder = model.vision_encoder
    parts = {"patch_embed": encoder.patch_embed, "neck": encoder.neck, "encoder": encoder}
    parts.update({f"block{i}": layer for i, layer in enumerate(encoder.layers)})
    counts: dict[str, float] = {}
    with FlopCounterMode(display=False) as counter:
        hooks = []
        for key, module in parts.items():
            hooks.append(
                module.register_forward_pre_hook(
                    lambda m, a, key=key: counts.__setitem__(key, -counter.get_total_flops())
                )
            )
            hooks.append(module.register_forward_hook(
                lambda m, a, o, key=key: counts.__setitem__(key, counts[key] + counter.get_total_flops())))  # fmt: skip
        # parameters frozen rather than no_grad: FlopCounterMode's module tracker fails on
        # views of trainable parameters made under no_grad (the prompt encoder's outputs)
        trainable = [p for p in model.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        SamTrainStep(model)(**inputs)
        for p in trainable:
            p.requires_grad_(True)
        for h in hooks:
            h.remove()
    counts["total"] = counter.get_total_flops()
    counts["decoder"] = counts["total"] - counts.get("encoder", 0)
    return counts


def expected_step_flops(name: str, parts: dict[str, float], adapted: list[int], ckpt: bool):
    """The step's FLOPs from forward FLOPs and the usual backward factors.

    A matmul's backward costs 2x its forward when both its input and its weight need
    gradients (dX and dW), 1x when only one does, 0 when neither. So:

    - a part that trains and whose input needs grad: 3x forward (decoder; full's encoder);
    - the patch embedding (input: pixels, no grad): 2x when it trains, 1x otherwise;
    - frozen blocks at or after the first adapted block, and the neck: 2x (dX only; the
      adapters' own dW is counted within their blocks' forward, a few per cent at most);
    - frozen blocks before the first adapted block: 1x (no backward reaches them);
    - gradient checkpointing recomputes every block that backward reaches: +1x forward;
    - the decoder: 3x, or 2x-3x when its image-embedding input needs no grad
      (``decoder``, ``decoder-cached``: the bench states 3x, an upper bound).
    """
    blocks = [parts[f"block{i}"] for i in range(_depth(parts))]
    decoder = 3 * parts["decoder"]
    if name in ("decoder", "decoder-cached"):
        return decoder + (parts["encoder"] if name == "decoder" else 0)
    if name == "full":
        first = 0
        encoder = 2 * parts["patch_embed"] + 3 * (sum(blocks) + parts["neck"])
    else:
        first = adapted[0]
        encoder = (
            parts["patch_embed"] + sum(blocks[:first]) + 2 * (sum(blocks[first:]) + parts["neck"])
        )
    return decoder + encoder + (sum(blocks[first:]) if ckpt else 0)


def _depth(parts: dict[str, float]) -> int:
    return sum(1 for k in parts if k.startswith("block"))


def count_flops(args, name, device, pix, boxes, targets, autocast) -> dict:
    """Counted and expected FLOPs of one step, on the eager-attention model."""
    model, step_module, opt = build(args, name, device, "eager")
    inputs = step_inputs(model, name, pix, boxes, autocast)
    with FlopCounterMode(display=False) as counter:
        train_step(step_module, opt, inputs, targets, autocast)
    parts = forward_parts(model, inputs)
    depth = _depth(parts)
    adapted = select_blocks(args.blocks, depth) if name in ("lora", "adapter") else []
    expected = expected_step_flops(name, parts, adapted, args.grad_ckpt and name != "decoder")
    return {"step_flops": counter.get_total_flops(), "expected_flops": expected,
            "forward_flops": parts["total"]}  # fmt: skip


def cpu_peak_bytes(fn) -> int:
    """High-water mark of the CPU allocations made while ``fn`` runs (profiler memory events;
    op by op, so a peak inside one op's own temporaries is not seen)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # each op's own allocations net of its own frees, at its start; "[memory]" events are
    # the frees outside any op
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events())
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


def peak_matmul_fn(device, dtype, n: int):
    """A square matmul of side ``n`` and its FLOPs (the machine's peak matmul rate)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: a @ b), 2 * n**3


def measure(args, name, device, pix, boxes, targets, autocast, dtype) -> dict:
    """Step time and peak memory of the configured model, interleaved with the peak matmul."""
    model, step_module, opt = build(args, name, device, args.attention)
    compile_model(model, args.compile)
    inputs = step_inputs(model, name, pix, boxes, autocast)
    step = lambda: train_step(step_module, opt, inputs, targets, autocast)  # noqa: E731
    matmul, matmul_flops = peak_matmul_fn(device, dtype, args.peak_n)
    for _ in range(args.warmup):
        step()
        matmul()
    reset_peak(device)
    if device.type == "cuda":
        step()
        sync(device)
        peak_mem = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mem = cpu_peak_bytes(step) / 2**20
    step_times, peaks = [], []
    for _ in range(args.repeat):  # interleaved: load from other processes hits both
        peaks.append(matmul_flops / time_it(matmul, device, warmup=0, repeat=1))
        step_times.append(time_it(step, device, warmup=0, repeat=1))
    return {"step_s": statistics.median(step_times), "peak_flops": statistics.median(peaks),
            "peak_mem_mib": peak_mem}  # fmt: skip


def run_case(args, name: str, batch: int, device) -> dict:
    size = samtune.load_model(args.model).config.vision_config.image_size
    pix, boxes, targets = make_inputs(batch, args.prompts, size, device)
    dtype = DTYPES[args.precision]

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    counted = count_flops(args, name, device, pix, boxes, targets, autocast)
    timed = measure(args, name, device, pix, boxes, targets, autocast, dtype)
    flops, expected = counted["step_flops"], counted["expected_flops"]
    return {
        "strategy": name,
        "blocks": args.blocks if name in ("lora", "adapter") else "-",
        "batch": batch,
        "step_gflop": flops / 1e9,
        "expected_gflop": expected / 1e9,
        "counted/expected": flops / expected,
        "step/forward": flops / counted["forward_flops"],
        "step_s": timed["step_s"],
        "images/s": batch / timed["step_s"],
        "TFLOP/s": flops / timed["step_s"] / 1e12,
        "peak_TFLOP/s": timed["peak_flops"] / 1e12,
        "mfu": flops / timed["step_s"] / timed["peak_flops"],
        "peak_mem_mib": timed["peak_mem_mib"],
    }


COLUMNS = ["strategy", "blocks", "batch", "step_gflop", "counted/expected", "step/forward",
           "step_s", "images/s", "TFLOP/s", "peak_TFLOP/s", "mfu", "peak_mem_mib"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-b-random")
    ap.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=["full", "lora"])
    ap.add_argument("--blocks", default="all", help="lora/adapter blocks: all, last:K")
    ap.add_argument("--batch", nargs="+", type=int, default=[1])
    ap.add_argument("--prompts", type=int, default=4, help="box prompts per image")
    ap.add_argument("--precision", choices=list(DTYPES), default=None,
                    help="autocast dtype (default bf16 on CUDA, fp32 on CPU)")  # fmt: skip
    ap.add_argument("--attention", choices=ATTENTION_CHOICES, default="sdpa")
    ap.add_argument("--compile", choices=COMPILE_MODES, default="no")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (encoder)")
    ap.add_argument("--peak-n", type=int, default=None, help="peak matmul side (4096 / 2048)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    args.peak_n = args.peak_n or (8192 if device.type == "cuda" else 2048)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    rows = [run_case(args, s, b, device) for s in args.strategies for b in args.batch]
    payload = {
        "benchmark": "train_mfu",
        **device_info(device),
        "model": args.model,
        "precision": args.precision,
        "attention": args.attention,
        "compile": args.compile,
        "gradient_checkpointing": args.grad_ckpt,
        "prompts_per_image": args.prompts,
        "peak_matmul_n": args.peak_n,
        "results": rows,
    }
    emit(payload, COLUMNS, rows)


if __name__ == "__main__":
    main()
