"""Image-encoder throughput as a fraction of the machine's measured peak matmul FLOP/s.

Counts the encoder's FLOPs with ``torch.utils.flop_counter`` (matmuls and convolutions, as the
roofline counts them), times the forward pass, and divides by the FLOP/s a large square matmul
reaches on the same device in the same dtype, measured in the same run. Compares the
attention implementations (SDPA, eager, samtune's FlexAttention with the relative-position bias
fused in) with and without ``torch.compile``; ``max_abs_diff`` checks each variant's output
against the SDPA encoder's.

Usage::

    python bench/encoder_flops.py                         # ViT-B, 1024 px
    python bench/encoder_flops.py --model vit-h-random --batch 4
    python bench/encoder_flops.py --variants sdpa+compile flex+compile flex+autotune
"""

from __future__ import annotations

import argparse

import torch
from _common import device_info, emit, pick_device, time_it
from torch.utils.flop_counter import FlopCounterMode
from transformers import SamModel

import samtune


def peak_matmul(device, dtype, n: int, repeat: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_it(lambda: a @ b, device, warmup=3, repeat=repeat)
    return 2 * n**3 / t


def encoder_flops(encoder, pix) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(pix)
    return counter.get_total_flops()


VARIANTS = {
    # name: (attention, compile mode or None)
    "sdpa": ("sdpa", None),
    "eager-attention": ("eager", None),
    "sdpa+compile": ("sdpa", "default"),
    "flex+compile": ("flex", "default"),
    "flex-global+compile": ("flex-global", "default"),
    "flex+autotune": ("flex", "max-autotune-no-cudagraphs"),
}


def build_encoder(name: str, attention: str, device, dtype):
    from samtune.models.speedups import use_flex_attention

    model = samtune.load_model(name)
    if attention == "eager":  # the attention class is chosen at construction
        weights = model.state_dict()
        model = SamModel._from_config(model.config, attn_implementation="eager")
        model.load_state_dict(weights)
    elif attention.startswith("flex"):
        use_flex_attention(model, windowed=attention == "flex")
    return model.vision_encoder.to(device, dtype).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-b-random")
    ap.add_argument("--batch", type=int, default=None, help="default: 8 on GPU, 1 on CPU")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=None,
        help="default: sdpa and eager-attention; on CUDA also the compiled and flex variants",
    )
    ap.add_argument("--compile", action="store_true", help="add sdpa+compile (any device)")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (8 if gpu else 1)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if gpu else "fp32")
    ]
    repeat = args.repeat or (10 if gpu else 2)
    variants = args.variants or (
        ["sdpa", "eager-attention", "sdpa+compile", "flex+compile", "flex-global+compile"]
        if gpu
        else ["sdpa", "eager-attention"] + (["sdpa+compile"] if args.compile else [])
    )
    torch.backends.cuda.matmul.allow_tf32 = True

    peak = peak_matmul(device, dtype, 8192 if gpu else 2048, repeat)
    size = samtune.load_model(args.model).config.vision_config.image_size
    pix = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    # The work is the same for every variant: count it once, on the eager-attention encoder,
    # whose attention is plain matmuls (the counter has no formula for some fused SDPA kernels,
    # e.g. the CPU flash kernel, and would leave attention out).
    counted = build_encoder(args.model, "eager", device, dtype)
    flops = encoder_flops(counted, pix)
    del counted
    reference = build_encoder(args.model, "sdpa", device, dtype)
    with torch.inference_mode():
        expected = reference(pix).last_hidden_state.float()
    del reference
    rows = []
    for variant in variants:
        attention, mode = VARIANTS[variant]
        encoder = build_encoder(args.model, attention, device, dtype)
        fn = (
            encoder
            if mode is None
            else torch.compile(encoder, mode=None if mode == "default" else mode)
        )

        def forward(fn=fn):
            with torch.inference_mode():
                return fn(pix)

        try:
            got = forward().last_hidden_state.float()
            t = time_it(forward, device, warmup=2, repeat=repeat)
        except Exception as exc:  # report and go on: one variant failing is a result too
            rows.append({"variant": variant, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        rows.append(
            {
                "variant": variant,
                "batch": batch,
                "ms/image": 1000 * t / batch,
                "images/s": batch / t,
                "TFLOP/s": flops / t / 1e12,
                "fraction_of_peak": flops / t / peak,
                "max_abs_diff": float((got - expected).abs().max()),
            }
        )
        del encoder, fn
        if gpu:
            torch.cuda.empty_cache()
    payload = {
        "benchmark": "encoder_flops",
        **device_info(device),
        "model": args.model,
        "dtype": str(dtype),
        "encoder_gflop_per_image": round(flops / batch / 1e9, 1),
        "peak_matmul_tflops": round(peak / 1e12, 1),
        "results": rows,
    }
    emit(
        payload,
        ["variant", "batch", "ms/image", "images/s", "TFLOP/s", "fraction_of_peak", "max_abs_diff"],
        rows,
    )


if __name__ == "__main__":
    main()
