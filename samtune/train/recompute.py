"""Gradient (activation) checkpointing for every SAM family, including those transformers
does not switch on.

``SamModel`` and ``SamHQModel`` declare ``supports_gradient_checkpointing``, and
``activation_checkpointing_enable`` does the work. ``Sam2Model``, ``Sam3Model``,
``Sam3TrackerModel`` and ``EdgeTamModel`` (transformers 5.25) do not, and that method refuses
them, although their repeated blocks (Hiera's ``Sam2MultiScaleBlock``, SAM 3's ``Sam3ViTLayer``
and CLIP's ``CLIPEncoderLayer``, the two-way attention blocks) are transformers'
``GradientCheckpointingLayer``: such a block recomputes its forward in backward once its
``gradient_checkpointing`` flag is set and its ``_gradient_checkpointing_func`` given.
:func:`enable_checkpointing` sets them, and calls ``set_grad_checkpointing`` on a timm backbone
(EdgeTAM's RepViT). Recomputing changes memory, not results: gradients are equal with and
without it (``tests/test_sam3_training.py`` checks 1e-6 on tiny SAM 2 and SAM 3 models).
"""

from __future__ import annotations

import functools
import inspect

from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError


def checkpoint_layers(model: nn.Module) -> int:
    """Switch on recomputation in every ``GradientCheckpointingLayer`` of ``model`` and every
    timm backbone in it (non-reentrant ``torch.utils.checkpoint``); return how many blocks."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    recompute = functools.partial(checkpoint, use_reentrant=False)
    count = 0
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.gradient_checkpointing = True
            module._gradient_checkpointing_func = recompute
            count += 1
        elif callable(getattr(module, "set_grad_checkpointing", None)):
            module.set_grad_checkpointing(True)  # timm
            count += 1
    return count


def enable_checkpointing(model: nn.Module) -> None:
    """Recompute the model's activations in backward (non-reentrant checkpointing).

    A class that declares ``supports_gradient_checkpointing`` (SAM, SAM-HQ) goes through
    transformers (5.24 renamed ``gradient_checkpointing_enable`` to
    ``activation_checkpointing_enable``; older 5.x releases only have the first); the others
    through :func:`checkpoint_layers`.

    Raises:
        ConfigError: the model has no block that can be recomputed.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        if checkpoint_layers(model) == 0:
            raise ConfigError(
                f"gradient_checkpointing: {type(model).__name__} has no block samtune can "
                "recompute; turn gradient_checkpointing off"
            )
        return
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is None:
        enable = model.gradient_checkpointing_enable
        kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
    else:
        params = inspect.signature(enable).parameters
        key = next((k for k in params if k.endswith("checkpointing_kwargs")), None)
        kwargs = {key: {"use_reentrant": False}} if key else {}
    enable(**kwargs)


__all__ = ["checkpoint_layers", "enable_checkpointing"]
