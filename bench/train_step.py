"""Training-step time and peak memory: samtune's step against a plain hand-written loop.

For each strategy and batch size, both sides train the *same* model (a fresh load with the
strategy applied, so the same parameters train) on the same random images, box prompts and
targets:

- ``plain``: what the public fine-tuning notebooks do: ``model(pixel_values=..., input_boxes=...)``
  every step (the image encoder runs every step, even when frozen), the loss written inline;
- ``samtune``: samtune's training step (:class:`samtune.train.step.SamTrainStep` and
  :func:`samtune.train.losses.sam_loss`). For strategies that freeze the encoder samtune's loop
  serves embeddings from its cache after the first epoch: that step is timed as ``cached``.

Usage::

    python bench/train_step.py                                  # ViT-B, 1024 px, batch 1 and 4
    python bench/train_step.py --model vit-h-random --strategies lora --batch 1 --grad-ckpt

Prints JSON, then a Markdown table. Ratios are measured in one run, on one device.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics

import torch
import torch.nn.functional as F
from _common import device_info, emit, peak_gib, pick_device, reset_peak, sync, time_it

import samtune
from samtune.models.speedups import (
    ATTENTION_CHOICES,
    COMPILE_MODES,
    compile_model,
    use_flex_attention,
)
from samtune.strategies import get_strategy
from samtune.train.loop import enable_checkpointing
from samtune.train.losses import sam_loss
from samtune.train.step import SamTrainStep


def make_inputs(batch: int, prompts: int, size: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pix = torch.randn(batch, 3, size, size, generator=g)
    xy = torch.rand(batch, prompts, 2, generator=g) * size * 0.6
    wh = torch.rand(batch, prompts, 2, generator=g) * size * 0.35 + 8
    boxes = torch.cat([xy, xy + wh], dim=-1)  # (B, P, 4) XYXY model pixels
    low = size // 4
    yy, xx = torch.meshgrid(torch.arange(low), torch.arange(low), indexing="ij")
    b = (boxes / 4).flatten(0, 1)
    targets = (
        (xx >= b[:, 0, None, None])
        & (xx < b[:, 2, None, None])
        & (yy >= b[:, 1, None, None])
        & (yy < b[:, 3, None, None])
    )
    return pix.to(device), boxes.to(device), targets.to(device)


def build(model_name: str, strategy: str, device, grad_ckpt: bool):
    model = samtune.load_model(model_name)
    strat = get_strategy(strategy)
    strat.apply(model)
    model.to(device).train()
    if grad_ckpt and not strat.freezes_image_encoder:
        enable_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]
    return model, strat, torch.optim.AdamW(params, lr=1e-5)


def plain_step(model, opt, pix, boxes, targets, autocast):
    """The notebook loop: full forward from pixels, inline focal + dice + IoU MSE."""
    with autocast():
        out = model(pixel_values=pix, input_boxes=boxes, multimask_output=False)
    logits = out.pred_masks[:, :, 0].flatten(0, 1).float()  # (M, r, r)
    t = targets.float()
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    focal = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2).mean((-1, -2))
    dice = 1 - (2 * (p * t).sum((-1, -2)) + 1) / (p.sum((-1, -2)) + t.sum((-1, -2)) + 1)
    hard = logits > 0
    iou = (hard & targets).sum((-1, -2)) / (hard | targets).sum((-1, -2)).clamp(min=1)
    iou_mse = (out.iou_scores[:, :, 0].flatten().float() - iou) ** 2
    loss = (20 * focal + dice + iou_mse).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def samtune_step(step_module, opt, inputs, targets, autocast, graphs=False):
    if graphs:
        torch.compiler.cudagraph_mark_step_begin()
    with autocast():
        (pred, iou_pred), *_ = step_module(**inputs)
    loss = sam_loss(pred, iou_pred, targets).total
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _prepare(args, strategy, device, side, pix, boxes, targets, autocast) -> dict:
    """Build one side's model and step function; warm it up and record its own peak memory.

    Memory already held by the other side (its weights, gradients, optimizer state) is
    subtracted, so both sides can stay on the device for the interleaved timing.
    """
    held_before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    model, strat, opt = build(args.model, strategy, device, args.grad_ckpt)
    batch, prompts = boxes.shape[:2]
    image_index = torch.arange(batch, device=device).repeat_interleave(prompts)
    flat_boxes = boxes.flatten(0, 1)
    if side == "plain":
        fns = {"plain_s": lambda: plain_step(model, opt, pix, boxes, targets, autocast)}
    else:
        if args.attention == "flex":
            use_flex_attention(model)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        compile_model(model, args.compile, cuda_graphs=True)
        graphs = args.compile in ("reduce-overhead", "max-autotune")
        step_module = SamTrainStep(model)
        inputs = {"image_index": image_index, "pixel_values": pix, "boxes": flat_boxes}
        fns = {
            "samtune_s": lambda: samtune_step(step_module, opt, inputs, targets, autocast, graphs)
        }
        if strat.freezes_image_encoder:
            # later epochs: the embedding cache serves the encoder's output
            with torch.no_grad(), autocast():
                emb = model.vision_encoder(pix).last_hidden_state.float()
            if args.channels_last:
                emb = emb.contiguous(memory_format=torch.channels_last)
            cached = {"image_index": image_index, "image_embeddings": emb, "boxes": flat_boxes}
            fns["cached_s"] = lambda: samtune_step(
                step_module, opt, cached, targets, autocast, graphs
            )
    reset_peak(device)
    first = next(iter(fns.values()))
    for _ in range(args.warmup):
        first()
    sync(device)
    peak = peak_gib(device)
    for fn in list(fns.values())[1:]:
        for _ in range(args.warmup):
            fn()
    held = held_before / 2**30
    return {"fns": fns, f"{side}_peak_gib": None if peak is None else round(peak - held, 3)}


def run_case(args, strategy: str, batch: int, device) -> dict:
    size = samtune.load_model(args.model).config.vision_config.image_size
    pix, boxes, targets = make_inputs(batch, args.prompts, size, device)
    amp = args.mixed_precision != "no"
    dtype = torch.bfloat16 if args.mixed_precision == "bf16" else torch.float16

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if amp else contextlib.nullcontext()

    row = {"strategy": strategy, "batch": batch, "prompts/img": args.prompts}
    fns = {}
    for side in ("plain", "samtune"):
        prepared = _prepare(args, strategy, device, side, pix, boxes, targets, autocast)
        fns.update(prepared.pop("fns"))
        row.update(prepared)
    # Interleave the sides step by step, so clock and thermal drift hit both alike.
    times: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(args.repeat):
        for key, fn in fns.items():
            times[key].append(time_it(fn, device, warmup=0, repeat=1))
    row.update({key: statistics.median(ts) for key, ts in times.items()})
    row["samtune/plain"] = row["samtune_s"] / row["plain_s"]
    if "cached_s" in row:
        row["plain/cached"] = row["plain_s"] / row["cached_s"]
    fns.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-b-random")
    ap.add_argument("--strategies", nargs="+", default=["full", "decoder", "lora", "adapter"])
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--prompts", type=int, default=4, help="box prompts per image")
    ap.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None)
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (encoder)")
    ap.add_argument(
        "--compile",
        choices=[*COMPILE_MODES, "reduce-overhead", "max-autotune"],
        default="no",
        help="torch.compile samtune's side (the CUDA-graph modes: this bench only, not fit)",
    )
    ap.add_argument("--attention", choices=ATTENTION_CHOICES, default="sdpa", help="samtune's side")
    ap.add_argument(
        "--channels-last", action="store_true", help="samtune's side in channels-last layout"
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device)
    if args.mixed_precision is None:
        args.mixed_precision = "bf16" if device.type == "cuda" else "no"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    rows = [run_case(args, s, b, device) for s in args.strategies for b in args.batch]
    payload = {
        "benchmark": "train_step",
        **device_info(device),
        "model": args.model,
        "mixed_precision": args.mixed_precision,
        "gradient_checkpointing": args.grad_ckpt,
        "samtune_compile": args.compile,
        "samtune_attention": args.attention,
        "samtune_channels_last": args.channels_last,
        "results": rows,
    }
    columns = [
        "strategy",
        "batch",
        "plain_s",
        "samtune_s",
        "samtune/plain",
        "cached_s",
        "plain/cached",
        "plain_peak_gib",
        "samtune_peak_gib",
    ]
    emit(payload, columns, rows)


if __name__ == "__main__":
    main()
