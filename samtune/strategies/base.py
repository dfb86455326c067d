"""The strategy contract: which parts of a ``SamModel`` train, and what an adapter file holds.

A strategy is a small class with

- ``name`` and ``description`` (class attributes; the name is the entry-point name under
  ``samtune.strategies``),
- ``config_class``: a dataclass derived from :class:`StrategyConfig` (an
  :class:`~samtune.options.Options`: its fields are type-checked from their annotations; its
  ``validate`` adds the checks of values, raising :class:`~samtune.errors.ConfigError`),
  round-tripping through JSON,
- ``freezes_image_encoder``: ``True`` when no image-encoder tensor trains (the training loop
  then serves image embeddings from its cache),
- :meth:`Strategy.inject` (optional): add layers to the model (LoRA, adapters...),
- :meth:`Strategy.is_trainable`: the rule, on parameter names *after* injection, that decides
  what trains,
- ``families``: the SAM families (:mod:`samtune.models.family`: ``sam``, ``sam-hq``, ``sam2``) it
  knows the module names of. The default is ``("sam",)``: a strategy written before SAM-HQ
  and SAM 2 existed names ``SamModel``'s modules, and on another family it would silently
  adapt nothing or the wrong layers. A plugin that supports more says so; applying a
  strategy to a family it does not list is a :class:`~samtune.errors.ConfigError`. Inside
  :meth:`inject` and :meth:`is_trainable`, ``self.family`` is the model's
  :class:`~samtune.models.family.Family`, whose ``targets`` name its parts.

:meth:`Strategy.apply` runs the fixed sequence: fingerprint the untouched base, inject, set
``requires_grad`` from :meth:`Strategy.is_trainable`, record the strategy on the model. What
trained is then :meth:`Strategy.trainable_state_dict`, the exact content of an adapter file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..errors import CheckpointError, ConfigError, InputError
from ..models.family import SAM, Family, family_of
from ..models.identity import base_fingerprint, samtune_info
from ..options import Options

# Meta's SAM keeps the random Fourier matrix of its positional encoding as a *buffer*; HF
# makes it a parameter shared by two modules. No built-in strategy trains it.
POSITIONAL_MATRIX = "shared_image_embedding.positional_embedding"


@dataclasses.dataclass
class StrategyConfig(Options):
    """Base of every strategy config: an :class:`~samtune.options.Options` that round-trips JSON.

    Subclasses add annotated fields (with ``metadata={"help": ...}``): each is type-checked
    from its annotation on construction. Checks of values go in :meth:`validate` (call
    ``super().validate()`` first), raising :class:`~samtune.errors.ConfigError` with
    :func:`~samtune.options.check_range` and friends.
    """

    noun = "strategy option"

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        """The config as a compact, key-sorted JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, strategy: str = "") -> StrategyConfig:
        """Build and validate a config; an unknown key is a :class:`ConfigError` listing the valid ones."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"a strategy config must be a mapping of option names to values; "
                f"found {type(values).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            who = f"strategy {strategy!r}" if strategy else cls.__name__
            raise ConfigError(
                f"{who} has no option {', '.join(map(repr, unknown))}; its options are "
                f"{', '.join(sorted(known)) or '(none)'}"
            )
        return cls(**dict(values))

    @classmethod
    def from_json(cls, text: str, *, strategy: str = "") -> StrategyConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"strategy config is not valid JSON ({exc}): {text[:80]!r}") from None
        return cls.from_dict(values, strategy=strategy)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Option name -> help text (from the fields' ``metadata["help"]``)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


#: Help text of the ``blocks`` option of the strategies that adapt image-encoder blocks.
BLOCKS_HELP = (
    "Image-encoder blocks to adapt: all, last:K (the K last blocks) or a list of block "
    "indices; backward stops at the first adapted block."
)


#: What the ``blocks`` option takes, as its type-check message says it.
BLOCKS_EXPECTED = "all, last:K (K >= 1) or a list of block indices such as [9, 10, 11]"


def check_blocks(value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` is ``"all"``, ``"last:K"`` (K >= 1) or a
    non-empty list of distinct block indices >= 0 (the depth is checked by :func:`select_blocks`)."""
    what = BLOCKS_EXPECTED
    if isinstance(value, str):
        head, sep, count = value.partition(":")
        if value == "all" or (head == "last" and sep and count.isdigit() and int(count) >= 1):
            return
        raise ConfigError(f"blocks must be {what}; found {value!r}")
    if not isinstance(value, list):
        raise ConfigError(f"blocks must be {what}; found {type(value).__name__} {value!r}")
    if not value:
        raise ConfigError(f"blocks must be {what}; found an empty list (adapts nothing)")
    for index in value:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ConfigError(f"blocks indices must be integers >= 0; found {index!r}")
        if index < 0:
            raise ConfigError(
                f"blocks indices must be >= 0 (use last:K to count from the end); found {index}"
            )
    if len(set(value)) != len(value):
        raise ConfigError(f"blocks lists an index twice: {value!r}")


MAX_REGEX_LENGTH = 500
MAX_REGEX_REPEATS = 4


def check_regex(name: str, pattern: str) -> re.Pattern[str]:
    """Compile a regex given in a config (or read from an adapter's metadata) that is matched
    against module names, refusing what could backtrack for hours on a long name: patterns
    over :data:`MAX_REGEX_LENGTH` characters, a repeat inside a repeat (``(a+)+``), an
    alternation inside a repeat (``(a|ab)*``), backreferences (``\\1``) and more than
    :data:`MAX_REGEX_REPEATS` repeats (``.*.*.*.*.*x``).

    Raises:
        ConfigError: an invalid or unsafe pattern, with the reason and what to write instead.
    """
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ConfigError(
            f"{name} is {len(pattern)} characters long; at most {MAX_REGEX_LENGTH} are allowed "
            "(give a list of module-name suffixes instead)"
        )
    try:
        compiled = re.compile(pattern)
        parsed = re._parser.parse(pattern)  # the parser `re` itself uses (Python >= 3.11)
    except re.error as exc:
        raise ConfigError(f"{name} {pattern!r} is not a valid regex: {exc}") from None
    problem = _backtracking_risk(parsed, inside_repeat=False)
    repeats = _count_repeats(parsed)
    if not problem and repeats > MAX_REGEX_REPEATS:
        problem = f"{repeats} repeats (at most {MAX_REGEX_REPEATS})"
    if problem:
        raise ConfigError(
            f"{name} {pattern!r} has {problem}, which can make matching take exponential "
            "time; write it without nesting (e.g. '.*\\.qkv') or give a list of module-name "
            "suffixes"
        )
    return compiled


def _count_repeats(parsed) -> int:
    """How many repeats that can match more than once a parsed regex holds (``.*.*.*x``
    backtracks as the length of the name to their number)."""
    from re import _constants as c

    count = 0
    for op, av in parsed:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            count += int(av[1] > 1) + _count_repeats(av[2])
        elif op is c.BRANCH:
            count += sum(_count_repeats(b) for b in av[1])
        elif op in (c.SUBPATTERN, c.ATOMIC_GROUP, c.ASSERT, c.ASSERT_NOT):
            count += _count_repeats(av[-1])
    return count


def _backtracking_risk(parsed, inside_repeat: bool) -> str | None:
    """What in a parsed regex can backtrack catastrophically ("" / None when nothing)."""
    from re import _constants as c

    for op, av in parsed:
        if op in (c.GROUPREF, c.GROUPREF_EXISTS):
            return "a backreference"
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, high, sub = av
            if inside_repeat:
                return "a repeat inside a repeat"
            found = _backtracking_risk(sub, inside_repeat=high > 1)
        elif op is c.BRANCH:
            if inside_repeat:
                return "an alternation inside a repeat"
            found = next((r for b in av[1] if (r := _backtracking_risk(b, inside_repeat))), None)
        elif op in (c.SUBPATTERN, c.ATOMIC_GROUP, c.ASSERT, c.ASSERT_NOT):
            found = _backtracking_risk(av[-1], inside_repeat)
        else:
            found = None
        if found:
            return found
    return None


def select_blocks(value: Any, depth: int) -> list[int]:
    """The sorted indices of the blocks that ``blocks`` (checked by :func:`check_blocks`)
    selects in an image encoder of ``depth`` blocks.

    Raises:
        ConfigError: ``last:K`` with K > depth, or an index >= depth.
    """
    if value == "all":
        return list(range(depth))
    if isinstance(value, str):
        count = int(value.partition(":")[2])
        if count > depth:
            raise ConfigError(
                f"blocks {value!r} asks for {count} blocks; this image encoder has "
                f"{depth} (use all, or K <= {depth})"
            )
        return list(range(depth - count, depth))
    outside = sorted(i for i in value if i >= depth)
    if outside:
        raise ConfigError(
            f"blocks {outside} are out of range: this image encoder has {depth} "
            f"blocks, numbered 0 to {depth - 1}"
        )
    return sorted(value)


def encoder_blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(qualified name, module)`` of each image-encoder block, in order: the modules whose
    name matches the model's family's ``targets["blocks"]`` (ViT layers; SAM 2's Hiera blocks).

    Raises:
        ConfigError: no module matches (not a SAM-family model), or the family's image
            encoder has no transformer blocks (EdgeTAM's RepViT).
    """
    pattern = re.compile(family_of(model).target("blocks"))
    blocks = [(name, m) for name, m in model.named_modules() if pattern.fullmatch(name)]
    if not blocks:
        raise ConfigError(
            f"no image-encoder block matches {pattern.pattern!r} in {type(model).__name__}"
        )
    return blocks


class Strategy:
    """An adaptation strategy. Subclasses set ``name``, ``description``, ``config_class``.

    ``Strategy(config)`` or ``Strategy(**options)``; options are validated by the config class.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    #: The distribution (pip package) that provides this strategy; set by the registry.
    distribution: ClassVar[str] = ""
    #: The SAM families this strategy supports (see the module docstring).
    families: ClassVar[tuple[str, ...]] = ("sam",)
    #: The family of the model it is applied to (set by :meth:`apply`).
    family: Family = SAM

    def __init__(self, config: StrategyConfig | Mapping[str, Any] | None = None, **options: Any):
        if isinstance(config, StrategyConfig):
            if options:
                config = self.config_class.from_dict(
                    {**config.to_dict(), **options}, strategy=self.name
                )
            if not isinstance(config, self.config_class):
                raise ConfigError(
                    f"strategy {self.name!r} expects a {self.config_class.__name__}; "
                    f"found {type(config).__name__}"
                )
            self.config = config
        else:
            self.config = self.config_class.from_dict(
                {**dict(config or {}), **options}, strategy=self.name
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # ------------------------------------------------------------------ to override

    @property
    def freezes_image_encoder(self) -> bool:
        """True when no image-encoder tensor trains (image embeddings can then be cached)."""
        return False

    def inject(self, model: torch.nn.Module) -> None:
        """Add this strategy's layers to ``model`` in place (default: none)."""

    def is_trainable(self, name: str) -> bool:
        """Whether the parameter ``name`` (as in ``model.named_parameters()`` after
        :meth:`inject`) trains under this strategy."""
        raise NotImplementedError

    def merge(self, model: torch.nn.Module) -> torch.nn.Module:
        """Fold what trained into plain ``SamModel`` weights, in place; return the model.

        The default suits strategies that add no layers (they trained base tensors directly).
        Strategies with layers that cannot be folded raise :class:`~samtune.errors.InputError`.
        """
        return model

    # ------------------------------------------------------------------ fixed

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """Prepare ``model`` (a ``transformers.SamModel``) for training, in place.

        Fingerprints the untouched base weights, injects this strategy's layers, sets
        ``requires_grad`` so that exactly :meth:`is_trainable` parameters train, and records
        the strategy on the model (``save_adapter`` reads it). Returns the same instance.

        Raises:
            InputError: the model already carries a strategy.
            ConfigError: the model's family is not one of :attr:`families`.
        """
        existing = samtune_info(model).strategy
        if existing is not None:
            raise InputError(
                f"this model already has strategy {existing.name!r} applied; apply a strategy "
                "to a freshly loaded base model (samtune.load_model(...))"
            )
        self.family = check_family(self, model)
        base_fingerprint(model)  # before any change, so it names the untouched weights
        self.inject(model)
        for name, param in model.named_parameters():
            param.requires_grad_(bool(self.is_trainable(name)))
        keep_batch_norm_statistics(model)
        samtune_info(model).strategy = self
        return model

    def trainable_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Exactly the trained tensors, detached copies on CPU, keyed by parameter name."""
        return {
            n: p.detach().to("cpu").clone().contiguous()
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    def load_trainable_state_dict(
        self, model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]
    ) -> None:
        """Copy trained tensors into a model this strategy was applied to.

        Raises:
            CheckpointError: names or shapes that do not match what this strategy trains.
        """
        params = dict(model.named_parameters())
        self.check_tensors(
            {n: tuple(p.shape) for n, p in params.items() if p.requires_grad}, tensors
        )
        with torch.no_grad():
            for n, value in tensors.items():
                params[n].copy_(value.to(params[n].dtype))

    def check_tensors(
        self, expected: Mapping[str, tuple[int, ...]], tensors: Mapping[str, torch.Tensor]
    ) -> None:
        """Check an adapter's ``tensors`` against the ``expected`` shapes of what this strategy
        trains: the same names, the same shapes, floating point.

        Raises:
            CheckpointError: naming the first tensor that differs, what was expected and found.
        """
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or extra:
            raise CheckpointError(
                f"the adapter does not match strategy {self.name!r} with config "
                f"{self.config.to_json()}: missing tensors {missing[:3]}, extra "
                f"tensors {extra[:3]}; the file was written by another version or edited"
            )
        for n in sorted(tensors):
            value = tensors[n]
            if not value.is_floating_point():
                raise CheckpointError(
                    f"tensor {n!r} in the adapter is {str(value.dtype).removeprefix('torch.')}, "
                    "expected floating point (float32, float16 or bfloat16); the file was edited"
                )
            if tuple(value.shape) != tuple(expected[n]):
                raise CheckpointError(
                    f"tensor {n!r} has shape {tuple(value.shape)} in the adapter, but strategy "
                    f"{self.name!r} with config {self.config.to_json()} on this model expects "
                    f"{tuple(expected[n])}; the adapter is for another base size, or its "
                    "config was edited"
                )

    def trainable_shapes(self, model: torch.nn.Module) -> dict[str, tuple[int, ...]] | None:
        """The shapes of what this strategy would train on ``model``, worked out on a copy of
        its architecture on the ``meta`` device (no memory is allocated, ``model`` is left
        alone), so an adapter's config can be checked before its layers are built: a config
        that asks for a rank of a billion is refused instead of allocated.

        Returns ``None`` when the strategy cannot be injected on ``meta`` (a plugin's layers
        may need real tensors); :meth:`load_trainable_state_dict` still checks afterwards.
        """
        config = getattr(model, "config", None)
        if config is None:
            return None
        twin_strategy = type(self)(self.config)
        try:
            with torch.device("meta"):  # every layer built in here, injected ones too
                twin = type(model)(config)
                twin_strategy.family = check_family(twin_strategy, twin)
                twin_strategy.inject(twin)
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):
            return None
        return {
            n: tuple(p.shape) for n, p in twin.named_parameters() if twin_strategy.is_trainable(n)
        }


def _use_running_statistics(module: torch.nn.Module, inputs: tuple) -> None:
    """Forward pre-hook: the batch norm normalises with its running statistics."""
    module.training = False


def keep_batch_norm_statistics(model: torch.nn.Module) -> None:
    """Make the image encoder's batch norms (EdgeTAM's RepViT; SAM's, SAM 2's and SAM 3's
    encoders have none) normalise with their running statistics even in training mode, and
    never update them. A fine-tuning batch (1 to 8 images) is too small to estimate them, a
    frozen encoder must give the embeddings the cache holds, and an adapter holds parameters
    only: statistics that drifted in training would not travel with it."""
    for module in model.vision_encoder.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.register_forward_pre_hook(_use_running_statistics)


def check_family(strategy: Strategy, model: torch.nn.Module) -> Family:
    """The model's family, if ``strategy`` supports it; else a :class:`ConfigError` naming both."""
    family = family_of(model)
    if family.name not in strategy.families:
        who = f" (from {strategy.distribution})" if strategy.distribution else ""
        raise ConfigError(
            f"strategy {strategy.name!r}{who} supports the {', '.join(strategy.families)} "
            f"famil{'y' if len(strategy.families) == 1 else 'ies'}; this model is "
            f"{family.name} ({type(model).__name__}). Use a built-in strategy, or a version "
            f"of the plugin that lists {family.name!r} in its `families`"
        )
    return family


def applied_strategy(model: torch.nn.Module) -> Strategy | None:
    """The strategy applied to ``model`` (``None`` for a plain model)."""
    return samtune_info(model).strategy


def clear_strategy(model: torch.nn.Module) -> None:
    """Forget the strategy and base fingerprint recorded on ``model`` (after merging)."""
    info = samtune_info(model)
    info.strategy, info.base_fingerprint = None, None


def merged_copy(model: torch.nn.Module, strategy: Strategy) -> torch.nn.Module:
    """A copy of ``model`` with ``strategy``'s training folded into plain weights.

    The copy has no strategy recorded and every parameter requires gradients again, like a
    freshly loaded model; ``model`` is left as it is. Raises what ``strategy.merge`` raises
    (:class:`~samtune.errors.InputError` for layers that cannot be folded).
    """
    merged = strategy.merge(copy.deepcopy(model))
    clear_strategy(merged)
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged
