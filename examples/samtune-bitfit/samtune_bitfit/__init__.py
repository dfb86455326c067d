"""BitFit for samtune: only biases (and optionally normalisation weights) train."""

from __future__ import annotations

from dataclasses import dataclass, field

from samtune.errors import ConfigError
from samtune.strategies import Strategy, StrategyConfig

__version__ = "0.1.0"

_PARTS = ("vision_encoder.", "prompt_encoder.", "mask_decoder.")


@dataclass
class BitFitConfig(StrategyConfig):
    norms: bool = field(default=True, metadata={"help": "Also train LayerNorm weights."})
    parts: list[str] = field(
        default_factory=lambda: ["vision_encoder", "mask_decoder"],
        metadata={"help": "Which parts of SAM: vision_encoder, prompt_encoder, mask_decoder."},
    )

    def validate(self) -> None:
        super().validate()  # the types, from the annotations
        if not self.parts:
            raise ConfigError("parts must be a non-empty list; found []")
        unknown = [p for p in self.parts if p + "." not in _PARTS]
        if unknown:
            raise ConfigError(
                f"parts {unknown} are not parts of SAM; choose from "
                f"{', '.join(p.rstrip('.') for p in _PARTS)}"
            )


class BitFitStrategy(Strategy):
    """Bias terms (and norm weights) of the chosen parts train; everything else is frozen."""

    name = "bitfit"
    description = "BitFit: train only biases (and norm weights) of the encoder and decoder."
    config_class = BitFitConfig

    @property
    def freezes_image_encoder(self) -> bool:
        return "vision_encoder" not in self.config.parts

    def is_trainable(self, name: str) -> bool:
        if not name.startswith(tuple(p + "." for p in self.config.parts)):
            return False
        if name.endswith(".bias"):
            return True
        return self.config.norms and "norm" in name.rsplit(".", 2)[-2]
