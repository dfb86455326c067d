"""Named training recipes: sets of :class:`~samtune.train.config.FitConfig` values.

A recipe is the layer just above the defaults. Precedence, lowest first::

    defaults (and the demo's defaults) < recipe < config file (--config) < options given

so ``--recipe lightning-sam --lr 1e-4`` is lightning-sam's recipe with another learning
rate, and a run's ``config.yaml`` (which records every resolved value and the recipe's name)
reproduces the run. The recipe is applied where options are merged
(:func:`samtune.train.config.build_config`, :meth:`FitConfig.from_dict`: ``samtune fit``,
``samtune.fit`` and suite specs); a :class:`FitConfig` constructed directly takes its values
as given.

Recipes:

* ``default``: samtune's defaults (no values of its own), chosen by the recipe study of
  ``docs/training.md`` ("Why these defaults", two rounds): focal + dice 1:1 plus MSE(IoU
  head), boxes without jitter, cosine decay after warmup.
* The named recipes pin every value they publish, so changing the defaults never moves them.
* ``lightning-sam``: luca-medeiros/lightning-sam as published (``lightning_sam/config.py``
  and ``train.py``): loss ``20 * focal + dice + MSE(IoU head)``, boxes from the annotation's
  COCO ``bbox`` without noise, every annotation of an image, lr 8e-4 with weight decay 1e-4,
  250 warmup steps, then the lr divided by 10 at steps 60000 and 86666, 12 images per step
  per process (it ran 4 GPUs), 20 epochs. What samtune does differently is in
  ``docs/training.md`` (optimizer AdamW, not Adam; samtune's focal and dice terms).
* ``micro-sam``: computational-cell-analytics/micro-sam's ``train_sam`` defaults where
  samtune has the same knob: dice + MSE(IoU head), no focal term, iterative prompting (a
  first prompt, then 7 corrective clicks: 8 sub-iterations), boxes without distortion, 25
  objects per image, constant lr without warmup; random horizontal and vertical flips
  (``augment: flips``, torch_em's default 2D augmentation, which micro-sam's loaders use).

This module imports no torch (``samtune fit --help`` lists the recipes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError, UnknownNameError, quote_untrusted

DEFAULT_RECIPE = "default"


@dataclass(frozen=True)
class Recipe:
    """A named set of FitConfig values (``values``: field name -> value)."""

    name: str
    summary: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(DEFAULT_RECIPE, "samtune's defaults"),
        Recipe(
            "lightning-sam",
            "lightning-sam's base: 20:1 focal:dice + IoU MSE, annotation boxes, step decay",
            {
                "focal_weight": 20.0,
                "dice_weight": 1.0,
                "iou_weight": 1.0,
                "prompt": "box",
                "box_source": "annotation",
                "box_jitter": 0.0,
                "max_instances": None,
                "lr": 8e-4,
                "weight_decay": 1e-4,
                "warmup_steps": 250,
                "schedule": "step",
                "decay_steps": [60000, 86666],
                "decay_factor": 10.0,
                "batch_size": 12,
                "epochs": 20,
                "augment": False,
            },
        ),
        Recipe(
            "micro-sam",
            "micro-sam's: dice + IoU MSE, iterative prompts, constant lr",
            {
                "focal_weight": 0.0,
                "dice_weight": 1.0,
                "iou_weight": 1.0,
                "prompt": "interactive",
                "interactive_rounds": 7,
                "box_jitter": 0.0,
                "max_instances": 25,
                "schedule": "constant",
                "warmup_steps": 0,
                "augment": "flips",
            },
        ),
    )
}


def recipe_names() -> list[str]:
    """The names of the recipes, ``default`` first."""
    return list(RECIPES)


def get_recipe(name: Any) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ConfigError: ``name`` is not text.
        UnknownNameError: no recipe has that name (the message lists the names).
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"recipe must be one of {', '.join(RECIPES)}; found {type(name).__name__} "
            f"{quote_untrusted(name)}"
        )
    recipe = RECIPES.get(name.strip().lower())
    if recipe is None:
        raise UnknownNameError(
            f"unknown recipe {quote_untrusted(name)}; choose one of {', '.join(RECIPES)}"
        )
    return recipe


def with_recipe(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` over the values of the recipe they name (``recipe``, else ``default``).

    ``options`` are the explicit ones (a config file merged with the given options); the
    result is what :meth:`FitConfig.from_dict` builds the config from. The recipe's name is
    kept in canonical form (``Micro-SAM`` -> ``micro-sam``).
    """
    recipe = get_recipe(options.get("recipe", DEFAULT_RECIPE))
    return {**recipe.values, **options, "recipe": recipe.name}
