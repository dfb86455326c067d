"""SAM 3's auxiliary (earlier decoder layer) losses: samtune.train.sam3_step.DecoderLayers and
``Sam3LossConfig.aux_loss``.

``Sam3Model`` (transformers 5.25) computes every DETR decoder layer's class logits and boxes but
returns only the last layer's; :class:`~samtune.train.sam3_step.DecoderLayers` records them
during the forward. The oracle is Meta's ``sam3`` 0.1.4: its model's
``Sam3Image._update_scores_and_boxes`` (``sam3/model/sam3_image.py``, which builds
``aux_outputs`` from the decoder's per-layer states while training) fed the tiny model's
decoder states, then ``Sam3LossWrapper`` with the fine-tuning config's loss functions (as in
``tests/test_sam3_losses.py``, whose docstring says how to make ``sam3`` importable)::

    PYTHONPATH=.:/tmp/oracle-sam3 python -m pytest -m slow tests/test_sam3_aux.py

The fast test compares with the numbers Meta's code gave on :func:`aux_case`, printed by
``python tests/test_sam3_aux.py`` (the ``__main__`` block) with the oracle importable.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_sam3_losses import load_meta, meta_loss_wrapper, meta_matcher, meta_targets
from test_sam3_training import PHRASES, batch_for, scene, tiny_sam3_config, word_tokenize

from samtune.errors import ConfigError
from samtune.train.sam3_losses import Sam3LossConfig, sam3_loss
from samtune.train.sam3_options import sam3_loss_config
from samtune.train.sam3_step import DecoderLayers, Sam3TextStep, text_step_loss

LAYERS = 3
BASE = ("loss_ce", "presence_loss", "loss_bbox", "loss_giou")
# Meta's Sam3LossWrapper on aux_case() (python tests/test_sam3_aux.py with sam3 0.1.4 importable).
META_TERMS = {
    "loss_ce": 0.0209007,
    "presence_loss": 0.3723676,
    "loss_bbox": 1.3675994,
    "loss_giou": 1.6490947,
    "loss_mask": 0.1186873,
    "loss_dice": 0.7904153,
    "loss_ce_aux_0": 0.0215891,
    "presence_loss_aux_0": 0.3338869,
    "loss_bbox_aux_0": 0.8347998,
    "loss_giou_aux_0": 1.045341,
    "loss_ce_aux_1": 0.0224776,
    "presence_loss_aux_1": 0.3923669,
    "loss_bbox_aux_1": 1.0837862,
    "loss_giou_aux_1": 1.5783072,
    "total": 195.6892548,
}


def tiny_model(layers: int = LAYERS, seed: int = 0):
    """The tiny SAM 3 of ``test_sam3_training`` with ``layers`` DETR decoder layers, its
    decoder weights shaken (seeded) so that the layers' predictions differ."""
    from transformers import Sam3Model

    config = tiny_sam3_config()
    config.detr_decoder_config.num_layers = layers
    torch.manual_seed(seed)
    model = Sam3Model(config).train()
    with torch.no_grad():  # set the layers apart: at init every layer predicts nearly the same
        for param in model.detr_decoder.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return model


def aux_case(seed: int = 0):
    """``(model, step, batch)``: two scenes asked for three phrases (6 rows, 2 absent)."""
    model = tiny_model(seed=seed)
    step = Sam3TextStep(model, list(PHRASES.values()), word_tokenize)
    return model, step, batch_for(model, [scene(0), scene(1)])


# --------------------------------------------------------------------------- the layers


def test_last_recorded_layer_is_sam3models_own_output():
    model, step, batch = aux_case()
    ids, mask = step.input_ids.repeat(2, 1), step.attention_mask.repeat(2, 1)
    with DecoderLayers(model) as layers:
        out = model(
            pixel_values=batch["pixel_values"].repeat_interleave(3, 0),
            input_ids=ids,
            attention_mask=mask,
        )
    found = layers.outputs()
    assert len(found) == LAYERS
    assert torch.equal(found[-1]["pred_logits"], out.pred_logits)
    assert torch.equal(found[-1]["presence_logits"], out.presence_logits)
    assert torch.equal(found[-1]["pred_boxes"], out.pred_boxes)
    # each earlier layer's boxes are the next layer's reference boxes, which Sam3Model returns
    for i, layer in enumerate(found[:-1]):
        x1, y1, x2, y2 = layer["pred_boxes"].unbind(-1)
        cxcywh = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)
        torch.testing.assert_close(cxcywh, out.decoder_reference_boxes[i + 1])
        assert not torch.equal(layer["pred_logits"], found[-1]["pred_logits"])
    assert not model.detr_decoder._forward_hooks  # the hooks are gone after the forward


def test_step_returns_every_earlier_layer_and_the_loss_trains_them():
    model, step, batch = aux_case()
    outputs = step(batch["pixel_values"])
    assert len(outputs["aux_outputs"]) == LAYERS - 1
    for layer in outputs["aux_outputs"]:
        assert layer["pred_logits"].shape == outputs["pred_logits"].shape
        assert layer["presence_logits"].shape == outputs["presence_logits"].shape
        assert layer["pred_boxes"].shape == outputs["pred_boxes"].shape
    total, _, terms = text_step_loss(outputs, batch["targets"])
    aux = {f"{t}_aux_{i}" for t in BASE for i in range(LAYERS - 1)}
    assert aux <= set(terms) and not any(k.startswith("loss_mask_aux") for k in terms)
    off_cfg = Sam3LossConfig(aux_loss=False)
    off = sam3_loss(outputs, batch["targets"], off_cfg)
    assert not any("_aux_" in k for k in off)
    weights = off_cfg.weights()
    aux_sum = sum(weights[k.split("_aux_")[0]] * terms[k] for k in aux)
    expected = off["total"] + math.sqrt(len(batch["targets"])) * aux_sum
    torch.testing.assert_close(total, expected)
    # the first decoder layer's box head learns from its own aux terms
    grad = torch.autograd.grad(terms["loss_bbox_aux_0"], model.detr_decoder.box_head.parameters())
    assert any(g.abs().sum() > 0 for g in grad)


def test_aux_loss_option():
    assert Sam3LossConfig().aux_loss is True  # Meta's: Boxes and IABCEMdetr compute_aux=True
    assert sam3_loss_config({"aux_loss": False}).aux_loss is False
    with pytest.raises(ConfigError, match="aux_loss must be true or false"):
        sam3_loss_config({"aux_loss": "no"})


def test_aux_terms_equal_metas_recorded_numbers():
    _, step, batch = aux_case()
    terms = sam3_loss(step(batch["pixel_values"]), batch["targets"])
    assert set(terms) == set(META_TERMS)
    for name, value in META_TERMS.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-4, abs=1e-6), name


# --------------------------------------------------------------------------- Meta's oracle


def meta_outputs(meta, found: dict, pred_masks: torch.Tensor) -> dict:
    """Meta's model outputs (``Sam3Image._update_scores_and_boxes`` in training mode) from the
    tiny model's decoder states: every layer's hidden states, reference boxes and presence
    logits, the scoring head's per-layer logits and the model's box head."""
    import types

    from sam3.model.sam3_image import Sam3Image

    decoder = types.SimpleNamespace(
        dac=False, bbox_embed=found["box_head"], instance_bbox_embed=None
    )
    fake = types.SimpleNamespace(
        transformer=types.SimpleNamespace(decoder=decoder),
        training=True,
        use_dot_prod_scoring=True,
        dot_prod_scoring=lambda hs, prompt, mask: found["logits"],
        supervise_joint_box_scores=True,
        detach_presence_in_joint_score=False,
    )
    states = found["decoder"]
    out: dict = {}
    Sam3Image._update_scores_and_boxes(
        fake,
        out,
        states.intermediate_hidden_states,
        states.reference_boxes,
        None,
        None,
        dec_presence_out=states.presence_logits,
    )
    out["pred_masks"] = pred_masks
    return out


def meta_loss_terms(meta, step, batch) -> tuple[dict, dict, list]:
    """``(samtune's terms, Meta's terms, trainable parameters)`` on one forward of the step."""
    recorder = DecoderLayers(step.sam)
    with recorder:
        outputs = step(batch["pixel_values"])
    found = {**recorder.found, "box_head": step.sam.detr_decoder.box_head}
    out = meta_outputs(meta, found, outputs["pred_masks"])
    targets = batch["targets"]
    gt = [
        torch.cat(
            [(t["boxes"][:, :2] + t["boxes"][:, 2:]) / 2, t["boxes"][:, 2:] - t["boxes"][:, :2]], 1
        )
        for t in targets
    ]
    batched, matcher = meta_targets(targets, gt), meta_matcher(meta)
    for layer in [out, *out["aux_outputs"]]:
        layer["indices"] = matcher(layer, batched)
    wrapper = meta_loss_wrapper(meta, matcher, compute_aux=False)
    expected = wrapper(meta.SAM3Output([[out]]), [batched])
    expected["total"] = expected.pop("core_loss")
    params = [p for p in step.sam.parameters() if p.requires_grad]
    return sam3_loss(outputs, targets), expected, params


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_aux_terms_and_gradients_equal_metas(seed):
    for name in ("sam3", "torchmetrics", "triton"):
        pytest.importorskip(name)
    meta = load_meta()
    _, step, batch = aux_case(seed)
    ours, expected, params = meta_loss_terms(meta, step, batch)
    metrics = ("ce_f1", "presence_dec_acc")  # Meta's logged accuracies, not losses
    meta_aux = {k for k in expected if "_aux_" in k and not k.startswith(metrics)}
    assert meta_aux == {k for k in ours if "_aux_" in k}
    for name, value in ours.items():
        assert value.item() == pytest.approx(expected[name].item(), rel=1e-5, abs=1e-6), name
    grads = torch.autograd.grad(ours["total"], params, retain_graph=True, allow_unused=True)
    meta_grads = torch.autograd.grad(expected["total"], params, allow_unused=True)
    for g, m in zip(grads, meta_grads, strict=True):
        if m is None or g is None:
            assert (g is None or not g.any()) and (m is None or not m.any())
            continue
        scale = max(m.abs().max().item(), 1.0)  # float32 noise of a total ~200
        torch.testing.assert_close(g, m, rtol=1e-4, atol=1e-5 * scale)


if __name__ == "__main__":  # print Meta's numbers for the fast test (needs the oracle)
    _, case_step, case_batch = aux_case()
    case_ours, meta_terms, _ = meta_loss_terms(load_meta(), case_step, case_batch)
    print({k: round(meta_terms[k].item(), 7) for k in case_ours})  # -> META_TERMS
