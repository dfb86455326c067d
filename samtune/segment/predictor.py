"""Encode an image once, answer many prompts on it: SAM's interactive predictor.

:class:`Predictor` has the shape of segment-anything's ``SamPredictor`` and SAM 2's
``SAM2ImagePredictor``: :meth:`Predictor.set_image` runs the image encoder once and keeps
the embedding; every :meth:`Predictor.predict` call runs only the prompt encoder and mask
decoder on it, so a click loop never pays for the encoder twice. Each answer carries the
chosen candidate's low-resolution logits, which the next call takes back as ``mask_input``
to refine the same object. Works for every family (SAM, SAM-HQ, SAM 2) through
:mod:`samtune.models.sam_ops`; :func:`samtune.segment.prompted.predict` is the one-shot form of it.

Coordinates are original image pixels throughout; masks come back at the original size
(logits upsampled, padding removed, thresholded at 0 unless ``return_logits``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..data.images import read_image
from ..data.transforms import Geometry, preprocess_image
from ..errors import InputError
from ..models.family import family_of
from ..models.identity import preprocess_config
from ..models.sam_ops import (
    Embeddings,
    best_candidate,
    decode,
    encode_images,
    select_embeddings,
    to_model,
)
from ..models.text import check_geometric_prompts
from .prompted import Prediction, Prompts, prepare_prompts

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

LOGIT_CLAMP = 32.0
"""SAM 2's low-resolution logits are returned within +-32, as ``SAM2ImagePredictor`` returns
them, so an "object absent" answer (-1024 everywhere) fed back stays in range."""


@dataclass
class PredictorResult(Prediction):
    """One mask per prompt, in prompt order, and what to feed back.

    Attributes:
        masks: ``(N, H, W)`` at the original image size: bool, or float32 logits with
            ``return_logits``.
        scores: ``(N,)`` float32, the IoU head's estimate for each mask.
        low_res_logits: ``(N, r, r)`` float32, the chosen candidate's logits at the decoder's
            resolution (r = 256 for 1024-pixel models; SAM 2's clamped to +-32, as its own
            predictor does); pass them (or a row of them) back as ``mask_input`` with the
            same prompts plus new clicks.
    """

    low_res_logits: np.ndarray | None = None


class Predictor:
    """SAM on one image at a time: :meth:`set_image` once, then any number of :meth:`predict`.

    Example::

        predictor = samtune.Predictor(samtune.load_model("demo"))
        predictor.set_image(image)                        # HxWx3 uint8 RGB: the encoder runs here
        first = predictor.predict(points=[[[120, 80]]])   # one prompt, one positive click
        better = predictor.predict(
            points=[[[120, 80], [150, 95]]], point_labels=[[1, 0]],
            mask_input=first.low_res_logits,               # refine the previous answer
        )

    The model is run in eval mode without gradients (its mode is restored after each call).
    The stored embedding belongs to the weights at :meth:`set_image` time: call it again after
    changing the model.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        """``model``: a ``SamModel``, ``SamHQModel`` or ``Sam2Model`` (with or without an adapter)."""
        check_geometric_prompts(model, "prompting with points and boxes")
        self.model = model
        self.family = family_of(model)
        self.low_res_size = self.family.low_res_size(model.config)
        self.reset_image()

    def reset_image(self) -> None:
        """Forget the image and its embedding."""
        self._embeddings: Embeddings | None = None
        self._geometry: Geometry | None = None
        self._name = "the image"

    @property
    def is_image_set(self) -> bool:
        """Whether :meth:`set_image` has stored an embedding to prompt."""
        return self._embeddings is not None

    @property
    def original_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image set, in pixels."""
        return self._require_image().original_size

    @property
    def embeddings(self) -> Embeddings:
        """The stored encoder output for the image, batch 1 (:data:`samtune.models.sam_ops.Embeddings`)."""
        self._require_image()
        return self._embeddings

    def set_image(
        self, image: np.ndarray | PILImage | str | os.PathLike, *, name: str | None = None
    ) -> None:
        """Preprocess ``image`` and run the image encoder on it, once.

        Args:
            image: HxWx3 uint8 RGB array, a PIL image, or a path to an image file.
            name: how error messages name the image (default: its path, or "the image").

        Raises:
            InputError: an array that is not HxWx3 uint8 RGB.
            MissingFileError: an image path that does not exist.
            DataError: an image file that cannot be read.
        """
        rgb, read_as = read_image(image)
        pixel_values, geometry = preprocess_image(rgb, preprocess_config(self.model))
        with _inference(self.model):
            self._embeddings = encode_images(self.model, to_model(self.model, pixel_values[None]))
        self._geometry, self._name = geometry, name or read_as

    def predict(
        self,
        boxes: ArrayLike | None = None,
        points: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        mask_input: ArrayLike | torch.Tensor | None = None,
        *,
        multimask: bool = False,
        return_logits: bool = False,
        prompt_batch: int = 32,
    ) -> PredictorResult:
        """Masks for N prompts on the image set, from its stored embedding.

        Args:
            boxes: ``(N, 4)`` boxes, XYXY, in original image pixels.
            points: ``(N, K, 2)`` (x, y) points in original image pixels, K per prompt (or
                ``(N, 2)``: one point per prompt). With boxes too, prompt i is box i and
                point group i.
            point_labels: ``(N, K)`` labels, 1 positive (on the object) / 0 negative
                (default: all 1).
            mask_input: ``(N, r, r)`` or ``(N, 1, r, r)`` low-resolution mask logits, one per
                prompt, usually the ``low_res_logits`` of a previous call (r =
                :attr:`low_res_size`, 256 for 1024-pixel models).
            multimask: ask for 3 candidates per prompt and keep the one the IoU head rates
                best (for a single ambiguous click); otherwise the single-mask output.
            return_logits: masks as float32 logits instead of thresholding them at 0.
            prompt_batch: prompts per decoder call.

        Returns:
            :class:`PredictorResult`: ``masks`` ``(N, H, W)``, ``scores`` ``(N,)``,
            ``low_res_logits`` ``(N, r, r)``.

        Raises:
            InputError: no image set; a prompt that breaks a rule of
                :func:`samtune.segment.prompted.prepare_prompts` (shape, outside the image, inverted
                box, label other than 1/0); a ``mask_input`` of the wrong shape or count;
                ``prompt_batch`` below 1.
        """
        geometry = self._require_image()
        prompts = prepare_prompts(
            boxes, points, point_labels, size=geometry.original_size, image=self._name
        )
        masks_in = self._mask_input(mask_input, prompts.n)
        if not isinstance(prompt_batch, int) or prompt_batch < 1:
            raise InputError(f"prompt_batch must be a whole number >= 1, found {prompt_batch!r}")
        with _inference(self.model):
            parts = [
                self._decode(
                    prompts, masks_in, slice(s, s + prompt_batch), multimask, return_logits
                )
                for s in range(0, prompts.n, prompt_batch)
            ]
        masks, scores, low_res = (np.concatenate(p) for p in zip(*parts, strict=True))
        return PredictorResult(masks, scores.astype(np.float32), low_res)

    def _require_image(self) -> Geometry:
        if self._geometry is None:
            raise InputError(
                "no image set: call predictor.set_image(image) before predictor.predict(...)"
            )
        return self._geometry

    def _mask_input(
        self, mask_input: ArrayLike | torch.Tensor | None, n: int
    ) -> torch.Tensor | None:
        """``mask_input`` as (N, 1, r, r) float32, checked against the prompts and the model."""
        if mask_input is None:
            return None
        r = self.low_res_size
        try:
            if torch.is_tensor(mask_input):
                masks = mask_input.detach().to("cpu", torch.float32)
            else:
                masks = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
        except (TypeError, ValueError):
            raise InputError(
                f"mask_input must be numbers (low-res logits), found {mask_input!r}"
            ) from None
        if masks.ndim == 3:
            masks = masks[:, None]
        if masks.shape != (n, 1, r, r):
            raise InputError(
                f"mask_input must be ({n}, {r}, {r}) or ({n}, 1, {r}, {r}): one {r}x{r} "
                f"low-resolution logit map per prompt (a previous call's low_res_logits); "
                f"found shape {tuple(masks.shape)}"
            )
        return masks

    def _decode(
        self,
        prompts: Prompts,
        masks_in: torch.Tensor | None,
        chunk: slice,
        multimask: bool,
        return_logits: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder call: masks (n, H, W) (bool, or logits), scores (n,), low-res logits
        (n, r, r). Thresholded here, chunk by chunk, so full-size float masks never pile up."""
        embeddings, kw = self._embeddings, self._prompt_tensors(prompts, chunk)
        if masks_in is not None:  # decode takes mask inputs with one embedding per prompt
            kw["mask_inputs"] = to_model(self.model, masks_in[chunk])
            one = torch.zeros(len(kw["mask_inputs"]), dtype=torch.long, device=_device(self.model))
            embeddings = select_embeddings(embeddings, one)
        logits, iou = decode(self.model, embeddings, multimask=multimask, empty_absent=True, **kw)
        best = best_candidate(logits.float(), iou.float())
        masks = self._geometry.logits_to_original(best.masks.cpu())
        masks = masks if return_logits else masks > 0
        low_res = best.masks.cpu()
        if self.family.sam2_like:  # as SAM2ImagePredictor: no-object logits are fed back clamped
            low_res = low_res.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        return masks.numpy(), best.scores.cpu().numpy(), low_res.numpy()

    def _prompt_tensors(self, prompts: Prompts, chunk: slice) -> dict[str, torch.Tensor]:
        """``decode``'s ``boxes``/``points``/``labels`` for ``chunk``, in model pixels, on the model."""
        geometry, kw = self._geometry, {}
        if prompts.boxes is not None:
            kw["boxes"] = geometry.coords_to_model(torch.from_numpy(prompts.boxes[chunk]))
        if prompts.points is not None:
            kw["points"] = geometry.coords_to_model(torch.from_numpy(prompts.points[chunk]))
            kw["labels"] = torch.from_numpy(prompts.labels[chunk])
        return {k: to_model(self.model, v) for k, v in kw.items()}


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the block; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


__all__ = ["Predictor", "PredictorResult"]
