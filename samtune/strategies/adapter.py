"""``adapter``: bottleneck adapters in every image-encoder block (SAM-Adapter, Medical SAM
Adapter, AdaptFormer).

Each adapter is ``x -> scale * up(act(down(x)))`` with ``up`` zero-initialised, so the tuned
model starts exactly at the base model. In each block, one adapter runs in parallel with the
MLP (AdaptFormer) and, optionally, one after the attention (Medical SAM Adapter's serial
adapter). Adapters are attached as submodules ``adapter_mlp`` / ``adapter_attn`` of each
image-encoder block (``vision_encoder.layers.<i>``; SAM 2's Hiera:
``vision_encoder.backbone.blocks.<i>``; SAM 3's ViT: ``vision_encoder.backbone.layers.<i>``,
the family's ``targets["blocks"]``; EdgeTAM's convolutional RepViT has none) and run through
forward hooks, so every base weight keeps its name. Each adapter is as wide as its block's
output (Hiera's stages widen). Their nonlinearity means they cannot be merged into plain
weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..options import check_range
from .base import (
    BLOCKS_EXPECTED,
    BLOCKS_HELP,
    Strategy,
    StrategyConfig,
    check_blocks,
    encoder_blocks,
    select_blocks,
)

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class Bottleneck(nn.Module):
    """``scale * up(act(down(x)))`` on the last dimension; ``up`` starts at zero."""

    def __init__(self, dim: int, bottleneck: int, activation: str, scale: float):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = _ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim)
        self.scale = scale
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.act(self.down(x)))

    def after_attention(self, module, inputs, output):
        """Forward hook on ``attn``: serial adapter on its output (tuple or tensor)."""
        if isinstance(output, tuple):
            return (output[0] + self(output[0]), *output[1:])
        return output + self(output)

    def beside_mlp(self, module, inputs, output):
        """Forward hook on ``mlp``: parallel adapter on the MLP's input, added to its output."""
        return output + self(inputs[0])


@dataclass
class AdapterConfig(StrategyConfig):
    bottleneck: int = field(default=64, metadata={"help": "Bottleneck width (AdaptFormer: 64)."})
    scale: float = field(default=0.1, metadata={"help": "Output scale s (AdaptFormer: 0.1)."})
    activation: str = field(default="gelu", metadata={"help": "gelu, relu or silu."})
    mlp_adapter: bool = field(
        default=True, metadata={"help": "Adapter parallel to each block's MLP."}
    )
    attn_adapter: bool = field(
        default=True, metadata={"help": "Adapter after each block's attention (serial)."}
    )
    train_decoder: bool = field(default=True, metadata={"help": "Train the mask decoder too."})
    blocks: str | list[int] = field(
        default="all", metadata={"help": BLOCKS_HELP, "expected": BLOCKS_EXPECTED}
    )

    def validate(self) -> None:
        super().validate()
        check_range("bottleneck", self.bottleneck, minimum=1, integer=True)
        check_range("scale", self.scale, minimum=0, strict=True)
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {', '.join(_ACTIVATIONS)}; found {self.activation!r}"
            )
        check_blocks(self.blocks)
        if not (self.mlp_adapter or self.attn_adapter):
            raise ConfigError(
                "mlp_adapter and attn_adapter are both false, so no adapter would be inserted; "
                "enable at least one (or use the 'decoder' strategy)"
            )


class AdapterStrategy(Strategy):
    """Bottleneck adapters in each image-encoder block; mask decoder trainable by default."""

    name = "adapter"
    description = "Bottleneck adapters (zero-init, scaled) in each encoder block; decoder trains."
    config_class = AdapterConfig
    families = ("sam", "sam-hq", "sam2", "sam3-tracker", "edgetam", "sam3")

    def inject(self, model: torch.nn.Module) -> None:
        c = self.config
        ref = next(model.vision_encoder.parameters())
        blocks = encoder_blocks(model)
        for index in select_blocks(c.blocks, len(blocks)):
            layer = blocks[index][1]
            # the block's width after attention: the MLP's input (Hiera widens per stage)
            dim = next(m for m in layer.mlp.modules() if isinstance(m, nn.Linear)).in_features
            if c.mlp_adapter:
                layer.adapter_mlp = Bottleneck(dim, c.bottleneck, c.activation, c.scale).to(ref)
                layer.mlp.register_forward_hook(layer.adapter_mlp.beside_mlp)
            if c.attn_adapter:
                layer.adapter_attn = Bottleneck(dim, c.bottleneck, c.activation, c.scale).to(ref)
                attention = getattr(layer, self.family.block_attention)  # SAM 3: attention
                attention.register_forward_hook(layer.adapter_attn.after_attention)

    def is_trainable(self, name: str) -> bool:
        if ".adapter_mlp." in name or ".adapter_attn." in name:
            return True
        return self.config.train_decoder and self.family.is_decoder(name)

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        raise InputError(
            "bottleneck adapters cannot be merged into plain SAM weights: each adapter has a "
            "nonlinearity between its two projections. Keep the adapter file and load it with "
            "samtune.load_adapter(base, dir), or train with the 'lora' strategy to get a "
            "mergeable adapter"
        )
