"""One training step of SAM 3 prompted by category names (``prompt: text``).

Every image is asked for every category of the dataset by name: with ``C`` categories and ``B``
images a step runs ``B x C`` (image, phrase) rows, image by image. A category with no instance
in the image is a negative row (no target boxes: presence target 0); ``negatives`` caps how
many of those an image gets per step (drawn per epoch), so many categories need not mean many
rows. The phrase of a category is its name, or what the prompt map gives
for it (``{"trash_plastic": "plastic trash"}``).

What is computed how often:

* the image encoder runs once per image (``Sam3Model.get_vision_features`` on the ``B``
  images); its features are repeated for the ``C`` rows of the image;
* the text encoder runs once per phrase per run when it does not train (its output is cached
  on the step module), else once per phrase per step; the text projection runs every step (it
  may train);
* the DETR encoder, decoder and mask decoder run once on the rows; every decoder layer's
  logits, presence and boxes are kept for the auxiliary losses (:class:`DecoderLayers`).

Targets, per row (:func:`image_targets`): ``boxes`` ``(T, 4)`` normalised XYXY in the model's
input frame and ``masks`` ``(T, m, m)`` bool at the predicted mask resolution. SAM 3's image
processor stretches the image to the square input (no padding, see
:func:`sam3_preprocess`), so a box's fractions of the original width and height are its
fractions of the input; masks are shrunk straight from the original size to ``m x m``. The
loss is :func:`samtune.train.sam3_losses.sam3_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.phrases import category_phrases
from ..errors import ConfigError, RunError
from ..models.family import family_of
from ..models.identity import PreprocessConfig, preprocess_config
from ..models.text import text_tokenizer, tokenize_phrases
from .sam3_losses import Sam3LossConfig, joint_logits, matched_box_iou, sam3_loss
from .sam3_matching import hungarian_match

Tokenize = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
"""``tokenize(phrases) -> (input_ids (C, L) int64, attention_mask (C, L))``, one length ``L``."""

EXEMPLAR_PAD_LABEL = -10  # Sam3Model's label for "no box in this slot"


# --------------------------------------------------------------------------- model facts


def has_text_encoder(model: Any) -> bool:
    """True for a model that can be prompted by text: its family's ``has_text`` (SAM 3)."""
    while hasattr(model, "module") and not hasattr(model, "config"):
        model = model.module
    return family_of(model).has_text


def sam3_preprocess(model: nn.Module) -> PreprocessConfig:
    """How SAM 3 prepares images: ``Sam3ImageProcessor`` (stretch to the square input side,
    bilinear, then ``(x - 127.5) / 127.5``), unless the model's files declare otherwise: the
    model's :func:`~samtune.models.identity.preprocess_config`."""
    return preprocess_config(model)


def mask_side(model: nn.Module) -> int:
    """Side of ``Sam3Model``'s ``pred_masks``: the finest FPN level, patch grid x its scale
    (1008 px / 14 x 4 = 288 for ``facebook/sam3``)."""
    vision = model.config.vision_config
    grid = int(vision.image_size) // int(vision.backbone_config.patch_size)
    return int(round(grid * float(vision.scale_factors[0])))


def load_tokenizer(model: nn.Module) -> Tokenize:
    """The tokenizer that came with the model (:func:`samtune.models.text.text_tokenizer`), as
    a :data:`Tokenize` padding every phrase to the text encoder's length, as
    ``Sam3Processor`` does (``padding="max_length"``; 32 for ``facebook/sam3``).

    Raises:
        InputError: the model has no text encoder, or came without its tokenizer (pass
            ``tokenize=`` to ``samtune.fit``).
    """
    text_tokenizer(model)  # refuses here, before any training starts

    def tokenize(phrases: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = tokenize_phrases(model, phrases)
        return encoded["input_ids"], encoded["attention_mask"]

    return tokenize


# --------------------------------------------------------------------------- phrases


# --------------------------------------------------------------------------- targets


def shrink_masks(masks: np.ndarray | torch.Tensor, side: int) -> torch.Tensor:
    """``(N, H, W)`` bool -> ``(N, side, side)`` bool: a pixel is on when at least half of the
    area it covers in the original mask is (area average; the image is stretched the same way)."""
    masks = torch.as_tensor(np.asarray(masks)).float()
    if masks.shape[0] == 0:
        return torch.zeros(0, side, side, dtype=torch.bool)
    return F.adaptive_avg_pool2d(masks[:, None], (side, side))[:, 0] >= 0.5


def image_targets(sample: Any, category_ids: list[int], side: int) -> list[dict[str, torch.Tensor]]:
    """One target per category of ``category_ids`` for one :class:`~samtune.data.Sample`.

    Each is ``{"boxes": (T, 4) float32 normalised XYXY, "masks": (T, side, side) bool}`` with
    the image's non-crowd instances of that category (``T = 0``: the category is absent).
    Boxes are ``sample.boxes`` (the masks' extent, original pixels) over the image's width and
    height; instances without area are left out.
    """
    height, width = sample.image.shape[:2]
    boxes = np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4)
    usable = ~np.asarray(sample.iscrowd, dtype=bool) & (boxes[:, 2] > boxes[:, 0])
    usable &= boxes[:, 3] > boxes[:, 1]
    scale = np.array([width, height, width, height], dtype=np.float32)
    targets = []
    for cid in category_ids:
        keep = usable & (np.asarray(sample.category_ids) == cid)
        norm = np.clip(boxes[keep] / scale, 0.0, 1.0)
        targets.append(
            {
                "boxes": torch.from_numpy(norm.astype(np.float32)),
                "masks": shrink_masks(sample.masks[keep], side),
            }
        )
    return targets


def exemplar_boxes(
    targets: list[dict[str, torch.Tensor]], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ground-truth box per present category as a geometric prompt (``text+exemplar``).

    Returns ``input_boxes`` ``(C, 1, 4)`` normalised (cx, cy, w, h), as ``Sam3Model`` takes
    them, and ``input_boxes_labels`` ``(C, 1)``: 1 where a box was drawn (uniformly among the
    category's instances), :data:`EXEMPLAR_PAD_LABEL` where the category is absent.
    """
    boxes = torch.zeros(len(targets), 1, 4)
    labels = torch.full((len(targets), 1), EXEMPLAR_PAD_LABEL, dtype=torch.int64)
    for row, target in enumerate(targets):
        if len(target["boxes"]):
            pick = int(torch.randint(len(target["boxes"]), (1,), generator=generator))
            x1, y1, x2, y2 = target["boxes"][pick].tolist()
            boxes[row, 0] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
            labels[row, 0] = 1
    return boxes, labels


def choose_rows(
    targets: list[dict[str, torch.Tensor]], negatives: int | None, generator: torch.Generator
) -> list[int]:
    """The categories an image is asked for: every present one and, of the absent ones, all
    (``negatives=None``) or ``negatives`` drawn uniformly; in category order."""
    absent = [c for c, t in enumerate(targets) if len(t["boxes"]) == 0]
    if negatives is not None and len(absent) > negatives:
        pick = torch.randperm(len(absent), generator=generator)[:negatives].tolist()
        dropped = set(absent) - {absent[i] for i in pick}
        return [c for c in range(len(targets)) if c not in dropped]
    return list(range(len(targets)))


class TextPromptDataset(torch.utils.data.Dataset):
    """A dataset of :class:`~samtune.data.Sample` as SAM 3 trains on it by category name.

    Item ``i``: ``pixel_values`` ``(3, S, S)`` float32; ``phrase_index`` ``(R,)`` int64, the
    categories (indices into ``category_ids``) the image is asked for (:func:`choose_rows`:
    all of them unless ``negatives`` caps the absent ones); ``targets``, one per asked category
    (:func:`image_targets`); with ``exemplar``, ``input_boxes`` ``(R, 1, 4)`` and
    ``input_boxes_labels`` ``(R, 1)`` (:func:`exemplar_boxes`). What is drawn depends on
    ``seed``, the epoch and ``i`` only.
    """

    def __init__(
        self,
        dataset: Any,
        preprocess: PreprocessConfig,
        category_ids: list[int],
        side: int,
        exemplar: bool = False,
        seed: int = 0,
        negatives: int | None = None,
    ) -> None:
        self.dataset, self.preprocess, self.category_ids = dataset, preprocess, list(category_ids)
        self.side, self.exemplar, self.seed, self.epoch = side, exemplar, seed, 0
        self.negatives = negatives

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from ..data.transforms import preprocess_image

        sample = self.dataset[index]
        pixel_values, _ = preprocess_image(sample.image, self.preprocess)
        g = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) * 1_000_003 + index)
        targets = image_targets(sample, self.category_ids, self.side)
        rows = choose_rows(targets, self.negatives, g)
        item: dict[str, Any] = {
            "pixel_values": pixel_values,
            "phrase_index": torch.tensor(rows, dtype=torch.int64),
            "targets": [targets[c] for c in rows],
        }
        if self.exemplar:
            item["input_boxes"], item["input_boxes_labels"] = exemplar_boxes(item["targets"], g)
        return item


def collate_text(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack :class:`TextPromptDataset` items into one batch of rows, image by image:
    ``pixel_values`` ``(B, 3, S, S)``; ``image_index`` and ``phrase_index`` ``(R,)`` (row ``r``
    is image ``image_index[r]`` asked for phrase ``phrase_index[r]``); ``targets`` a list of
    ``R``; exemplar tensors concatenated to ``R`` rows."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "image_index": torch.cat(
            [torch.full_like(item["phrase_index"], b) for b, item in enumerate(items)]
        ),
        "phrase_index": torch.cat([item["phrase_index"] for item in items]),
        "targets": [target for item in items for target in item["targets"]],
    }
    for key in ("input_boxes", "input_boxes_labels"):
        if key in items[0]:
            out[key] = torch.cat([item[key] for item in items])
    return out


# --------------------------------------------------------------------------- the module


class Sam3TextStep(nn.Module):
    """Everything of one SAM 3 step that needs gradients, in one forward (what DDP wraps).

    ``Sam3TextStep(model, phrases, tokenize)`` tokenizes the ``C`` phrases once.
    ``forward(pixel_values, image_index, phrase_index)`` returns ``Sam3Model``'s outputs for
    the ``R`` rows (default: every image asked for every phrase, ``R = B x C``).
    ``text_encodings`` counts the phrases run through the text encoder (tests, benches).
    """

    def __init__(self, sam: nn.Module, phrases: list[str], tokenize: Tokenize) -> None:
        super().__init__()
        self.sam = sam
        self.phrases = list(phrases)
        input_ids, attention_mask = tokenize(self.phrases)
        if input_ids.dim() != 2 or input_ids.shape[0] != len(self.phrases):
            raise ConfigError(
                f"the tokenizer must return input_ids (C, L) for C = {len(self.phrases)} phrases; "
                f"found {tuple(input_ids.shape)}"
            )
        self.register_buffer("input_ids", input_ids.long(), persistent=False)
        self.register_buffer("attention_mask", attention_mask.long(), persistent=False)
        self._text_hidden: torch.Tensor | None = None
        self.text_encodings = 0

    def _trains(self, module: nn.Module) -> bool:
        return any(p.requires_grad for p in module.parameters())

    def text_hidden(self) -> torch.Tensor:
        """The text encoder's ``last_hidden_state`` ``(C, L, D)``: cached while it is frozen."""
        encoder = self.sam.text_encoder
        if self._text_hidden is not None and not self._trains(encoder):
            return self._text_hidden
        frozen = not self._trains(encoder)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            hidden = encoder(
                input_ids=self.input_ids, attention_mask=self.attention_mask, return_dict=True
            ).last_hidden_state
        self.text_encodings += len(self.phrases)
        self._text_hidden = hidden.detach() if frozen else None
        return hidden

    def forward(
        self,
        pixel_values: torch.Tensor,
        image_index: torch.Tensor | None = None,
        phrase_index: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_boxes_labels: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """``pixel_values`` ``(B, 3, S, S)``; ``image_index``, ``phrase_index`` ``(R,)`` int64
        (both or neither); optional exemplar prompts ``(R, 1, 4)`` normalised cxcywh and labels
        ``(R, 1)``. Returns ``pred_logits`` ``(R, Q)``, ``presence_logits`` ``(R, 1)``,
        ``pred_boxes`` ``(R, Q, 4)`` normalised XYXY, ``pred_masks`` ``(R, Q, m, m)`` logits,
        and ``aux_outputs``: the first three for each earlier decoder layer, first to last
        (:class:`DecoderLayers`; the loss uses them when ``aux_loss`` is on)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        sam, device = self.sam, pixel_values.device
        if image_index is None or phrase_index is None:
            grid = torch.arange(pixel_values.shape[0] * len(self.phrases), device=device)
            image_index, phrase_index = grid // len(self.phrases), grid % len(self.phrases)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._trains(sam.vision_encoder)):
            vision = sam.get_vision_features(pixel_values=pixel_values)
        # index_select, not x[index]: its backward (index_add_) sums rows in a fixed order.
        rows = type(vision)(
            fpn_hidden_states=tuple(
                x.index_select(0, image_index) for x in vision.fpn_hidden_states
            ),
            fpn_position_encoding=tuple(
                x.index_select(0, image_index) for x in vision.fpn_position_encoding
            ),
        )
        hidden = self.text_hidden()
        text = BaseModelOutputWithPooling(
            last_hidden_state=hidden,
            pooler_output=sam.text_projection(hidden).index_select(0, phrase_index),
        )
        with DecoderLayers(sam) as layers:
            out = sam(
                vision_embeds=rows,
                text_embeds=text,
                attention_mask=self.attention_mask.index_select(0, phrase_index),
                input_boxes=input_boxes,
                input_boxes_labels=input_boxes_labels,
            )
        keys = ("pred_logits", "presence_logits", "pred_boxes", "pred_masks")
        return {**{key: out[key] for key in keys}, "aux_outputs": layers.outputs()[:-1]}


# --------------------------------------------------------------------------- decoder layers


class DecoderLayers:
    """Every DETR decoder layer's predictions, recorded during one ``Sam3Model`` forward.

    ``Sam3Model`` computes each layer's class logits and boxes (``all_pred_logits``,
    ``all_pred_boxes``, transformers 5.25 ``modeling_sam3.py``) and returns only the last
    layer's; its ``decoder_reference_boxes`` are each layer's *input* boxes and the earlier
    layers' presence logits are not returned at all. While the context is open, forward hooks
    keep what the model computes anyway: the decoder's output (``intermediate_hidden_states``
    ``(L, R, Q, D)``, ``reference_boxes`` ``(L, R, Q, 4)`` cxcywh, ``presence_logits``
    ``(L, R, 1)``), the scoring head's logits of every layer ``(L, R, Q, 1)`` and the box
    head's offsets for every layer ``(L, R, Q, 4)``. :meth:`outputs` finishes the boxes with
    ``Sam3Model``'s own lines (``(inverse_sigmoid(reference) + offsets).sigmoid()``, then XYXY),
    so its last entry equals ``Sam3Model``'s ``pred_logits``, ``presence_logits`` and
    ``pred_boxes`` exactly (``tests/test_sam3_aux.py``).
    """

    def __init__(self, sam: nn.Module) -> None:
        self.sam, self.found, self._handles = sam, {}, []

    def __enter__(self) -> DecoderLayers:
        decoder, found = self.sam.detr_decoder, self.found
        found.clear()

        def keep(name: str) -> Callable:
            return lambda module, args, output: found.__setitem__(name, output)

        def offsets(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            layers = found.get("decoder")  # the box head's call on every layer's states
            if layers is not None and args and args[0] is layers.intermediate_hidden_states:
                found["offsets"] = output

        self._handles = [
            decoder.register_forward_hook(keep("decoder")),
            self.sam.dot_product_scoring.register_forward_hook(keep("logits")),
            decoder.box_head.register_forward_hook(offsets),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def outputs(self) -> list[dict[str, torch.Tensor]]:
        """One dict per decoder layer, first to last: ``pred_logits`` ``(R, Q)``,
        ``presence_logits`` ``(R, 1)``, ``pred_boxes`` ``(R, Q, 4)`` normalised XYXY.

        Raises:
            RunError: the forward did not run the decoder, scoring and box heads as
                ``Sam3Model`` of transformers 5.25 does (another transformers version).
        """
        from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

        missing = [k for k in ("decoder", "logits", "offsets") if k not in self.found]
        if missing:
            raise RunError(
                f"Sam3Model's forward did not compute every decoder layer's {missing[0]} as "
                "transformers 5.25 does: train with sam3_loss aux_loss: false, or use "
                "transformers 5.25"
            )
        decoder = self.found["decoder"]
        boxes = (inverse_sigmoid(decoder.reference_boxes) + self.found["offsets"]).sigmoid()
        boxes, logits = box_cxcywh_to_xyxy(boxes), self.found["logits"].squeeze(-1)
        return [
            {"pred_logits": logits[i], "presence_logits": presence, "pred_boxes": boxes[i]}
            for i, presence in enumerate(decoder.presence_logits)
        ]


# --------------------------------------------------------------------------- the loss


def text_step_loss(
    outputs: dict[str, torch.Tensor], targets: list[dict], cfg: Sam3LossConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``sam3_loss`` of one step's rows: ``(total, mean matched box IoU, every term)``.

    The IoU (of each ground-truth box and the query matched to it, no gradient) is what the
    progress bar and ``train/iou`` show; 0 when no row has an instance.
    """
    cfg = cfg or Sam3LossConfig()
    terms = sam3_loss(outputs, targets, cfg)
    with torch.no_grad():
        logits = outputs["pred_logits"].detach().float().reshape(len(targets), -1)
        if cfg.joint_scores:
            presence = outputs["presence_logits"].detach().float().reshape(-1)
            logits = joint_logits(logits, presence)
        boxes = outputs["pred_boxes"].detach().float()
        gt = [t["boxes"].to(boxes) for t in targets]
        matches = hungarian_match(logits, boxes, gt, cfg.matcher)
        ious = [matched_box_iou(boxes[row, q], gt[row][t])[0] for row, (q, t) in enumerate(matches)]
        iou = torch.cat(ious).mean() if sum(len(i) for i in ious) else boxes.new_zeros(())
    return terms["total"], iou, terms


__all__ = [
    "DecoderLayers",
    "Sam3TextStep",
    "TextPromptDataset",
    "Tokenize",
    "category_phrases",
    "choose_rows",
    "collate_text",
    "exemplar_boxes",
    "has_text_encoder",
    "image_targets",
    "load_tokenizer",
    "mask_side",
    "sam3_preprocess",
    "shrink_masks",
    "text_step_loss",
]
