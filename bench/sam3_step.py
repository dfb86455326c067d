"""Cost of one SAM 3 training step by name (``prompt: text``), with and without gradient
checkpointing.

One step is what ``samtune fit --prompt text`` runs per batch: :class:`Sam3TextStep` on
``B`` images x ``C`` phrases (rows), :func:`text_step_loss` (matching and every loss term,
the earlier decoder layers' too), backward and an AdamW step, with a strategy applied (LoRA by
default: ``q/k/v_proj`` of the ViT and the CLIP text encoder, the decoders training directly).
For each setting (checkpointing off, on) the script reports

- the FLOPs of one whole step, counted with ``torch.utils.flop_counter.FlopCounterMode`` on an
  eager-attention copy of the model (the counter has no formula for the CPU SDPA kernel);
  with checkpointing the count includes the recomputed ViT and CLIP layers;
- the step time (median of ``--repeat``) of the model as configured (SDPA attention) and,
  interleaved with it, a square matmul in the same dtype: the machine's peak matmul rate
  (``bench/train_mfu.py``'s method);
- MFU = model FLOPs (the step without recomputation) / step time / peak, and HFU = the
  counted FLOPs (recomputation included) / step time / peak;
- peak memory: CUDA ``max_memory_allocated``, on a CPU the high-water mark of the allocations
  the profiler records during one step (``bench/train_mfu.py:cpu_peak_bytes``);
- the largest difference between the gradients of the trained weights with and without
  checkpointing (same weights, same batch, same dropout draws), absolute and relative to the
  largest gradient.

``--model reduced`` (default) is facebook/sam3's architecture made smaller by the options
(``--image-size``, ``--vit-width``, ``--vit-depth``, ...; random weights, a random-id
tokenizer); any other name goes to ``samtune.load_model`` (``facebook/sam3`` on a GPU,
``tiny-sam3``).

Usage::

    OMP_NUM_THREADS=1 python bench/sam3_step.py                      # reduced, CPU, fp32
    python bench/sam3_step.py --model facebook/sam3 --batch 2 --phrases 4   # on a GPU (bf16)

Prints JSON, then a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch
from _common import device_info, emit, pick_device, reset_peak, sync, time_it
from torch.utils.flop_counter import FlopCounterMode
from train_mfu import DTYPES, cpu_peak_bytes, peak_matmul_fn

import samtune
from samtune.strategies import get_strategy
from samtune.train.recompute import enable_checkpointing
from samtune.train.sam3_step import Sam3TextStep, load_tokenizer, mask_side, text_step_loss


def reduced_config(args):
    """facebook/sam3's ``Sam3Config`` with the sizes the options give (the rest as the real one:
    patch 14, 4-level FPN, 32 text positions, DETR heads and widths of 256)."""
    from transformers import Sam3Config

    grid = args.image_size // 14
    depth = args.vit_depth
    real = Sam3Config()
    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model",
                hidden_size=args.vit_width,
                intermediate_size=args.vit_width * 4736 // 1024,
                num_hidden_layers=depth,
                num_attention_heads=max(args.vit_width // 64, 1),
                image_size=args.image_size,
                patch_size=14,
                window_size=max(grid // 2, 1),
                global_attn_indexes=list(range(depth // 4 - 1, depth, max(depth // 4, 1)))
                or [depth - 1],
                pretrain_image_size=args.image_size,
            ),
            fpn_hidden_size=256,
            backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        ),
        text_config=dict(
            real.text_config.to_dict(),
            hidden_size=args.text_width,
            intermediate_size=4 * args.text_width,
            num_hidden_layers=args.text_depth,
            num_attention_heads=max(args.text_width // 64, 1),
        ),
        detr_encoder_config=dict(num_layers=args.detr_layers),
        detr_decoder_config=dict(num_layers=args.detr_layers, num_queries=args.queries),
        geometry_encoder_config=dict(num_layers=1),
    )


def random_tokenize(vocab: int):
    """Phrases as random token ids (seeded by the phrase), padded to 32 as Sam3Processor."""

    def tokenize(phrases):
        ids = torch.full((len(phrases), 32), vocab - 1, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, phrase in enumerate(phrases):
            g = torch.Generator().manual_seed(sum(map(ord, phrase)))
            words = torch.randint(1, vocab - 2, (len(phrase.split()),), generator=g)
            tokens = torch.cat([torch.tensor([vocab - 2]), words, torch.tensor([vocab - 1])])
            ids[row, : len(tokens)], mask[row, : len(tokens)] = tokens, 1
        return ids, mask

    return tokenize


def load(args, attention: str):
    """The model (seeded) with ``attention`` and its tokenizer."""
    from transformers import Sam3Model

    if args.model != "reduced":
        model = samtune.load_model(args.model)
        if attention == "eager":
            weights = model.state_dict()
            eager = Sam3Model._from_config(model.config, attn_implementation="eager")
            eager.load_state_dict(weights)
            return eager, load_tokenizer(model)
        return model, load_tokenizer(model)
    config = reduced_config(args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = Sam3Model._from_config(config, attn_implementation=attention)
    return model, random_tokenize(config.text_config.vocab_size)


def build(args, device, attention: str):
    """``(step module, trained parameters)`` with the strategy applied (seeded), no
    checkpointing yet (:func:`setting` switches it on)."""
    model, tokenize = load(args, attention)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        get_strategy(args.strategy).apply(model)
    model.to(device).train()
    phrases = [f"object {c}" for c in range(args.phrases)]
    step = Sam3TextStep(model, phrases, tokenize).to(device)
    return step, [p for p in model.parameters() if p.requires_grad]


def setting(step, params, start: list[torch.Tensor], ckpt: bool) -> torch.optim.Optimizer:
    """Put the trained weights back to ``start``, switch checkpointing on when ``ckpt`` (it
    stays on: the settings run off, then on), and return a fresh AdamW over them."""
    with torch.no_grad():
        for param, value in zip(params, start, strict=True):
            param.copy_(value)
    if ckpt:
        enable_checkpointing(step.sam)
    return torch.optim.AdamW(params, lr=1e-5)


def make_batch(args, step, device) -> tuple[torch.Tensor, list[dict]]:
    """Random images and targets: per image, the first half of the phrases present with
    ``--instances`` random boxes each (masks: the boxes, at the predicted mask size)."""
    g = torch.Generator().manual_seed(args.seed)
    config = step.sam.config
    size = config.vision_config.backbone_config.image_size
    side = mask_side(step.sam)
    pixels = torch.rand(args.batch, 3, size, size, generator=g) * 2 - 1
    targets = []
    for _ in range(args.batch):
        for c in range(args.phrases):
            n = args.instances if c < (args.phrases + 1) // 2 else 0
            corner = torch.rand(n, 2, generator=g) * 0.6
            extent = 0.1 + torch.rand(n, 2, generator=g) * 0.3
            boxes = torch.cat([corner, corner + extent], 1)
            masks = torch.zeros(n, side, side, dtype=torch.bool)
            for i, (x1, y1, x2, y2) in enumerate((boxes * side).long().tolist()):
                masks[i, y1:y2, x1:x2] = True
            targets.append({"boxes": boxes.to(device), "masks": masks.to(device)})
    return pixels.to(device), targets


def train_step(step, opt, pixels, targets, autocast) -> None:
    torch.manual_seed(0)  # the same dropout draws in every variant
    with autocast():
        outputs = step(pixels)
    loss = text_step_loss(outputs, targets, None)[0]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def gradients(step, opt, params, pixels, targets, autocast) -> list[torch.Tensor]:
    """The trained weights' gradients of one step (before the optimizer moves them)."""
    torch.manual_seed(0)
    with autocast():
        outputs = step(pixels)
    opt.zero_grad(set_to_none=True)
    text_step_loss(outputs, targets, None)[0].backward()
    return [p.grad.detach().clone() if p.grad is not None else None for p in params]


def count_flops(args, device, autocast) -> list[float]:
    """FLOPs of one whole step on the eager-attention model, without and with checkpointing."""
    step, params = build(args, device, "eager")
    start = [p.detach().clone() for p in params]
    pixels, targets = make_batch(args, step, device)
    counts = []
    for ckpt in (False, True):
        opt = setting(step, params, start, ckpt)
        with FlopCounterMode(display=False) as counter:
            train_step(step, opt, pixels, targets, autocast)
        counts.append(counter.get_total_flops())
    return counts


def measure(args, device, autocast, dtype) -> list[dict]:
    """Per setting (checkpointing off, on): step time, peak matmul rate and peak memory of the
    SDPA model, and the gradients of its first step (which warms up too)."""
    step, params = build(args, device, "sdpa")
    start = [p.detach().clone() for p in params]
    pixels, targets = make_batch(args, step, device)
    matmul, matmul_flops = peak_matmul_fn(device, dtype, args.peak_n)
    found = []
    for ckpt in (False, True):
        opt = setting(step, params, start, ckpt)
        run = lambda opt=opt: train_step(step, opt, pixels, targets, autocast)  # noqa: E731
        grads = gradients(step, opt, params, pixels, targets, autocast)  # first step: warm-up
        opt.step()
        matmul()
        for _ in range(args.warmup):
            run()
            matmul()
        reset_peak(device)
        if device.type == "cuda":
            run()
            sync(device)
            peak_mem = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            peak_mem = cpu_peak_bytes(run) / 2**20
        times, peaks = [], []
        for _ in range(args.repeat):  # interleaved: load from other processes hits both
            peaks.append(matmul_flops / time_it(matmul, device, warmup=0, repeat=1))
            times.append(time_it(run, device, warmup=0, repeat=1))
        found.append({"step_s": statistics.median(times), "peak_flops": statistics.median(peaks),
                      "peak_mem_mib": peak_mem, "grads": grads})  # fmt: skip
    return found


def gradient_difference(found: list[list[torch.Tensor | None]]) -> dict:
    """Largest |grad with checkpointing - grad without|, absolute and over the largest |grad|."""
    pairs = [(a, b) for a, b in zip(*found, strict=True) if a is not None or b is not None]
    if any(a is None or b is None for a, b in pairs):
        raise SystemExit("error: a weight got a gradient in one setting only")
    diff = max((a.float() - b.float()).abs().max().item() for a, b in pairs)
    scale = max(a.float().abs().max().item() for a, _ in pairs)
    return {"grad_max_abs_diff": diff, "grad_max_rel_diff": diff / scale, "trained": len(pairs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="reduced", help="reduced, or a samtune.load_model name")
    ap.add_argument("--strategy", default="lora")
    ap.add_argument("--image-size", type=int, default=224, help="reduced: input side (px)")
    ap.add_argument("--vit-width", type=int, default=256, help="reduced: ViT width (1024)")
    ap.add_argument("--vit-depth", type=int, default=4, help="reduced: ViT layers (32)")
    ap.add_argument("--text-width", type=int, default=256, help="reduced: CLIP width (1024)")
    ap.add_argument("--text-depth", type=int, default=4, help="reduced: CLIP layers (24)")
    ap.add_argument("--detr-layers", type=int, default=3, help="reduced: DETR enc/dec (6/6)")
    ap.add_argument("--queries", type=int, default=200, help="reduced: DETR queries (200)")
    ap.add_argument("--batch", type=int, default=1, help="images per step")
    ap.add_argument("--phrases", type=int, default=4, help="phrases per image (rows/image)")
    ap.add_argument("--instances", type=int, default=3, help="instances per present phrase")
    ap.add_argument("--precision", choices=list(DTYPES), default=None,
                    help="autocast dtype (default bf16 on CUDA, fp32 on CPU)")  # fmt: skip
    ap.add_argument("--peak-n", type=int, default=None, help="peak matmul side")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps after the first")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    args.peak_n = args.peak_n or (8192 if device.type == "cuda" else 2048)
    dtype = DTYPES[args.precision]

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    counts = count_flops(args, device, autocast)
    measured = measure(args, device, autocast, dtype)
    model_flops, rows = counts[0], []
    for ckpt, flops, timed in zip((False, True), counts, measured, strict=True):
        rate = timed["step_s"] * timed["peak_flops"]
        rows.append({
            "grad_ckpt": ckpt,
            "rows": args.batch * args.phrases,
            "step_gflop": flops / 1e9,
            "step_s": timed["step_s"],
            "TFLOP/s": flops / timed["step_s"] / 1e12,
            "peak_TFLOP/s": timed["peak_flops"] / 1e12,
            "mfu": model_flops / rate,
            "hfu": flops / rate,
            "peak_mem_mib": timed["peak_mem_mib"],
        })  # fmt: skip
    rows[1].update(gradient_difference([timed["grads"] for timed in measured]))
    sizes = {k: getattr(args, k) for k in ("image_size", "vit_width", "vit_depth", "text_width",
                                           "text_depth", "detr_layers", "queries")}  # fmt: skip
    payload = {
        "benchmark": "sam3_step",
        **device_info(device),
        "model": args.model,
        **(sizes if args.model == "reduced" else {}),
        "strategy": args.strategy,
        "precision": args.precision,
        "images": args.batch,
        "phrases": args.phrases,
        "peak_matmul_n": args.peak_n,
        "results": rows,
    }
    columns = ["grad_ckpt", "rows", "step_gflop", "step_s", "TFLOP/s", "peak_TFLOP/s", "mfu",
               "hfu", "peak_mem_mib", "grad_max_abs_diff", "grad_max_rel_diff"]  # fmt: skip
    emit(payload, columns, rows)


if __name__ == "__main__":
    main()
