"""``lora``: LoRA (optionally DoRA) through peft on SAM's image-encoder attention.

Defaults follow SAMed / MeLo-style SAM LoRA: rank 8 on the fused ``qkv`` projection of every
image-encoder block, ``alpha = rank`` (scale 1), no dropout, and the mask decoder trained
directly. Optional targets: the attention output ``proj``, the MLP (``lin1``/``lin2``; SAM 2's
Hiera: ``proj_in``/``proj_out``), and the mask decoder's attention ``q_proj``/``v_proj``
(which then stay LoRA while the rest of the decoder trains). Module names come from the
model's family (:attr:`samtune.models.family.Family.targets`), so the same options adapt the ViT of
SAM and SAM-HQ and the Hiera blocks of SAM 2. On SAM 3, ``qkv`` is the attention of both
encoders (the ViT's and the CLIP text encoder's ``q/k/v_proj``), ``proj`` their output
projections, ``mlp`` the ViT's, ``decoder_attention`` the DETR encoder's and decoder's
attention ``q_proj``/``v_proj``, and the decoder that trains is the DETR decoder, the mask
decoder and the scoring head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..models.family import SAM, Family
from ..options import check_range
from .base import (
    BLOCKS_EXPECTED,
    BLOCKS_HELP,
    StrategyConfig,
    check_blocks,
    encoder_blocks,
    select_blocks,
)
from .peft import PeftBasedStrategy


@dataclass
class LoraConfig(StrategyConfig):
    rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    alpha: float = field(
        default=8.0, metadata={"help": "LoRA alpha; the update is scaled by alpha/rank."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    proj: bool = field(
        default=False, metadata={"help": "Also adapt the encoder attention output proj."}
    )
    mlp: bool = field(default=False, metadata={"help": "Also adapt the encoder MLP (lin1, lin2)."})
    decoder_attention: bool = field(
        default=False, metadata={"help": "LoRA on the mask decoder's attention q_proj/v_proj."}
    )
    use_dora: bool = field(default=False, metadata={"help": "DoRA: weight-decomposed LoRA."})
    train_decoder: bool = field(
        default=True, metadata={"help": "Train the mask decoder's weights directly."}
    )
    blocks: str | list[int] = field(
        default="all", metadata={"help": BLOCKS_HELP, "expected": BLOCKS_EXPECTED}
    )

    def validate(self) -> None:
        super().validate()
        check_range("rank", self.rank, minimum=1, integer=True)
        check_range("alpha", self.alpha, minimum=0, strict=True)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1); found {self.dropout!r}")
        check_blocks(self.blocks)

    def target_regex(self, family: Family = SAM) -> str:
        """The peft ``target_modules`` regex over ``family``'s target map.

        A family whose image encoder has no attention (EdgeTAM) takes LoRA on the mask
        decoder's attention only, and only when ``decoder_attention`` asks for it; otherwise
        :meth:`Family.target` refuses with a :class:`ConfigError` that says so."""
        encoder_attention = "qkv" in family.targets or not self.decoder_attention
        chosen = ["qkv"] if encoder_attention else []
        chosen += [k for k in ("proj", "mlp", "decoder_attention") if getattr(self, k)]
        return "|".join(f"(?:{family.target(k)})" for k in chosen)


class LoraStrategy(PeftBasedStrategy):
    """LoRA on the image encoder's attention (peft), mask decoder trainable by default."""

    name = "lora"
    description = "LoRA/DoRA (peft) on the image encoder's qkv; mask decoder trains."
    config_class = LoraConfig
    families = ("sam", "sam-hq", "sam2", "sam3-tracker", "edgetam", "sam3")

    @property
    def freezes_image_encoder(self) -> bool:
        """True on a family whose encoder has no attention (EdgeTAM): LoRA then sits on the
        mask decoder only, so image embeddings can be cached."""
        family = getattr(self, "family", None)  # set by apply()
        return family is not None and "qkv" not in family.targets

    def peft_config(self, modules_to_save: list[str] | None = None, model=None):
        """The peft ``LoraConfig``; ``model`` resolves ``blocks`` (without it, every block)."""
        from peft import LoraConfig as PeftLoraConfig

        c = self.config
        return PeftLoraConfig(
            r=c.rank,
            lora_alpha=c.alpha,
            lora_dropout=c.dropout,
            target_modules=c.target_regex(self.family),
            use_dora=c.use_dora,
            bias="none",
            modules_to_save=modules_to_save,
            exclude_modules=None if model is None else frozen_blocks_regex(model, c.blocks),
        )


def frozen_blocks_regex(model, blocks) -> str | None:
    """A regex (peft's ``exclude_modules``) matching every module inside the image-encoder
    blocks that ``blocks`` leaves out; ``None`` when every block is adapted."""
    if blocks == "all":  # also for an encoder without blocks (EdgeTAM: LoRA on the decoder)
        return None
    all_blocks = encoder_blocks(model)
    chosen = set(select_blocks(blocks, len(all_blocks)))
    names = [re.escape(name) for i, (name, _) in enumerate(all_blocks) if i not in chosen]
    return f"(?:{'|'.join(names)})\\..+" if names else None
