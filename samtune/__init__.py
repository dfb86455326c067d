"""samtune: fine-tune Meta's Segment Anything Model (SAM) on your own data.

The public API is re-exported here and imported lazily (PEP 562), so ``import samtune`` and
``samtune --help`` do not pay for torch and transformers until a name is used::

    import samtune

    model = samtune.load_model("demo")                      # or a hub id / Meta .pth / folder
    result = samtune.fit(model="demo", strategy="lora", dataset="demo")
    tuned = samtune.load_adapter("demo", result.adapter_dir)
    report = samtune.evaluate(tuned, samtune.load_dataset("demo", "test"), prompt="box")
"""

from __future__ import annotations

from . import errors as _errors
from ._lazy import lazy_getattr

__version__ = "0.1.0"

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # errors (a light module: no torch)
    **{name: "samtune.errors" for name in _errors.__all__},
    # models
    "PreprocessConfig": "samtune.models",
    "base_fingerprint": "samtune.models",
    "fingerprint": "samtune.models",
    "list_presets": "samtune.models",
    "load_model": "samtune.models",
    "preprocess_config": "samtune.models",
    "Family": "samtune.models.family",
    "family_of": "samtune.models.family",
    # strategies and adapters
    "Strategy": "samtune.strategies",
    "StrategyConfig": "samtune.strategies",
    "broken_strategies": "samtune.strategies",
    "get_strategy": "samtune.strategies",
    "list_strategies": "samtune.strategies",
    "export_adapter": "samtune.export.formats",
    "load_adapter": "samtune.adapters",
    "load_tuned": "samtune.adapters",
    "merge_adapter": "samtune.adapters",
    "read_adapter": "samtune.adapters",
    "save_adapter": "samtune.adapters",
    # data
    "Geometry": "samtune.data",
    "InstanceDataset": "samtune.data",
    "PromptedDataset": "samtune.data",
    "Sample": "samtune.data",
    "collate_prompted": "samtune.data",
    "list_datasets": "samtune.data",
    "load_dataset": "samtune.data",
    "preprocess_image": "samtune.data",
    # training
    "compile_model": "samtune.models.speedups",
    "use_flex_attention": "samtune.models.speedups",
    "FitConfig": "samtune.train.config",
    "FitResult": "samtune.train.loop",
    "fit": "samtune.train.loop",
    # evaluation and prediction
    "EvalConfig": "samtune.evaluation.config",
    "EvalReport": "samtune.evaluation.report",
    "evaluate": "samtune.evaluation.protocols",
    "format_comparison": "samtune.evaluation.report",
    "run_evaluation": "samtune.evaluation.runs",
    "predict": "samtune.segment.prompted",
    "Predictor": "samtune.segment.predictor",
    "AutoMaskConfig": "samtune.segment.automatic_config",
    "generate_masks": "samtune.segment.automatic",
    "segment_by_name": "samtune.segment.by_name",
    "run_suite": "samtune.suite.run",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


__getattr__ = lazy_getattr(globals(), _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
