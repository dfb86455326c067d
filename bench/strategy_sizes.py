"""Trainable parameters and adapter file size of every installed strategy (default config).

Usage: python bench/strategy_sizes.py [--model vit-b-random] [--extra lora:train_decoder=false]

Prints one JSON object, then a Markdown table (the one in docs/strategies.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings

import samtune
from samtune.adapters import save_adapter
from samtune.strategies import get_strategy, list_strategies


def _parse_extra(spec: str) -> tuple[str, dict]:
    name, _, opts = spec.partition(":")
    config = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        config[key] = json.loads(value)
    return name, config


def measure(base, name: str, config: dict) -> dict:
    """Apply ``name`` to a copy-free fresh load of the base and save its adapter."""
    model = samtune.load_model(base)
    total = sum(p.numel() for p in model.parameters())
    strategy = get_strategy(name, **config)
    strategy.apply(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with tempfile.TemporaryDirectory() as tmp:
        size = save_adapter(model, tmp).stat().st_size
    return {
        "strategy": name,
        "config": strategy.config.to_dict(),
        "trainable_parameters": trainable,
        "trainable_percent": round(100 * trainable / total, 3),
        "adapter_bytes": size,
        "adapter_mb": round(size / 1e6, 2),
        "freezes_image_encoder": strategy.freezes_image_encoder,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit-b-random")
    parser.add_argument(
        "--extra",
        action="append",
        default=["lora:train_decoder=false"],
        help="name:key=json,... extra configurations to measure",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    runs = [(name, {}) for name in list_strategies()] + [_parse_extra(e) for e in args.extra]
    rows = [measure(args.model, name, config) for name, config in runs]
    print(json.dumps({"model": args.model, "results": rows}, indent=2))
    print()
    print("| strategy | config | trainable parameters | % of SAM | adapter file |")
    print("|---|---|---:|---:|---:|")
    for (_, config), row in zip(runs, rows, strict=True):
        shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in config.items()) or "defaults"
        print(
            f"| `{row['strategy']}` | {shown} | {row['trainable_parameters']:,} | "
            f"{row['trainable_percent']:.2f} | {row['adapter_mb']:.2f} MB |"
        )


if __name__ == "__main__":
    main()
