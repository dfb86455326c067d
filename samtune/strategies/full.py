"""``full``: fine-tune every weight of SAM (optionally keeping the prompt encoder frozen)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import POSITIONAL_MATRIX, Strategy, StrategyConfig, check_type


@dataclass
class FullConfig(StrategyConfig):
    freeze_prompt_encoder: bool = field(
        default=False,
        metadata={"help": "Keep the prompt encoder frozen (SAM's fine-tuning recipes often do)."},
    )

    def __post_init__(self) -> None:
        check_type("freeze_prompt_encoder", self.freeze_prompt_encoder, bool, "true or false")


class FullStrategy(Strategy):
    """Every parameter trains: image encoder, prompt encoder, mask decoder.

    The one exception is the random Fourier matrix of SAM's positional encoding
    (``shared_image_embedding.positional_embedding``), a fixed buffer in Meta's SAM.
    """

    name = "full"
    description = "Fine-tune all weights (image encoder, prompt encoder, mask decoder)."
    config_class = FullConfig

    def is_trainable(self, name: str) -> bool:
        if name == POSITIONAL_MATRIX:
            return False
        if self.config.freeze_prompt_encoder and name.startswith("prompt_encoder."):
            return False
        return True
