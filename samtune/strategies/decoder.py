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

    SAM 3: the DETR decoder, the mask decoder and the class scoring head (the family's
    ``decoder_modules``); the vision, text, geometry and DETR encoders stay frozen, and
    ``train_prompt_encoder`` adds the geometry encoder and the text projection.

    The image encoder stays frozen, so image embeddings are computed once and cached: the
    cheapest way to adapt SAM (as in MedSAM's decoder-only baseline). ``mask_decoder`` holds
    SAM-HQ's HQ token, HQ MLP and feature-fusion layers and SAM 2's object-score head and
    high-resolution projections (``conv_s0``/``conv_s1``), so they train with it.
    """

    name = "decoder"
    description = "Train the mask decoder only (optionally the prompt encoder); encoder frozen."
    config_class = DecoderConfig
    families = ("sam", "sam-hq", "sam2", "sam3-tracker", "edgetam", "sam3")

    @property
    def freezes_image_encoder(self) -> bool:
        return True

    def is_trainable(self, name: str) -> bool:
        if self.family.is_decoder(name):
            return True
        return self.config.train_prompt_encoder and self.family.is_prompt_encoder(name)
