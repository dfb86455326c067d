"""The phrase SAM 3 is asked by for each category of the built-in recipes (``prompt: text``).

A category name is a label (``trash_plastic``, ``Plastic glooves``); SAM 3 was trained on noun
phrases (``plastic trash``). Each recipe's map turns its names into plain phrases; a name it
leaves out is asked as it is, and a user's ``prompt_map`` wins over it. Maps name categories
of every version of a recipe (TrashCan's instance and material versions): names a dataset
lacks are ignored, so a category selection (``categories=...``) keeps working.
"""

from __future__ import annotations

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

__all__ = ["PROMPT_MAPS"]
