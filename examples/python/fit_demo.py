"""Fine-tune a SAM with a strategy from Python, then print the zero-shot vs fine-tuned table.

python examples/python/fit_demo.py                         # LoRA on the demo set, ~2 min CPU
python examples/python/fit_demo.py --strategy decoder --max-steps 50 --out runs/ex
python examples/python/fit_demo.py --set lr=1e-4 --set prompt=point
"""

from __future__ import annotations

import argparse

import yaml

import samtune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="preset, local folder, .pth or hub id")
    ap.add_argument("--strategy", default="lora", choices=sorted(samtune.list_strategies()))
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--out", default="runs/example-fit")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any FitConfig option"
    )
    args = ap.parse_args()

    options = {"quiet": True}
    for item in args.set:
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    if args.max_steps:
        options["max_steps"] = args.max_steps
    result = samtune.fit(
        model=args.model,
        strategy=args.strategy,
        dataset=args.dataset,
        output_dir=args.out,
        **options,
    )
    print(result.table)
    print(f"adapter: {result.adapter_dir}")


if __name__ == "__main__":
    main()
