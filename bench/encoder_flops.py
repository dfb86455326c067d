"""Image-encoder throughput as a fraction of the machine's measured peak matmul FLOP/s.

Counts the encoder's FLOPs with ``torch.utils.flop_counter`` (matmuls and convolutions, as the
roofline counts them), times the forward pass, and divides by the FLOP/s a large square matmul
reaches on the same device in the same dtype, measured in the same run. Also compares the
attention implementations (SDPA vs eager) and, optionally, ``torch.compile``.

Usage::

    python bench/encoder_flops.py                         # ViT-B, 1024 px
    python bench/encoder_flops.py --model vit-h-random --batch 4 --compile
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-b-random")
    ap.add_argument("--batch", type=int, default=None, help="default: 8 on GPU, 1 on CPU")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(encoder)")
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
    torch.backends.cuda.matmul.allow_tf32 = True

    peak = peak_matmul(device, dtype, 8192 if gpu else 2048, repeat)
    rows = []
    for impl in ("sdpa", "eager"):
        model = samtune.load_model(args.model)
        if impl != "sdpa":  # the attention class is chosen at construction
            weights = model.state_dict()
            model = SamModel._from_config(model.config, attn_implementation=impl)
            model.load_state_dict(weights)
        assert impl in type(model.vision_encoder.layers[0].attn).__name__.lower() or impl == "eager"
        encoder = model.vision_encoder.to(device, dtype).eval()
        size = model.config.vision_config.image_size
        pix = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        flops = encoder_flops(encoder, pix)
        variants = [("eager-mode", encoder)]
        if args.compile and impl == "sdpa":
            variants.append(("compiled", torch.compile(encoder)))
        for label, fn in variants:

            def forward(fn=fn, pix=pix):
                with torch.inference_mode():
                    return fn(pix)

            t = time_it(forward, device, warmup=3, repeat=repeat)
            rows.append(
                {
                    "attention": impl,
                    "mode": label,
                    "batch": batch,
                    "ms/image": 1000 * t / batch,
                    "images/s": batch / t,
                    "TFLOP/s": flops / t / 1e12,
                    "fraction_of_peak": flops / t / peak,
                }
            )
        del model, encoder
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
        ["attention", "mode", "batch", "ms/image", "images/s", "TFLOP/s", "fraction_of_peak"],
        rows,
    )


if __name__ == "__main__":
    main()
