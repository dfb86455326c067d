"""Evaluation throughput: encode each image once (samtune.evaluate) vs re-encode per prompt.

Fabricates many-instance images, then times

- ``samtune.evaluation.protocols.evaluate(..., prompt="box")``: one ``get_image_embeddings`` per image,
  all boxes through the decoder in chunks of ``--prompt-batch``;
- the naive loop: ``model(pixel_values=..., input_boxes=<one box>)`` per instance, which runs
  the image encoder once per prompt.

Both produce the same masks (checked: equal mIoU). Prints JSON, then a markdown table.

    python bench/eval_throughput.py --model tiny --instances 32 --images 4
    python bench/eval_throughput.py --model vit-b-random --instances 50 --images 2 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def make_dataset(n_images: int, n_instances: int, size: int, seed: int = 0):
    from samtune.data.sample import Sample, masks_to_boxes

    class ListDataset(list):
        categories = {1: "object"}
        name = f"synthetic-{n_instances}-per-image"

    rng = np.random.default_rng(seed)
    out = ListDataset()
    for i in range(n_images):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        masks = np.zeros((n_instances, size, size), bool)
        for k in range(n_instances):
            y, x = rng.integers(0, size - size // 8, 2)
            h, w = rng.integers(size // 32 + 2, size // 8, 2)
            masks[k, y : y + h, x : x + w] = True
        out.append(
            Sample(
                image=img,
                masks=masks,
                boxes=masks_to_boxes(masks),
                category_ids=np.ones(n_instances, np.int64),
                iscrowd=np.zeros(n_instances, bool),
                instance_ids=np.arange(n_instances, dtype=np.int64) + i * n_instances,
                image_id=i,
                file_name=f"{i}.png",
            )
        )
    return out


def naive(model, dataset) -> tuple[float, float]:
    """Re-encode the image for every prompt; returns (seconds, mIoU)."""
    from samtune.data.transforms import preprocess_image
    from samtune.evaluation.metrics import mask_iou
    from samtune.models.identity import preprocess_config

    cfg = preprocess_config(model)
    p = next(model.parameters())
    ious = []
    _sync(p)
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in dataset:
            pv, geom = preprocess_image(s.image, cfg)
            pv = pv[None].to(p.device, p.dtype)
            boxes = geom.coords_to_model(torch.as_tensor(s.boxes))
            for k in range(len(boxes)):
                out = model(
                    pixel_values=pv,
                    input_boxes=boxes[None, k : k + 1].to(p.device, p.dtype),
                    multimask_output=False,
                )
                pred = geom.logits_to_original(out.pred_masks[0, :, 0].float()) > 0
                gt = torch.from_numpy(s.masks[k : k + 1]).to(pred.device)
                ious.append(float(mask_iou(pred, gt)[0]))
    _sync(p)
    return time.perf_counter() - t0, float(np.mean(ious))


def _sync(p):
    if p.device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--instances", type=int, default=32)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--prompt-batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from samtune.evaluation import evaluate
    from samtune.models.loading import load_model

    model = load_model(args.model, device=args.device)
    data = make_dataset(args.images, args.instances, args.size)
    evaluate(model, data[:1], "box", prompt_batch=args.prompt_batch)  # warm-up
    p = next(model.parameters())
    _sync(p)
    t0 = time.perf_counter()
    report = evaluate(model, data, "box", prompt_batch=args.prompt_batch, progress=False)
    _sync(p)
    t_once = time.perf_counter() - t0
    t_naive, miou_naive = naive(model, data)
    n_prompts = args.images * args.instances
    result = {
        "model": args.model,
        "device": str(p.device),
        "threads": torch.get_num_threads(),
        "images": args.images,
        "instances_per_image": args.instances,
        "image_size": args.size,
        "prompt_batch": args.prompt_batch,
        "encode_once_s": t_once,
        "reencode_per_prompt_s": t_naive,
        "encode_once_prompts_per_s": n_prompts / t_once,
        "reencode_prompts_per_s": n_prompts / t_naive,
        "speedup": t_naive / t_once,
        "miou_encode_once": report.metrics["miou"],
        "miou_reencode": miou_naive,
    }
    print(json.dumps(result, indent=2))
    print()
    print("| method | seconds | prompts/s | mIoU |")
    print("|---|---:|---:|---:|")
    print(
        f"| encode once, decoder batch {args.prompt_batch} | {t_once:.2f} | "
        f"{n_prompts / t_once:.1f} | {100 * report.metrics['miou']:.2f} |"
    )
    print(
        f"| re-encode per prompt | {t_naive:.2f} | {n_prompts / t_naive:.1f} | "
        f"{100 * miou_naive:.2f} |"
    )
    print(
        f"\n{args.model}, {args.images} images x {args.instances} instances, "
        f"{args.size} px, {result['device']}: speedup {result['speedup']:.1f}x"
    )
    return result


if __name__ == "__main__":
    main()
