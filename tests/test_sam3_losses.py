"""SAM 3's matcher and loss terms (samtune.train.sam3_matching / sam3_losses) against Meta's.

The oracle is Meta's ``sam3`` package (PyPI ``sam3==0.1.4``): ``sam3/train/matcher.py``
(``BinaryHungarianMatcherV2``) and ``sam3/train/loss/loss_fns.py`` (``IABCEMdetr``, ``Boxes``,
``Masks``) run through ``sam3/train/loss/sam3_loss.py`` (``Sam3LossWrapper``). It pins older
numpy / tqdm / typing_extensions / huggingface_hub than samtune's environment, so it is not in
the ``dev`` extra; the oracle tests run where it is importable, e.g.::

    pip install --no-deps --target /tmp/oracle-sam3 sam3 torchmetrics lightning_utilities
    PYTHONPATH=/tmp/oracle-sam3 python -m pytest -m slow tests/test_sam3_losses.py

Only the four files above (and what they import) are loaded: ``sam3/__init__`` builds the whole
model. Meta's Triton focal-loss kernels need CUDA; on a CPU the oracle runs the same function's
pure-torch branch (``sigmoid_focal_loss(..., triton=False)``), the formula the kernel implements.

The fast tests compare with numbers Meta's code gave on the cases of :func:`make_case`: printed by
``python tests/test_sam3_losses.py`` (the ``__main__`` block below) with the oracle importable.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import sys
import types

import pytest
import torch

from samtune.errors import ConfigError, InputError, RunError
from samtune.train.sam3_losses import Sam3LossConfig, joint_logits, sam3_loss
from samtune.train.sam3_matching import MatcherWeights, hungarian_match, matching_cost

TERMS = ("loss_ce", "presence_loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice")


def _cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _random_cxcywh(gen: torch.Generator, *shape: int) -> torch.Tensor:
    centre = 0.2 + 0.6 * torch.rand(*shape, 2, generator=gen)
    size = 0.05 + 0.35 * torch.rand(*shape, 2, generator=gen)
    return torch.cat([centre, size], dim=-1)


def make_case(
    seed: int, counts: tuple[int, ...], queries: int = 12, aux: int = 2
) -> tuple[dict, list, dict]:
    """Random SAM 3 outputs and targets: ``B = len(counts)`` rows, ``counts[b]`` instances each.

    Returns ``(outputs, targets, cxcywh)``: outputs and targets in samtune's format (boxes
    normalised XYXY, masks 8x8 logits, target masks 16x16), and the (cx, cy, w, h) boxes the
    XYXY ones were made from (what Meta's trainer holds).
    """
    gen = torch.Generator().manual_seed(seed)
    batch = len(counts)
    layers = []
    for _ in range(aux + 1):
        boxes = _random_cxcywh(gen, batch, queries)
        layers.append(
            {
                "pred_logits": 2 * torch.randn(batch, queries, generator=gen),
                "presence_logits": 2 * torch.randn(batch, 1, generator=gen),
                "pred_boxes": _cxcywh_to_xyxy(boxes),
                "cxcywh": boxes,
            }
        )
    gt = [_random_cxcywh(gen, n) for n in counts]
    targets = [
        {"boxes": _cxcywh_to_xyxy(g), "masks": torch.rand(len(g), 16, 16, generator=gen) > 0.6}
        for g in gt
    ]
    outputs = {k: v for k, v in layers[-1].items() if k != "cxcywh"}
    outputs["pred_masks"] = 3 * torch.randn(batch, queries, 8, 8, generator=gen)
    outputs["aux_outputs"] = [
        {k: v for k, v in layer.items() if k != "cxcywh"} for layer in layers[:-1]
    ]
    return outputs, targets, {"layers": [layer["cxcywh"] for layer in layers], "gt": gt}


# Scenarios: every category present; some absent (T_b = 0); the whole batch absent; more
# instances than queries in a row.
SCENARIOS = {
    "present": (3, 1, 2),
    "absent": (2, 0, 4, 0),
    "all_absent": (0, 0),
    "crowded": (14, 1),
}


# --- numbers from Meta's sam3 0.1.4 (see the module docstring for how they were produced) ---

# Seed 0, main decoder layer: per row, the matched (target, query) pairs.
META_MATCHES = {
    "present": [[(0, 5), (1, 11), (2, 4)], [(0, 7)], [(0, 5), (1, 10)]],
    "absent": [[(0, 1), (1, 4)], [], [(0, 0), (1, 9), (2, 10), (3, 8)], []],
    "all_absent": [[], []],
    "crowded": [
        [
            (0, 0),
            (1, 2),
            (2, 9),
            (3, 3),
            (4, 11),
            (5, 10),
            (6, 6),
            (8, 7),
            (9, 8),
            (11, 4),
            (12, 1),
            (13, 5),
        ],
        [(0, 9)],
    ],
}
# Seed 0, Sam3LossConfig() defaults: the main layer's terms and the total over all layers.
_NAMES = (*TERMS, "total")
META_TERMS = {
    "present": dict(
        zip(
            _NAMES,
            (0.0602338, 0.58575, 0.3015201, 0.8572593, 0.3720829, 0.5543148, 223.2780304),
            strict=True,
        )
    ),
    "absent": dict(
        zip(
            _NAMES,
            (0.0403861, 0.3724146, 0.3118148, 1.0092725, 0.3302475, 0.5799534, 231.0910645),
            strict=True,
        )
    ),
    "all_absent": dict(zip(_NAMES, (0.0, 0.5417986, 0.0, 0.0, 0.0, 0.0, 57.7295113), strict=True)),
    "crowded": dict(
        zip(
            _NAMES,
            (0.2381962, 0.3723421, 0.267767, 0.7527224, 0.3535489, 0.4746369, 172.4425201),
            strict=True,
        )
    ),
}


def _pairs(matches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[list[tuple[int, int]]]:
    return [sorted(zip(t.tolist(), q.tolist(), strict=True)) for q, t in matches]


def _joint(layer: dict) -> torch.Tensor:
    return joint_logits(layer["pred_logits"], layer["presence_logits"][:, 0])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_matcher_reproduces_metas_indices(scenario):
    outputs, targets, _ = make_case(0, SCENARIOS[scenario])
    matches = hungarian_match(_joint(outputs), outputs["pred_boxes"], [t["boxes"] for t in targets])
    assert _pairs(matches) == META_MATCHES[scenario]
    assert all(t.tolist() == sorted(t.tolist()) for _, t in matches)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_term_reproduces_metas(scenario):
    outputs, targets, _ = make_case(0, SCENARIOS[scenario])
    losses = sam3_loss(outputs, targets)
    for name, expected in META_TERMS[scenario].items():
        assert losses[name].item() == pytest.approx(expected, rel=1e-5, abs=1e-6), name


def test_matcher_is_the_cheapest_assignment():
    """Brute force over every injective assignment of a small cost matrix: an oracle of its own."""
    outputs, targets, _ = make_case(3, (3,), queries=5, aux=0)
    logits, boxes, gt = _joint(outputs)[0], outputs["pred_boxes"][0], targets[0]["boxes"]
    cost = matching_cost(logits, boxes, gt)
    best = min(
        sum(cost[q, t] for t, q in enumerate(perm)) for perm in itertools.permutations(range(5), 3)
    )
    ((queries, target_idx),) = hungarian_match(logits[None], boxes[None], [gt])
    assert cost[queries, target_idx].sum() == pytest.approx(float(best), abs=1e-6)


def test_matcher_with_more_instances_than_queries_matches_every_query():
    outputs, targets, _ = make_case(1, (7,), queries=4, aux=0)
    ((queries, target_idx),) = hungarian_match(
        outputs["pred_logits"], outputs["pred_boxes"], [targets[0]["boxes"]]
    )
    assert sorted(queries.tolist()) == [0, 1, 2, 3]
    assert len(set(target_idx.tolist())) == 4 and target_idx.tolist() == sorted(target_idx.tolist())


def test_matcher_takes_q_by_1_logits_and_zero_targets():
    outputs, _, _ = make_case(2, (0, 0), aux=0)
    matches = hungarian_match(
        outputs["pred_logits"][..., None], outputs["pred_boxes"], [torch.zeros(0, 4)] * 2
    )
    assert [(q.numel(), t.numel(), q.dtype) for q, t in matches] == [(0, 0, torch.long)] * 2


def test_default_config_is_metas():
    cfg = Sam3LossConfig()
    assert cfg.weights() == {
        "loss_ce": 20.0,
        "presence_loss": 20.0,
        "loss_bbox": 5.0,
        "loss_giou": 2.0,
        "loss_mask": 200.0,
        "loss_dice": 10.0,
    }
    assert (cfg.pos_weight, cfg.pad_n_queries, cfg.presence_alpha, cfg.presence_gamma) == (
        10.0,
        200,
        0.5,
        0.0,
    )
    assert cfg.matcher == MatcherWeights(
        cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0
    )


@pytest.mark.parametrize(
    "change, words",
    [
        ({"weight_giou": -1.0}, ["loss_giou", ">= 0", "-1.0"]),
        ({"weight_ce": float("nan")}, ["loss_ce", "nan"]),
        ({"pad_n_queries": 0}, ["pad_n_queries", "found 0"]),
        ({"mask_alpha": 1.5}, ["mask_alpha", "[0, 1]", "1.5"]),
    ],
)
def test_bad_config_values_are_config_errors(change, words):
    with pytest.raises(ConfigError) as info:
        Sam3LossConfig(**change)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_absent_category_trains_presence_only():
    """A row without instances: presence target 0 and nothing else (Meta's ``keep_loss``)."""
    outputs, targets, _ = make_case(5, (0, 0), aux=0)
    losses = sam3_loss(outputs, targets)
    assert all(float(losses[k]) == 0.0 for k in TERMS if k != "presence_loss")
    presence = outputs["presence_logits"][:, 0]
    expected = 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(presence, torch.zeros(2))
    assert float(losses["presence_loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(losses["total"]) == pytest.approx(math.sqrt(2) * 20 * float(expected), rel=1e-6)


def test_total_is_the_weighted_sum_and_gradients_reach_every_output():
    outputs, targets, _ = make_case(6, (2, 0, 1))
    for key in ("pred_logits", "presence_logits", "pred_boxes", "pred_masks"):
        outputs[key].requires_grad_(True)
    losses = sam3_loss(outputs, targets)
    weights = Sam3LossConfig().weights()
    weighted = sum(weights[k.split("_aux_")[0]] * v for k, v in losses.items() if k != "total")
    assert losses["total"].item() == pytest.approx(math.sqrt(3) * weighted.item(), rel=1e-6)
    assert {k for k in losses if "_aux_" in k} == {
        f"{t}_aux_{i}" for t in TERMS[:4] for i in (0, 1)
    }
    losses["total"].backward()
    assert all(
        outputs[k].grad.abs().sum() > 0
        for k in ("pred_logits", "presence_logits", "pred_boxes", "pred_masks")
    )


def test_without_pred_masks_the_mask_terms_are_zero():
    outputs, targets, _ = make_case(7, (2, 1), aux=0)
    del outputs["pred_masks"]
    for target in targets:
        del target["masks"]
    losses = sam3_loss(outputs, targets)
    assert float(losses["loss_mask"]) == 0.0 and float(losses["loss_dice"]) == 0.0
    assert float(losses["loss_bbox"]) > 0


def test_num_boxes_divides_the_box_and_mask_terms():
    """A multi-process caller passes the averaged count (Meta's ``normalization: global``)."""
    outputs, targets, _ = make_case(11, (2, 1), aux=0)
    local, halved = sam3_loss(outputs, targets), sam3_loss(outputs, targets, num_boxes=6.0)
    for name in ("loss_bbox", "loss_giou", "loss_mask", "loss_dice"):
        assert halved[name].item() == pytest.approx(local[name].item() / 2, rel=1e-6)
    assert halved["loss_ce"].item() == local["loss_ce"].item()


@pytest.mark.slow  # importing transformers' modeling_sam3 takes seconds
def test_takes_sam3models_output_object():
    from transformers.models.sam3.modeling_sam3 import Sam3ImageSegmentationOutput

    outputs, targets, _ = make_case(12, (1, 2), aux=0)
    del outputs["aux_outputs"]
    expected = sam3_loss(outputs, targets)
    model_output = Sam3ImageSegmentationOutput(**outputs)
    assert sam3_loss(model_output, targets)["total"].item() == expected["total"].item()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda o, t: o.update(pred_boxes=o["pred_boxes"][:, :5]), ["pred_boxes", "(2, 5, 4)"]),
        (
            lambda o, t: o.update(presence_logits=o["presence_logits"][:1]),
            ["presence_logits", "(1, 1)"],
        ),
        (
            lambda o, t: o.update(pred_masks=o["pred_masks"][:, :, 0]),
            ["pred_masks", "(B, Q, h, w)"],
        ),
        (lambda o, t: o.pop("presence_logits"), ["presence_logits missing"]),
        (lambda o, t: t.pop(), ["one target per (image, phrase) row: 2", "found 1"]),
        (lambda o, t: t[0].update(boxes=t[0]["boxes"][:, :3]), ["boxes (T, 4) in row 0", "(2, 3)"]),
        (
            lambda o, t: t[1].update(masks=t[1]["masks"][:0]),
            ["masks (1, H, W) in row 1", "(0, 16, 16)"],
        ),
        (lambda o, t: t[0]["boxes"].__setitem__((0, 2), 0.0), ["x2 > x1", "row 0"]),
        (
            lambda o, t: o["aux_outputs"][1].update(pred_logits=o["pred_logits"][:1]),
            ["aux_outputs[1]"],
        ),
    ],
)
def test_shape_mismatches_are_input_errors(change, words):
    outputs, targets, _ = make_case(8, (2, 1))
    change(outputs, targets)
    with pytest.raises(InputError) as info:
        sam3_loss(outputs, targets)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize(
    "key, terms",
    [
        ("pred_logits", "loss_ce"),
        ("presence_logits", "presence_loss"),
        ("pred_boxes", "loss_bbox, loss_giou"),
        ("pred_masks", "loss_mask and loss_dice"),
    ],
)
def test_nan_outputs_are_run_errors_naming_the_term(key, terms):
    outputs, targets, _ = make_case(9, (2, 1))
    outputs[key] = outputs[key].clone()
    outputs[key].view(-1)[0] = float("nan")
    with pytest.raises(RunError, match=f"non-finite outputs {key} \\(feeding {terms}"):
        sam3_loss(outputs, targets)


def test_nan_in_the_matcher_is_a_run_error():
    outputs, targets, _ = make_case(9, (2,), aux=0)
    with pytest.raises(RunError, match="pred_logits or pred_boxes"):
        hungarian_match(
            outputs["pred_logits"] * float("nan"), outputs["pred_boxes"], [targets[0]["boxes"]]
        )


def test_an_overflowing_term_is_a_run_error_naming_it():
    """Finite but huge mask logits: each pixel's focal loss is finite, their sum is not."""
    outputs, targets, _ = make_case(10, (1,), aux=0)
    outputs["pred_masks"] = torch.full_like(outputs["pred_masks"], 3e38)
    with pytest.raises(RunError, match="term loss_mask is inf"):
        sam3_loss(outputs, targets)


# ------------------------------- Meta's sam3 as the oracle -------------------------------


@pytest.fixture(scope="module")
def meta():
    """Meta's matcher and loss modules (``sam3.train``), without ``sam3/__init__``."""
    for name in ("sam3", "torchmetrics", "triton"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"the oracle needs {name} (see this file's docstring)")
    return load_meta()


def load_meta() -> types.SimpleNamespace:
    if "sam3" not in sys.modules:
        package = types.ModuleType("sam3")
        package.__path__ = list(importlib.util.find_spec("sam3").submodule_search_locations)
        sys.modules["sam3"] = package
    from sam3.model.model_misc import SAM3Output, inverse_sigmoid
    from sam3.train import matcher
    from sam3.train.loss import loss_fns
    from sam3.train.loss import sam3_loss as wrapper

    if not torch.cuda.is_available():  # Triton kernels need CUDA: Meta's own torch branch
        loss_fns.sigmoid_focal_loss = functools.partial(loss_fns.sigmoid_focal_loss, triton=False)
    return types.SimpleNamespace(
        matcher=matcher,
        loss_fns=loss_fns,
        wrapper=wrapper,
        SAM3Output=SAM3Output,
        inverse_sigmoid=inverse_sigmoid,
    )


def meta_targets(targets: list[dict], gt_cxcywh: list[torch.Tensor]) -> dict:
    """The batched targets Meta's collator builds (``Sam3ImageTrainer.back_convert``)."""
    counts = torch.tensor([len(g) for g in gt_cxcywh])
    padded = torch.zeros(len(counts), int(counts.max()), 4)
    ids = torch.full((len(counts), int(counts.max())), -1)
    for b, g in enumerate(gt_cxcywh):
        padded[b, : len(g)], ids[b, : len(g)] = g, torch.arange(len(g))
    boxes = torch.cat(gt_cxcywh)
    return {
        "boxes": boxes,
        "boxes_xyxy": _cxcywh_to_xyxy(boxes),
        "boxes_padded": padded,
        "num_boxes": counts,
        "object_ids_padded": ids,
        "masks": torch.cat([t["masks"] for t in targets]),
        "is_valid_mask": torch.ones(len(boxes), dtype=torch.bool),
        "is_exhaustive": torch.ones(len(counts), dtype=torch.bool),
    }


def meta_matcher(meta):
    m = Sam3LossConfig().matcher
    return meta.matcher.BinaryHungarianMatcherV2(
        focal=True,
        cost_class=m.cost_class,
        cost_bbox=m.cost_bbox,
        cost_giou=m.cost_giou,
        alpha=m.alpha,
        gamma=m.gamma,
    )


def meta_layer(meta, layer: dict, cxcywh: torch.Tensor, batched: dict, matcher) -> dict:
    """One decoder layer as Meta's model hands it to the loss (joint scores, matched).

    The joint scores are ``sam3/model/sam3_image.py``'s ``_update_scores_and_boxes`` line, with
    Meta's ``inverse_sigmoid``.
    """
    joint = layer["pred_logits"][..., None].sigmoid() * layer[
        "presence_logits"
    ].sigmoid().unsqueeze(1)
    out = {
        "pred_logits": meta.inverse_sigmoid(joint).clamp(min=-10.0, max=10.0),
        "pred_boxes": cxcywh,
        "pred_boxes_xyxy": _cxcywh_to_xyxy(cxcywh),
        "presence_logit_dec": layer["presence_logits"],
    }
    out["indices"] = matcher(out, batched)
    return out


def meta_matches(indices, counts: list[int]) -> list[list[tuple[int, int]]]:
    """Meta's ``(batch_idx, src_idx, tgt_idx)`` as samtune's per-row sorted (target, query) pairs."""
    batch_idx, src_idx, tgt_idx = indices
    offsets = [sum(counts[:b]) for b in range(len(counts))]
    rows: list[list[tuple[int, int]]] = [[] for _ in counts]
    for k, (b, q) in enumerate(zip(batch_idx.tolist(), src_idx.tolist(), strict=True)):
        target = tgt_idx[k].item() - offsets[b] if tgt_idx is not None else len(rows[b])
        rows[b].append((target, q))
    return [sorted(r) for r in rows]


def meta_loss_wrapper(meta, matcher, **masks_options) -> object:
    """Meta's ``Sam3LossWrapper`` with the fine-tuning config's loss functions and samtune's
    default weights (``Sam3LossConfig``); ``masks_options`` go to Meta's ``Masks``."""
    lf, cfg = meta.loss_fns, Sam3LossConfig()
    return meta.wrapper.Sam3LossWrapper(
        loss_fns_find=[
            lf.Boxes(weight_dict={"loss_bbox": cfg.weight_bbox, "loss_giou": cfg.weight_giou}),
            lf.IABCEMdetr(
                weak_loss=False,
                weight_dict={"loss_ce": cfg.weight_ce, "presence_loss": cfg.weight_presence},
                pos_weight=cfg.pos_weight,
                alpha=cfg.iou_alpha,
                gamma=cfg.neg_gamma,
                use_presence=True,
                pos_focal=False,
                pad_n_queries=cfg.pad_n_queries,
                pad_scale_pos=1.0,
            ),
            lf.Masks(
                focal_alpha=0.25,
                focal_gamma=2.0,
                weight_dict={"loss_mask": cfg.weight_mask, "loss_dice": cfg.weight_dice},
                **masks_options,
            ),
        ],
        normalization="local",  # "global" on one process: the same count, without a process group
        matcher=matcher,
        scale_by_find_batch_size=True,
    )


def meta_losses(meta, outputs: dict, targets: list[dict], cxcywh: dict) -> tuple[dict, list]:
    """Meta's ``Sam3LossWrapper`` on the case, with the fine-tuning config's loss functions."""
    batched, matcher = meta_targets(targets, cxcywh["gt"]), meta_matcher(meta)
    layers = [*outputs["aux_outputs"], outputs]
    out = meta_layer(meta, outputs, cxcywh["layers"][-1], batched, matcher)
    out["pred_masks"] = outputs["pred_masks"]
    pairs = zip(layers[:-1], cxcywh["layers"][:-1], strict=True)
    out["aux_outputs"] = [meta_layer(meta, layer, c, batched, matcher) for layer, c in pairs]
    loss = meta_loss_wrapper(meta, matcher)
    losses = loss(meta.SAM3Output([[out]]), [batched])
    counts = [len(g) for g in cxcywh["gt"]]
    return losses, [meta_matches(layer["indices"], counts) for layer in [out, *out["aux_outputs"]]]


def _leaves(outputs: dict, cxcywh: dict) -> list[torch.Tensor]:
    """Make the case's logits, masks and (cx, cy, w, h) boxes leaves that collect gradients."""
    leaves = []
    for layer, boxes in zip([*outputs["aux_outputs"], outputs], cxcywh["layers"], strict=True):
        boxes.requires_grad_(True)
        layer["pred_boxes"] = _cxcywh_to_xyxy(boxes)  # Sam3Model's XYXY, from the same leaf
        leaves += [
            layer["pred_logits"].requires_grad_(True),
            layer["presence_logits"].requires_grad_(True),
            boxes,
        ]
    return [*leaves, outputs["pred_masks"].requires_grad_(True)]


def _compare(meta, seed: int, counts: tuple[int, ...]) -> None:
    """Equal matches on every layer; every term, the total and its gradients within 1e-5."""
    outputs, targets, cxcywh = make_case(seed, counts)
    leaves = _leaves(outputs, cxcywh)
    expected, expected_matches = meta_losses(meta, outputs, targets, cxcywh)
    gt_boxes = [t["boxes"] for t in targets]
    layers = [outputs, *outputs["aux_outputs"]]
    ours = [
        _pairs(hungarian_match(_joint(layer), layer["pred_boxes"], gt_boxes)) for layer in layers
    ]
    assert ours == expected_matches
    losses = sam3_loss(outputs, targets)
    expected["total"] = expected["core_loss"]
    for name, value in losses.items():
        assert value.item() == pytest.approx(expected[name].item(), rel=1e-5, abs=1e-5), name
    grads = torch.autograd.grad(losses["total"], leaves, allow_unused=True)
    meta_grads = torch.autograd.grad(expected["total"], leaves, allow_unused=True)
    for ours_grad, meta_grad in zip(grads, meta_grads, strict=True):
        if meta_grad is None:
            assert ours_grad is None or not ours_grad.any()
            continue
        torch.testing.assert_close(ours_grad, meta_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_matcher_and_every_term_agree_with_metas(meta, seed, scenario):
    _compare(meta, seed, SCENARIOS[scenario])


if __name__ == "__main__":  # print Meta's numbers for the fast tests (needs the oracle)
    oracle = load_meta()
    for name in SCENARIOS:
        outs, tgts, boxes = make_case(0, SCENARIOS[name])
        terms, matched = meta_losses(oracle, outs, tgts, boxes)
        print(name, matched[0])  # -> META_MATCHES
        print([round(terms[k].item(), 7) for k in (*TERMS, "core_loss")])  # -> META_TERMS
