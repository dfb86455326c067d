"""``peft``: any other peft method (IA3, LoHa, LoKr, BOFT...) on SAM, from a peft config.

Also home of :class:`PeftBasedStrategy`, the shared machinery of every strategy whose layers
peft injects (``lora`` included): injection without ``task_type`` (a task type swaps in a
forward that expects ``input_ids``) and without ``modules_to_save`` (a LoRA target inside a
``modules_to_save`` module is silently dropped), merging, and writing a peft directory that
plain ``peft.PeftModel.from_pretrained`` loads.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..io import dump_json, read_json_object
from ..models.family import SAM
from ..models.identity import model_source
from .base import Strategy, StrategyConfig, check_regex, clear_strategy

#: SAM's image-encoder fused query/key/value projections, every block (other families:
#: ``Family.targets["qkv"]``).
ENCODER_QKV = SAM.targets["qkv"]


def tuner_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, layer) for every outermost peft tuner layer in ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    found: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer) and not any(
            name.startswith(prefix + ".") for prefix, _ in found
        ):
            found.append((name, module))
    return found


def remove_tuner_layers(model: torch.nn.Module, *, merge: bool) -> torch.nn.Module:
    """Replace each peft layer by its base layer, first folding the update in when ``merge``."""
    for name, layer in tuner_layers(model):
        if merge:
            layer.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    return model


@contextlib.contextmanager
def _input_layer_named(model: torch.nn.Module) -> Iterator[None]:
    """While peft injects: a ``get_input_embeddings`` for a model whose transformers class has
    none (``EdgeTamModel``: its timm backbone's first convolution). peft asks every model for
    its input layer to find weights tied to it; SAM-family models tie none."""
    try:
        model.get_input_embeddings()
    except NotImplementedError:
        first = next(m for m in model.vision_encoder.modules() if isinstance(m, torch.nn.Conv2d))
        model.get_input_embeddings = lambda: first
        try:
            yield
        finally:
            del model.get_input_embeddings
        return
    yield


class PeftBasedStrategy(Strategy):
    """A strategy whose layers peft injects; subclasses build the peft config."""

    def peft_config(self, modules_to_save: list[str] | None = None, model=None):
        """The ``peft`` config this strategy injects (``modules_to_save`` only for export);
        ``model``, when given, is the model it is for (to resolve model-dependent options)."""
        raise NotImplementedError

    @property
    def train_decoder(self) -> bool:
        return bool(self.config.train_decoder)

    def _prefix(self) -> str:
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

        return PEFT_TYPE_TO_TUNER_MAPPING[self.peft_config().peft_type].prefix

    def is_adapter_param(self, name: str) -> bool:
        """Whether ``name`` is a tensor peft added (``...qkv.lora_A.default.weight``)."""
        prefix = self._prefix()
        return any(part.startswith(prefix) for part in name.split("."))

    def inject(self, model: torch.nn.Module) -> None:
        from peft import inject_adapter_in_model

        config = self.peft_config(model=model)  # its own ConfigErrors are clear already
        try:
            with _input_layer_named(model):
                inject_adapter_in_model(config, model)
        except ValueError as exc:
            raise ConfigError(
                f"peft cannot inject {self.name!r} with config {self.config.to_json()} into "
                f"{type(model).__name__}: {exc}"
            ) from None

    def is_trainable(self, name: str) -> bool:
        if self.is_adapter_param(name):
            return True
        # The decoder trains directly (requires_grad, no modules_to_save), except the frozen
        # base weights of decoder layers that carry their own peft layers.
        return self.train_decoder and self.family.is_decoder(name) and ".base_layer." not in name

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        return remove_tuner_layers(model, merge=True)

    def save_peft_directory(self, model: torch.nn.Module, directory: Path) -> Path:
        """Write what trained as a peft directory (``adapter_config.json`` +
        ``adapter_model.safetensors``) that ``PeftModel.from_pretrained(base, directory)``
        loads onto the untouched base. Trained decoder tensors travel as ``modules_to_save``
        of their own leaf modules, so no peft target sits inside one."""
        import warnings

        from peft import get_peft_model

        trained = self.trainable_state_dict(model)
        plain = remove_tuner_layers(copy.deepcopy(model), merge=False)
        clear_strategy(plain)
        plain.__dict__.pop("peft_config", None)  # the injected layers' config: not a 2nd adapter
        owners = sorted({n.rsplit(".", 1)[0] for n in trained if not self.is_adapter_param(n)})
        with warnings.catch_warnings():
            # peft reads transformers' deprecated is_gradient_checkpointing; nothing to act on
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            config = self.peft_config(modules_to_save=owners or None, model=plain)
            peft_model = get_peft_model(plain, config)
        state = {}
        for name, tensor in trained.items():
            if self.is_adapter_param(name):
                state[f"base_model.model.{name}"] = tensor
            else:
                owner, leaf = name.rsplit(".", 1)
                state[f"base_model.model.{owner}.modules_to_save.default.{leaf}"] = tensor
        result = peft_model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise RuntimeError(f"peft layout mismatch: {result.unexpected_keys[:3]}")
        peft_model.save_pretrained(str(directory))
        # peft takes the base's name from the model (empty for samtune's loads) and, given one,
        # would look it up on the hub while saving: record it afterwards instead.
        config_file = Path(directory) / "adapter_config.json"
        config = read_json_object(config_file, what="peft config")
        config["base_model_name_or_path"] = model_source(model)
        config_file.write_text(dump_json(config, indent=2, sort_keys=True) + "\n")
        return directory


_UNSAFE_OPTIONS = {
    "task_type": "a task type swaps in a forward that expects input_ids; SAM needs none",
    "modules_to_save": "a peft target inside a modules_to_save module is silently dropped; "
    "use train_decoder instead",
    "target_modules": "use the strategy's own target_modules option",
}


@dataclass
class PeftStrategyConfig(StrategyConfig):
    method: str = field(
        default="ia3",
        metadata={"help": "peft method name: ia3, loha, lokr, boft, lora, ... (peft.PeftType)."},
    )
    target_modules: str | list[str] | None = field(
        default=None,
        metadata={
            "help": "Regex matched against full module names (or a list of name suffixes). "
            "Default (null): the image encoder's qkv projections of the model's family."
        },
    )
    options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Keyword arguments for the peft config class (e.g. {'r': 8})."},
    )
    train_decoder: bool = field(
        default=True, metadata={"help": "Also train the mask decoder (directly, not via peft)."}
    )

    def validate(self) -> None:
        super().validate()
        if isinstance(self.target_modules, str):
            check_regex("target_modules", self.target_modules)
        for key, why in _UNSAFE_OPTIONS.items():
            if key in self.options:
                raise ConfigError(f"options may not set {key!r}: {why}")
        self.build()

    def build(self, modules_to_save: list[str] | None = None, default_targets: str = ENCODER_QKV):
        """The peft config object; any invalid value is a :class:`ConfigError`.

        ``default_targets`` stands for ``target_modules`` when that is null (the strategy
        passes its model family's qkv regex)."""
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

        methods = sorted(t.value.lower() for t in PEFT_TYPE_TO_TUNER_MAPPING)
        key = self.method.upper()
        if key not in PEFT_TYPE_TO_TUNER_MAPPING:
            raise ConfigError(
                f"method {self.method!r} is not a peft method samtune can inject; choose one of "
                f"{', '.join(methods)}"
            )
        options = dict(self.options)
        if key == "IA3":
            options.setdefault("feedforward_modules", [])
        try:
            config = PEFT_TYPE_TO_CONFIG_MAPPING[key](
                target_modules=self.target_modules or default_targets,
                modules_to_save=modules_to_save,
                **options,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid options for peft method {self.method!r}: {exc}") from None
        if config.is_prompt_learning or config.is_adaption_prompt:
            raise ConfigError(
                f"{self.method!r} is a prompt-learning method for language models; SAM needs a "
                "method that adapts layers (ia3, loha, lokr, lora, ...)"
            )
        return config


class PeftStrategy(PeftBasedStrategy):
    """Any peft method that injects layers, configured by name and options.

    Tested on SAM: ``ia3``, ``loha``, ``lokr``, ``lora``. Methods that keep shared state on
    the tuner (``vera``, ``randlora``...) cannot be injected and are refused with peft's reason.
    """

    name = "peft"
    description = "Any peft method (IA3, LoHa, LoKr, ...) on the image encoder; decoder trains."
    config_class = PeftStrategyConfig
    families = ("sam", "sam-hq", "sam2", "sam3-tracker", "edgetam", "sam3")

    def peft_config(self, modules_to_save: list[str] | None = None, model=None):
        # the family's qkv stands for a null target_modules (EdgeTAM has none: refused there)
        default = None if self.config.target_modules else self.family.target("qkv")
        return self.config.build(modules_to_save, default)
