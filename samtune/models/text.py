"""Phrases for models that take text prompts (SAM 3): the tokenizer, and phrases as token ids.

SAM 3 reads a phrase with a CLIP text encoder; ``Sam3Processor`` tokenizes it with a
``CLIPTokenizer`` padded to ``max_length=32`` (the text encoder's ``max_position_embeddings``),
attention mask 1 on the tokens. :func:`tokenize_phrases` does the same (padding to the text
encoder's length) and refuses what the encoder cannot read: an empty phrase, or one whose
tokens (with the start and end tokens) do not fit, rather than cutting it silently.

The tokenizer travels with the model in :attr:`~samtune.models.identity.SamtuneInfo.tokenizer`:
:func:`samtune.load_model` reads it from a folder's tokenizer files (``vocab.json``,
``merges.txt``, ``tokenizer.json``) or a hub repository; the ``tiny-sam3`` preset builds
:func:`tiny_clip_tokenizer`, a real byte-level BPE CLIP tokenizer whose vocabulary is
generated here (no download): the 256 byte symbols (alone and word-final), merges that spell
:data:`TINY_WORDS`, and the start and end tokens. Any text tokenizes with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, quote_untrusted
from .family import family_of
from .identity import samtune_info

TINY_WORDS = (
    "bottle", "can", "cardboard", "bag", "plastic", "metal", "paper", "glass", "object",
    "trash", "cup", "lid", "wrapper", "rope", "net", "pipe", "tire", "wood", "fabric", "rubber",
)  # fmt: skip
"""Words the tiny tokenizer spells with its merges (the demo dataset's classes among them)."""

TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
"""A folder holding either has a tokenizer (``tokenizer.json`` alone suffices)."""

PROCESSOR_MAX_LENGTH = 32
"""``Sam3Processor`` pads and limits phrases to 32 tokens."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's and CLIP's map of the 256 bytes to printable characters (byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tiny_vocabulary(
    words: tuple[str, ...] = TINY_WORDS,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """``(vocab, merges)`` of the tiny CLIP tokenizer, in CLIP's order: byte symbols, the same
    word-final (``</w>``), the merged symbols, then ``<|startoftext|>`` and ``<|endoftext|>``.
    Each word of ``words`` is spelled left to right by its merges."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            merge = (left, right)
            if merge not in merges:
                merges.append(merge)
                tokens.append(left + right)
            left += right
    tokens = list(dict.fromkeys(tokens)) + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def tiny_clip_tokenizer() -> Any:
    """The ``tiny-sam3`` preset's tokenizer (a ``transformers.CLIPTokenizer``; no download)."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=PROCESSOR_MAX_LENGTH)


def has_tokenizer_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a saved tokenizer (:data:`TOKENIZER_FILES`)."""
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(source: str | os.PathLike, **hub_options: Any) -> Any:
    """The ``CLIPTokenizer`` saved in a folder or a hub repository (``hub_options``:
    ``revision``, ``local_files_only``). Only its JSON and text files are read."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(os.fspath(source), **hub_options)


def text_tokenizer(model: torch.nn.Module) -> Any:
    """The tokenizer that came with ``model``.

    Raises:
        InputError: the model's family takes no text, or no tokenizer came with it.
    """
    family = family_of(model)
    if not family.has_text:
        raise InputError(
            f"this model is {family.name} ({type(model).__name__}), which has no text "
            "encoder and cannot be prompted by name; use a SAM 3 model (family sam3, e.g. "
            "facebook/sam3 or the demo-sam3 preset), or prompt with boxes or points"
        )
    tokenizer = samtune_info(model).tokenizer
    if tokenizer is None:
        raise InputError(
            "this SAM 3 model came without its tokenizer, so phrases cannot be read; load it "
            "from a folder that holds tokenizer.json (samtune convert, or save_hf_folder, "
            "writes one) or from its hub repository"
        )
    return tokenizer


def check_geometric_prompts(model: torch.nn.Module, what: str) -> None:
    """InputError when ``model`` is prompted by name (SAM 3) and ``what`` (a task, in words)
    needs SAM's point and box prompts: say what to use instead."""
    family = family_of(model)
    if family.has_text:
        raise InputError(
            f"{what} needs a SAM, SAM-HQ or SAM 2 model (point and box prompts); this model "
            f"is {family.name} ({type(model).__name__}), prompted by name: use "
            "`samtune segment IMAGES --text PHRASE` or samtune.segment_by_name"
        )


def context_length(model: torch.nn.Module) -> int:
    """How many tokens the text encoder reads (start and end tokens included)."""
    positions = int(model.config.text_config.max_position_embeddings)
    return min(positions, PROCESSOR_MAX_LENGTH)


def tokenize_phrases(model: torch.nn.Module, phrases: list[str]) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (P, L) of ``phrases``, padded to the text
    encoder's length L as ``Sam3Processor`` pads (``padding="max_length"``).

    Raises:
        InputError: no phrase, an empty phrase, a phrase longer than L tokens, or a model
            without a text encoder or tokenizer.
    """
    tokenizer = text_tokenizer(model)
    if not phrases:
        raise InputError("no phrase given; give at least one name such as 'plastic bottle'")
    length = context_length(model)
    for phrase in phrases:
        if not isinstance(phrase, str) or not phrase.strip():
            raise InputError(
                f"phrase {quote_untrusted(phrase)} is empty; give a name such as 'plastic bottle'"
            )
        count = len(tokenizer(phrase, verbose=False)["input_ids"])
        if count > length:
            raise InputError(
                f"phrase {quote_untrusted(phrase)} is {count} tokens long (start and end "
                f"included); this model's text encoder reads at most {length}: shorten it"
            )
    encoded = tokenizer(list(phrases), padding="max_length", max_length=length, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


__all__ = [
    "TINY_WORDS",
    "check_geometric_prompts",
    "context_length",
    "has_tokenizer_files",
    "load_tokenizer",
    "text_tokenizer",
    "tiny_clip_tokenizer",
    "tiny_vocabulary",
    "tokenize_phrases",
]
