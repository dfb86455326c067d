"""Segment by name: every instance of each phrase in an image, with SAM 3 (``Sam3Model``).

SAM 3 takes a concept prompt (a short noun phrase such as ``"plastic bottle"``) and returns
every instance of it: its DETR decoder proposes a fixed number of queries, each with a mask,
a box and a score. The score of a query is SAM 3's *joint* score,
``sigmoid(class logit) * sigmoid(presence logit)`` (the class logit says "this query is an
instance of the phrase", the presence logit "the phrase is in the image").

:func:`segment_by_name` prepares the image as ``Sam3Processor`` does (stretched to the model's
square input, bilinear with antialiasing, normalised with the processor's mean and std 0.5;
:func:`samtune.data.transforms.preprocess_image` with the model's
:func:`~samtune.models.identity.preprocess_config`), encodes it **once**
(``Sam3Model.get_vision_features``) and runs the DETR stages for the phrases in chunks of
``text_batch``, reusing that encoding (``vision_embeds``). Phrases are tokenized as
``Sam3Processor`` does (:func:`samtune.models.text.tokenize_phrases`). Each phrase's queries
go through transformers' own ``Sam3ImageProcessor.post_process_instance_segmentation``:
scores above ``score_threshold`` kept, mask probabilities resized (bilinear) to the image and
thresholded at ``mask_threshold``, boxes scaled to pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.images import read_image
from ..data.masks import encode_mask
from ..data.transforms import preprocess_image
from ..errors import InputError, RunError
from ..models.identity import preprocess_config
from ..models.sam_ops import to_model
from ..models.text import text_tokenizer, tokenize_phrases

DEFAULT_SCORE_THRESHOLD = 0.5
"""Queries scored at or below this are dropped (SAM 3's detection threshold)."""


@dataclass(frozen=True)
class NamedMask:
    """One instance found for a phrase (a :class:`~samtune.evaluation.class_metrics.ClassPrediction`
    with the phrase and box besides: ``mask``, ``category_id``, ``score``).

    Attributes:
        mask: HxW bool at the image's original size.
        category_id: the index of the phrase in the ``texts`` given.
        score: the joint score in [0, 1].
        text: the phrase.
        box: (4,) float32 XYXY in original pixels (the DETR decoder's box, not the mask's).
    """

    mask: np.ndarray
    category_id: int
    score: float
    text: str
    box: np.ndarray

    def to_coco(self, image_id: int = 0, category_id: int | None = None) -> dict:
        """A COCO result: ``image_id``, ``category_id`` (``category_id`` or this index),
        ``segmentation`` (compressed RLE), ``score``, ``bbox`` (XYWH of the mask), ``area``,
        and ``text``."""
        from pycocotools import mask as mask_utils

        rle = encode_mask(self.mask)
        return {
            "image_id": int(image_id),
            "category_id": int(self.category_id if category_id is None else category_id),
            "segmentation": rle,
            "score": float(self.score),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "area": float(self.mask.sum()),
            "text": self.text,
        }


@functools.cache
def _post_processor() -> Any:
    from transformers import Sam3ImageProcessor

    return Sam3ImageProcessor()


def check_thresholds(score_threshold: float, mask_threshold: float) -> None:
    """InputError unless both thresholds are numbers in [0, 1)."""
    for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise InputError(f"{name} must be a number in [0, 1); found {value!r}")


def check_texts(model: torch.nn.Module, texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, each checked (a text encoder, not empty, within its length).

    Raises:
        InputError: a model without a text encoder or tokenizer, no text, an empty text, a
            text longer than the text encoder reads, the same text twice.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    text_tokenizer(model)  # the family and tokenizer first: the most useful message
    tokenize_phrases(model, texts)
    seen = set()
    for text in texts:
        if text.strip().casefold() in seen:
            raise InputError(f"phrase {text!r} is given twice; give each phrase once")
        seen.add(text.strip().casefold())
    return texts


def encode_image(model: torch.nn.Module, image: np.ndarray) -> Any:
    """``Sam3Model.get_vision_features`` of one HxWx3 uint8 image (batch 1)."""
    pixel_values, _ = preprocess_image(image, preprocess_config(model))
    return model.get_vision_features(pixel_values=to_model(model, pixel_values[None]))


def _expand(vision: Any, size: int) -> Any:
    """The vision encoding of one image as a batch of ``size`` (views, no copy)."""
    if size == 1:
        return vision
    return type(vision)(
        last_hidden_state=vision.last_hidden_state.expand(
            size, *vision.last_hidden_state.shape[1:]
        ),
        fpn_hidden_states=tuple(f.expand(size, *f.shape[1:]) for f in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(
            f.expand(size, *f.shape[1:]) for f in vision.fpn_position_encoding
        ),
    )


def _decode_texts(
    model: torch.nn.Module,
    vision: Any,
    tokens: dict[str, torch.Tensor],
    size: tuple[int, int],
    score_threshold: float,
    mask_threshold: float,
) -> list[dict]:
    """transformers' post-processed results, one dict per phrase of ``tokens``."""
    input_ids = tokens["input_ids"].to(vision.fpn_hidden_states[0].device)
    attention_mask = tokens["attention_mask"].to(input_ids.device)
    outputs = model(
        vision_embeds=_expand(vision, len(input_ids)),
        input_ids=input_ids,
        attention_mask=attention_mask,
    )
    for name in ("pred_logits", "presence_logits", "pred_masks", "pred_boxes"):
        if not torch.isfinite(getattr(outputs, name)).all():
            raise RunError(
                f"the model's {name} are NaN or infinite; check its weights for NaN (a "
                "diverged run), or, for a float16 model, run it in float32"
            )
    outputs.pred_masks = outputs.pred_masks.float()
    outputs.pred_logits = outputs.pred_logits.float()
    outputs.presence_logits = outputs.presence_logits.float()
    outputs.pred_boxes = outputs.pred_boxes.float()
    return _post_processor().post_process_instance_segmentation(
        outputs,
        threshold=score_threshold,
        mask_threshold=mask_threshold,
        target_sizes=[size] * len(input_ids),
    )


def segment_by_name(
    model: torch.nn.Module,
    image: Any,
    texts: Sequence[str],
    *,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    mask_threshold: float = 0.5,
    text_batch: int = 4,
) -> list[NamedMask]:
    """Every instance of each phrase of ``texts`` in ``image`` (see the module docstring).

    Args:
        model: a SAM 3 model (``Sam3Model``, family ``sam3``) with its tokenizer
            (:func:`samtune.load_model` attaches it).
        image: a path, an HxWx3 uint8 RGB array, a PIL image or a (3, H, W) uint8 tensor.
        texts: the phrases (a string is one phrase); each instance's ``category_id`` is its
            phrase's index here.
        score_threshold: keep queries whose joint score is above this.
        mask_threshold: a pixel is in the mask where the mask probability is above this.
        text_batch: phrases run through the DETR stages together (memory: ``text_batch``
            times the DETR and mask decoder activations; results do not depend on it).

    Returns:
        :class:`NamedMask` per instance, phrase by phrase in ``texts`` order, each phrase's
        instances by descending score.

    Raises:
        InputError: a model without a text encoder, an empty phrase, a phrase longer than the
            text encoder reads, a threshold outside [0, 1), an unreadable image.
    """
    texts = check_texts(model, texts)
    check_thresholds(score_threshold, mask_threshold)
    if isinstance(text_batch, bool) or not isinstance(text_batch, int) or text_batch < 1:
        raise InputError(f"text_batch must be a positive integer; found {text_batch!r}")
    rgb, _ = read_image(image)
    size = (int(rgb.shape[0]), int(rgb.shape[1]))
    was_training = model.training
    model.eval()
    found: list[NamedMask] = []
    try:
        with torch.no_grad():
            vision = encode_image(model, rgb)
            for start in range(0, len(texts), text_batch):
                chunk = texts[start : start + text_batch]
                tokens = tokenize_phrases(model, chunk)
                results = _decode_texts(
                    model, vision, tokens, size, score_threshold, mask_threshold
                )
                for offset, result in enumerate(results):
                    found += _instances(result, start + offset, chunk[offset])
    finally:
        model.train(was_training)
    return found


def _instances(result: dict, index: int, text: str) -> list[NamedMask]:
    """One phrase's post-processed result as :class:`NamedMask` objects, best score first."""
    scores = result["scores"].float().cpu()
    order = torch.argsort(scores, descending=True, stable=True)
    masks = result["masks"].bool().cpu()
    boxes = result["boxes"].float().cpu()
    return [
        NamedMask(
            mask=masks[i].numpy(),
            category_id=index,
            score=float(scores[i]),
            text=text,
            box=boxes[i].numpy().astype(np.float32),
        )
        for i in order.tolist()
    ]


def label_map(found: Sequence[NamedMask], size: tuple[int, int]) -> np.ndarray:
    """HxW int64 class map: 0 background, ``category_id + 1`` where an instance of that
    phrase lies; where instances overlap, the higher score wins (ties: the later one)."""
    from ..data.masks import semantic_label_map

    masks = (
        np.stack([np.asarray(f.mask, bool) for f in found]) if found else np.zeros((0, *size), bool)
    )
    labels = [f.category_id + 1 for f in found]
    return semantic_label_map(masks, labels, [f.score for f in found])


__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "NamedMask",
    "check_texts",
    "check_thresholds",
    "encode_image",
    "label_map",
    "segment_by_name",
]
