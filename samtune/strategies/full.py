"""``full``: fine-tune every weight of SAM (optionally keeping the prompt encoder frozen)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Strategy, StrategyConfig


@dataclass
class FullConfig(StrategyConfig):
    freeze_prompt_encoder: bool = field(
        default=False,
        metadata={"help": "Keep the prompt encoder frozen (SAM's fine-tuning recipes often do)."},
    )


class FullStrategy(Strategy):
    """Every parameter trains: image encoder, prompt encoder, mask decoder.

    The one exception is the family's fixed tensors (:attr:`samtune.models.family.Family.fixed`): the
    random Fourier matrix of SAM's and SAM-HQ's positional encoding
    (``shared_image_embedding.positional_embedding``), a fixed buffer in Meta's code (and
    in transformers' SAM 2).
    """

    name = "full"
    description = "Fine-tune all weights (image encoder, prompt encoder, mask decoder)."
    config_class = FullConfig
    families = ("sam", "sam-hq", "sam2", "sam3-tracker", "edgetam", "sam3")

    def is_trainable(self, name: str) -> bool:
        if name in self.family.fixed:
            return False
        if self.config.freeze_prompt_encoder and self.family.is_prompt_encoder(name):
            return False
        return True
