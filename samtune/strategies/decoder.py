"""``decoder``: train only SAM's mask decoder (optionally the prompt encoder); encoder frozen."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Strategy, StrategyConfig


@dataclass
class DecoderConfig(StrategyConfig):
    train_prompt_encoder: bool = field(
        default=False, metadata={"help": "Also train the prompt encoder's embeddings."}
    )


class DecoderStrategy(Strategy):
    """Only ``mask_decoder.*`` trains (plus ``prompt_encoder.*`` when asked).

    The image encoder stays frozen, so image embeddings are computed once and cached: the
    cheapest way to adapt SAM (as in MedSAM's decoder-only baseline). ``mask_decoder`` holds
    SAM-HQ's HQ token, HQ MLP and feature-fusion layers and SAM 2's object-score head and
    high-resolution projections (``conv_s0``/``conv_s1``), so they train with it.
    """

    name = "decoder"
    description = "Train the mask decoder only (optionally the prompt encoder); encoder frozen."
    config_class = DecoderConfig
    families = ("sam", "sam-hq", "sam2", "sam3-tracker", "edgetam")

    @property
    def freezes_image_encoder(self) -> bool:
        return True

    def is_trainable(self, name: str) -> bool:
        if name.startswith("mask_decoder."):
            return True
        return self.config.train_prompt_encoder and name.startswith("prompt_encoder.")
