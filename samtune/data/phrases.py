"""The phrase SAM 3 is asked by for each category of the built-in recipes (``prompt: text``).

A category name is a label (``trash_plastic``, ``Plastic glooves``); SAM 3 was trained on noun
phrases (``plastic trash``). Each recipe's map turns its names into plain phrases; a name it
leaves out is asked as it is, and a user's ``prompt_map`` wins over it. Maps name categories
of every version of a recipe (TrashCan's instance and material versions): names a dataset
lacks are ignored, so a category selection (``categories=...``) keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, DataError, quote_untrusted
from ..options import check_prompt_map

_TRASHCAN = {
    # both versions
    "rov": "underwater robot",
    "plant": "plant",
    "animal_fish": "fish",
    "animal_starfish": "starfish",
    "animal_shells": "shell",
    "animal_crab": "crab",
    "animal_eel": "eel",
    "animal_etc": "sea animal",
    # instance version
    "trash_clothing": "clothing",
    "trash_pipe": "pipe",
    "trash_bottle": "bottle",
    "trash_bag": "bag",
    "trash_snack_wrapper": "snack wrapper",
    "trash_can": "can",
    "trash_cup": "cup",
    "trash_container": "container",
    "trash_unknown_instance": "trash",
    "trash_branch": "branch",
    "trash_wreckage": "wreckage",
    "trash_tarp": "tarp",
    "trash_rope": "rope",
    "trash_net": "net",
    # material version
    "trash_etc": "trash",
    "trash_fabric": "fabric trash",
    "trash_fishing_gear": "fishing gear",
    "trash_metal": "metal trash",
    "trash_paper": "paper trash",
    "trash_plastic": "plastic trash",
    "trash_rubber": "rubber trash",
    "trash_wood": "wood trash",
}

_ZEROWASTE = {
    "rigid_plastic": "rigid plastic",
    "cardboard": "cardboard",
    "metal": "metal",
    "soft_plastic": "soft plastic",
}

# TACO's 60 names (annotations.json), lower-cased, with these changed: typos, "Other X" (the
# phrase is X), and names whose words alone say little.
_TACO_NAMES = (
    "Aluminium foil", "Battery", "Aluminium blister pack", "Carded blister pack",
    "Other plastic bottle", "Clear plastic bottle", "Glass bottle", "Plastic bottle cap",
    "Metal bottle cap", "Broken glass", "Food Can", "Aerosol", "Drink can", "Toilet tube",
    "Other carton", "Egg carton", "Drink carton", "Corrugated carton", "Meal carton",
    "Pizza box", "Paper cup", "Disposable plastic cup", "Foam cup", "Glass cup",
    "Other plastic cup", "Food waste", "Glass jar", "Plastic lid", "Metal lid", "Other plastic",
    "Magazine paper", "Tissues", "Wrapping paper", "Normal paper", "Paper bag",
    "Plastified paper bag", "Plastic film", "Six pack rings", "Garbage bag",
    "Other plastic wrapper", "Single-use carrier bag", "Polypropylene bag", "Crisp packet",
    "Spread tub", "Tupperware", "Disposable food container", "Foam food container",
    "Other plastic container", "Plastic glooves", "Plastic utensils", "Pop tab",
    "Rope & strings", "Scrap metal", "Shoe", "Squeezable tube", "Plastic straw", "Paper straw",
    "Styrofoam piece", "Unlabeled litter", "Cigarette",
)  # fmt: skip
_TACO_CHANGED = {
    "Other plastic bottle": "plastic bottle",
    "Aerosol": "aerosol can",
    "Toilet tube": "toilet paper tube",
    "Other carton": "carton",
    "Other plastic cup": "plastic cup",
    "Other plastic": "plastic",
    "Tissues": "tissue",
    "Normal paper": "paper",
    "Plastified paper bag": "plastic-coated paper bag",
    "Other plastic wrapper": "plastic wrapper",
    "Single-use carrier bag": "carrier bag",
    "Other plastic container": "plastic container",
    "Plastic glooves": "plastic gloves",
    "Rope & strings": "rope",
    "Unlabeled litter": "litter",
    "Cigarette": "cigarette butt",
}
_TACO = {name: _TACO_CHANGED.get(name, name.lower()) for name in _TACO_NAMES}

_DEMO = {"bottle": "bottle", "can": "can", "cardboard": "piece of cardboard", "bag": "plastic bag"}

PROMPT_MAPS: dict[str, dict[str, str]] = {
    "trashcan": _TRASHCAN,
    "trashcan-material": _TRASHCAN,
    "zerowaste": _ZEROWASTE,
    "taco": _TACO,
    "demo": _DEMO,
}
"""``{recipe name: {category name: phrase}}``; read it through ``Recipe.prompt_map``."""


# --------------------------------------------------------------------------- phrases of a dataset


def category_phrases(
    categories: Mapping[int, str],
    prompt_map: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
    dataset: str = "the dataset",
) -> dict[int, str]:
    """The phrase each category is asked by: ``prompt_map``, else ``defaults``, else its name.

    Args:
        categories: the dataset's ``{category id: name}``.
        prompt_map: the user's ``{category name: phrase}``; every name must be a category.
        defaults: a recipe's own map; names the dataset lacks (a category selection) are
            ignored.
        dataset: the dataset's name, for messages.

    Returns:
        ``{category id: phrase}`` in the dataset's category order.

    Raises:
        DataError: the dataset has no category names.
        ConfigError: the prompt map names a category the dataset lacks, a phrase is empty, or
            two categories would be asked by the same phrase.
    """
    prompt_map, defaults = dict(prompt_map or {}), dict(defaults or {})
    names = {name: cid for cid, name in categories.items()}
    if not categories or not any(str(n).strip() for n in names):
        raise DataError(
            f"prompt: text asks SAM 3 for each category by name, and {dataset} has no category "
            "names: give its COCO file a 'categories' list with names, or train with prompt: box"
        )
    unknown = [name for name in prompt_map if name not in names]
    if unknown:
        raise ConfigError(
            f"prompt_map names category {quote_untrusted(unknown[0])}, which {dataset} lacks; its "
            f"categories are {quote_untrusted(sorted(names))}: fix or drop that entry"
        )
    phrases: dict[int, str] = {}
    for cid, name in categories.items():
        phrase = prompt_map.get(name, defaults.get(name, name))
        if not isinstance(phrase, str) or not phrase.strip():
            raise ConfigError(
                f"category {quote_untrusted(name)} of {dataset} would be asked by an empty "
                "phrase: give it a phrase in prompt_map (category name: phrase)"
            )
        phrases[cid] = " ".join(phrase.split())
    seen: dict[str, int] = {}
    for cid, phrase in phrases.items():
        if phrase in seen:
            raise ConfigError(
                f"categories {quote_untrusted(categories[seen[phrase]])} and "
                f"{quote_untrusted(categories[cid])} would both be asked by the phrase "
                f"{quote_untrusted(phrase)}: give them different phrases in prompt_map, or merge "
                "them with the dataset option category_map"
            )
        seen[phrase] = cid
    return phrases


def dataset_phrases(
    dataset: Any, prompt_map: Mapping[str, str] | None = None, recipe: str | None = None
) -> dict[int, str]:
    """``{category id: phrase}`` that ``dataset`` is asked by: :func:`category_phrases` over
    its categories, with the built-in map of ``recipe`` (default: the recipe the dataset's
    ``name`` starts with, as :func:`samtune.load_dataset` names a split ``demo/test``) under
    ``prompt_map``. Training and evaluation both ask by these, so a model is scored on the
    phrases it trained with."""
    if recipe is None:  # a loaded split is named "<recipe>/<split>" (load_dataset)
        recipe = str(getattr(dataset, "name", "") or "").split("/")[0]
    defaults = PROMPT_MAPS.get(recipe, {}) if isinstance(recipe, str) else {}
    name = getattr(dataset, "name", None) or "the dataset"
    return category_phrases(getattr(dataset, "categories", None) or {}, prompt_map, defaults,
                            dataset=f"dataset {quote_untrusted(name)}")  # fmt: skip


__all__ = ["PROMPT_MAPS", "category_phrases", "check_prompt_map", "dataset_phrases"]
