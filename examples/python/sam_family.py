"""Tune SAM, SAM-HQ and SAM 2 with one strategy, then compare the adapters in one table.

python examples/python/sam_family.py                                    # tiny presets, CPU
python examples/python/sam_family.py --max-steps 2 --out runs/family    # a quick look
python examples/python/sam_family.py --models facebook/sam-vit-base,\
syscv-community/sam-hq-vit-base,facebook/sam2.1-hiera-small --dataset trashcan   # the real ones

The same strategy, cache, losses and evaluation run on every family; each adapter records its
family, and evaluation loads it onto the base it records.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import samtune
from samtune.evaluation import EvalConfig, run_evaluation
from samtune.evaluation.report import format_comparison


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,tiny-hq,tiny-sam2", help="comma-separated sources")
    ap.add_argument("--strategy", default="lora", choices=sorted(samtune.list_strategies()))
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--out", default="runs/example-family")
    args = ap.parse_args()

    adapters, families = [], []
    for source in args.models.split(","):
        model = samtune.load_model(source)
        family = model.samtune_info.family
        run = Path(args.out) / family
        samtune.fit(model=model, strategy=args.strategy, dataset=args.dataset, output_dir=run,
                    max_steps=args.max_steps, lr=1e-3, quiet=True, compare=False,
                    log_with=None)  # fmt: skip
        adapters.append(str(run / "adapter"))
        families.append(family)
        print(f"{family:7s} {source}: adapter in {run / 'adapter'}")

    config = EvalConfig(model=args.models.split(",")[0], adapter=adapters, compare=True,
                        dataset=args.dataset, quiet=True, plots=False)  # fmt: skip
    reports = run_evaluation(config)  # labels: base (zero-shot), then one per adapter folder
    first = f"{config.model} (zero-shot)"
    print(format_comparison(dict(zip([first, *families], reports.values(), strict=True))))


if __name__ == "__main__":
    main()
