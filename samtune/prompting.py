"""How SAM is prompted: the prompt protocols (one grammar) and the corrective-click samplers.

- :func:`parse_prompt` -> :class:`Prompt`: ``box``, ``point``, ``points:P,N``, ``clicks:N``,
  ``interactive``, ``auto``, for training (``train.config.PROMPTS``), evaluation (:data:`EVAL_PROMPTS`),
  data batching (:data:`DATA_PROMPTS`) and the configs of each; every caller names the forms
  it accepts, and an error lists them.
- :func:`center_point`: the interior-most pixel of a mask (the ``point`` prompt, and where a
  corrective click goes).
- The two click samplers: :func:`next_click` (evaluation: the interior-most pixel of the
  larger error region, RITM) and :func:`sample_clicks` (training: uniform over the error, as
  SAM was trained, batched on the decoder's low-res grid).

Point labels follow SAM: 1 positive, 0 negative, :data:`PAD_LABEL` (-10) padding, a point the
model ignores. Importing this module loads neither torch nor transformers, so configs can check
prompts cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

PAD_LABEL = -10
"""The label of a padding point, which SAM ignores."""

PROMPT_FORMS = ("box", "point", "points:P,N", "clicks:N", "interactive", "auto", "text")
"""Every prompt protocol samtune knows."""
EVAL_PROMPTS = ("box", "point", "clicks:N", "auto", "text")
"""What :func:`samtune.evaluation.protocols.evaluate` runs."""
VALIDATION_PROMPTS = ("box", "point", "clicks:N")
"""What training's validation (``eval_prompt``) runs: the protocols that score each instance."""
DATA_PROMPTS = ("box", "point", "points:P,N")
"""What :class:`samtune.data.PromptedDataset` derives from masks."""
BOX_SOURCES = ("mask", "annotation")
"""Where a box prompt comes from: the mask's tight box, or the annotation's own COCO ``bbox``."""


class _Numbered(NamedTuple):
    form: str  # the grammar, e.g. "clicks:N"
    minima: tuple[int, ...]  # the smallest value of each number
    label: str  # what a malformed one is called
    meaning: str  # what the numbers mean
    example: str


_NUMBERED = {
    "points": _Numbered(
        "points:P,N",
        (1, 0),
        "points prompt",
        "P >= 1 positive and N >= 0 negative points",
        "points:3,1",
    ),
    "clicks": _Numbered("clicks:N", (1,), "click protocol", "N a positive integer", "clicks:5"),
}


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt protocol; ``str(prompt)`` gives its canonical text back.

    ``kind``: ``box`` (a box per instance), ``point`` (one positive point at the centre),
    ``points`` (``points:P,N``: P positive, N negative), ``clicks`` (``clicks:N``: N rounds
    of corrective clicks, evaluation) or ``interactive`` (a point, then simulated corrective
    clicks, training) or ``auto`` (no prompt: a grid of points, automatic mask generation,
    evaluation) or ``text`` (SAM 3 prompted by every category name, evaluation). ``args``: the numbers of ``points`` (P, N) and ``clicks`` (N,).
    """

    kind: str
    args: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(map(str, self.args))}" if self.args else self.kind

    @property
    def name(self) -> str:
        """The canonical text, e.g. ``"clicks:5"``."""
        return str(self)

    @property
    def n_pos(self) -> int:
        """Positive points of the first prompt: P for ``points``, 0 for ``box`` and ``auto``,
        else 1."""
        no_point = ("box", "auto", "text")
        return self.args[0] if self.kind == "points" else int(self.kind not in no_point)

    @property
    def n_neg(self) -> int:
        """Negative points of the first prompt (N of ``points:P,N``, else 0)."""
        return self.args[1] if self.kind == "points" else 0

    @property
    def clicks(self) -> int:
        """Click rounds of ``clicks:N`` (0 for the other kinds)."""
        return self.args[0] if self.kind == "clicks" else 0


def parse_prompt(
    text: str | Prompt,
    allowed: tuple[str, ...] = PROMPT_FORMS,
    *,
    name: str = "prompt",
    what: str | None = None,
    unknown: type[Exception] = ConfigError,
) -> Prompt:
    """Parse a prompt protocol such as ``"box"``, ``"points:3,1"`` or ``"clicks:5"``.

    Args:
        text: the protocol (case and surrounding spaces are ignored; ``click:N`` is
            ``clicks:N``), or a :class:`Prompt`, which is checked against ``allowed``.
        allowed: the forms the caller accepts, e.g. :data:`EVAL_PROMPTS`.
        name: the option the text came from, for messages (``eval_prompt``).
        what: what the caller calls a protocol, for messages (default ``name``).
        unknown: the exception for a form not in ``allowed`` (default ConfigError).

    Raises:
        unknown: a form not in ``allowed``; the message lists the allowed forms.
        ConfigError: an allowed form with missing or out-of-range numbers (``clicks:0``).
    """
    kinds = {form.split(":")[0] for form in allowed}
    if isinstance(text, Prompt):
        head, sep, rest = text.kind, ":" if text.args else "", ",".join(map(str, text.args))
    else:
        head, sep, rest = str(text).strip().lower().partition(":")
    kind = "clicks" if head == "click" else head
    if kind not in kinds or (sep and kind not in _NUMBERED):
        examples = [f"'{_NUMBERED[k].example}'" for k in _NUMBERED if k in kinds]
        hint = f" (e.g. {', '.join(examples)})" if examples else ""
        raise unknown(
            f"unknown {what or name} {str(text)!r}; {name} must be one of "
            f"{', '.join(allowed)}{hint}"
        )
    if kind not in _NUMBERED:
        return Prompt(kind)
    spec = _NUMBERED[kind]
    try:
        args = tuple(int(v) for v in rest.split(",")) if sep else ()
    except ValueError:
        args = ()
    if len(args) != len(spec.minima) or any(a < m for a, m in zip(args, spec.minima, strict=True)):
        raise ConfigError(
            f"invalid {spec.label} {str(text)!r}: expected {spec.form!r} with {spec.meaning}, "
            f"e.g. {spec.example!r}"
        )
    return Prompt(kind, args)


# --------------------------------------------------------------------------- centre and clicks


def distance_to_boundary(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each pixel inside ``mask`` to the nearest pixel outside it.

    The image border counts as outside, so a point is never placed on an edge of the image
    just because the object is cut by it.
    """
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def center_point(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the centre of the largest inscribed disc (max of the distance transform).

    When the maximum is a ridge (an elongated shape), the ridge pixel nearest to the ridge's
    mean is taken, so a rectangle gets its centre; the result is deterministic.
    Returns None for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    return _argmax_central(distance_to_boundary(mask))


def _argmax_central(dist: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(dist >= dist.max() - 1e-6)
    d2 = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    k = int(np.argmin(d2))
    return int(xs[k]), int(ys[k])


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int] | None:
    """The next simulated corrective click (RITM protocol, as in SAM's interactive training).

    The error regions are the false negatives (``gt & ~pred``, missed object) and false
    positives (``pred & ~gt``, false alarm). The click goes to the interior-most pixel of the
    larger error (the maximum of the distance transform over both): positive (label 1) when it
    lies in a miss, negative (label 0) when it lies in a false alarm.

    Args:
        pred: HxW bool predicted mask.
        gt: HxW bool ground-truth mask.

    Returns:
        ``(x, y, label)`` in pixel coordinates, or None when ``pred`` equals ``gt``.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same (H, W)")
    fn = gt & ~pred
    fp = pred & ~gt
    if not fn.any() and not fp.any():
        return None
    d_fn = distance_to_boundary(fn) if fn.any() else np.zeros(gt.shape)
    d_fp = distance_to_boundary(fp) if fp.any() else np.zeros(gt.shape)
    positive = d_fn.max() >= d_fp.max()
    x, y = _argmax_central(d_fn if positive else d_fp)
    return x, y, int(positive)


def sample_clicks(
    logits: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per prompt, uniform over the error region (as SAM was trained).

    The training counterpart of :func:`next_click`, batched and on the decoder's low-res grid.

    Args:
        logits: (M, r, r) mask logits (a prediction is ``logits > 0``).
        targets: (M, r, r) ground-truth masks (bool, or 0/1).
        generator: a CPU ``torch.Generator``; the clicks depend on it only.

    Returns:
        ``xy`` (M, 2) int64 (x, y) in low-res pixels and ``label`` (M,) int64: 1 for a missed
        pixel, 0 for a false one. A prompt without error gets a positive click on its target
        (anywhere on the grid when the target is empty). Both on ``logits``' device.
    """
    import torch

    pred = logits > 0
    gt = targets.bool()
    error = (pred ^ gt).flatten(1).float().cpu()
    fallback = gt.flatten(1).float().cpu()
    weights = torch.where(error.sum(1, keepdim=True) > 0, error, fallback)
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
    flat = torch.multinomial(weights, 1, generator=generator)[:, 0].to(logits.device)
    r = logits.shape[-1]
    ys, xs = flat // r, flat % r
    label = gt.flatten(1).gather(1, flat[:, None])[:, 0].long()
    return torch.stack([xs, ys], dim=1), label


__all__ = [
    "BOX_SOURCES",
    "DATA_PROMPTS",
    "EVAL_PROMPTS",
    "PAD_LABEL",
    "PROMPT_FORMS",
    "Prompt",
    "VALIDATION_PROMPTS",
    "center_point",
    "distance_to_boundary",
    "next_click",
    "parse_prompt",
    "sample_clicks",
]
