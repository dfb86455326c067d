"""Models: SAM families, their identity, loading, presets and original-format conversion.

Layers inside (each imports only those above it):

- :mod:`.family` -- the SAM families samtune knows (``sam``, ``sam-hq``, ``sam2``) and what
  their modules are called;
- :mod:`.identity` -- a model's samtune record: preprocessing, fingerprints (architecture and
  weights), source;
- :mod:`.hub` -- the Hugging Face Hub (downloads with clear offline errors);
- :mod:`.sam_ops` -- every call into a SAM model (encode, decode, select), for every family;
- :mod:`.speedups` -- attention speed-ups and ``torch.compile``;
- :mod:`.convert` -- Meta's original checkpoints, one module per family behind one dispatch;
- :mod:`.presets` and :mod:`.demo` -- built-in models by name;
- :mod:`.loading` -- :func:`load_model` from a preset, hub id, folder or checkpoint file.

The names below are imported on first use (PEP 562), so importing a light submodule
(``samtune.models.family``) loads no torch.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "DEFAULT_HUB_MODEL": ".presets",
    "Family": ".family",
    "INFO_ATTR": ".identity",
    "PRESETS": ".presets",
    "PreprocessConfig": ".identity",
    "SAM_PIXEL_MEAN": ".identity",
    "SAM_PIXEL_STD": ".identity",
    "SamtuneInfo": ".identity",
    "architecture": ".identity",
    "base_fingerprint": ".identity",
    "describe": ".loading",
    "family_of": ".family",
    "fingerprint": ".identity",
    "list_presets": ".presets",
    "load_model": ".loading",
    "model_source": ".identity",
    "preprocess_config": ".identity",
    "sam_from_config": ".presets",
    "samtune_info": ".identity",
    "save_original_checkpoint": ".convert",
    "tiny_config": ".presets",
    "tiny_hq_config": ".presets",
    "tiny_sam2_config": ".presets",
    "vit_config": ".presets",
    "weights_fingerprint": ".identity",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(globals(), _EXPORTS)
