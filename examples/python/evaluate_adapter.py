"""Evaluate a base model and an adapter on a dataset with one protocol; print both.

python examples/python/evaluate_adapter.py runs/example-fit/adapter --model demo --prompt point
"""

from __future__ import annotations

import argparse

import samtune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapter", help="adapter folder (holding adapter.safetensors) or hub id")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--split", default="test")
    ap.add_argument("--prompt", default="box", help="box, point or clicks:N")
    args = ap.parse_args()

    dataset = samtune.load_dataset(args.dataset, args.split)
    base = samtune.load_model(args.model)
    tuned = samtune.load_adapter(samtune.load_model(args.model), args.adapter)
    reports = {
        "zero-shot": samtune.evaluate(base, dataset, prompt=args.prompt, progress=False),
        "fine-tuned": samtune.evaluate(tuned, dataset, prompt=args.prompt, progress=False),
    }
    print(samtune.format_comparison(reports))


if __name__ == "__main__":
    main()
