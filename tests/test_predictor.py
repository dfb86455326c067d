"""samtune.Predictor: encode once, prompt many times, feed low-res logits back.

The oracles are segment-anything's own ``SamPredictor`` on the same weights
(``convert.build_meta_sam`` + ``hf_to_meta_state_dict``) and SAM 2's ``SAM2ImagePredictor`` on
a reference model the sam2 package builds; for every family, a click loop on one embedding
must give what :func:`samtune.segment.prompted.predict` gives for each prompt alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.errors import InputError
from samtune.models.convert import sam as convert
from samtune.models.loading import load_model
from samtune.segment.predictor import LOGIT_CLAMP, Predictor
from samtune.segment.prompted import predict

PRESETS = ["tiny", "tiny-hq", "tiny-sam2"]
# (boxes, points, labels): a box, a positive and a negative click, box + click
CLICKS = [
    ([[10.0, 8.0, 60.0, 50.0]], None, None),
    (None, [[[40.0, 30.0], [90.0, 70.0]]], [[1, 0]]),
    ([[30.0, 20.0, 110.0, 85.0]], [[[70.0, 50.0]]], [[1]]),
]


@pytest.fixture(scope="module")
def models():
    return {preset: load_model(preset, seed=0) for preset in PRESETS}


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)


@pytest.mark.parametrize("preset", PRESETS)
def test_a_click_loop_encodes_once_and_matches_predict(models, image, preset):
    model, calls = models[preset], []
    hook = model.vision_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        predictor = Predictor(model)
        predictor.set_image(image)
        answers = [predictor.predict(b, p, lab, multimask=p is not None) for b, p, lab in CLICKS]
        assert len(calls) == 1
        alone = [
            predict(model, image, boxes=b, points=p, point_labels=lab, multimask=p is not None)
            for b, p, lab in CLICKS
        ]
        assert len(calls) == 1 + len(CLICKS)  # the one-shot function encodes every time
    finally:
        hook.remove()
    r = predictor.low_res_size
    for answer, one_shot in zip(answers, alone, strict=True):
        assert answer.masks.shape == (1, 90, 120) and answer.masks.dtype == bool
        assert answer.low_res_logits.shape == (1, r, r)
        np.testing.assert_array_equal(answer.masks, one_shot.masks)
        np.testing.assert_allclose(answer.scores, one_shot.scores, atol=1e-6)
    assert len({a.masks.tobytes() for a in answers}) == len(CLICKS)  # each prompt its own mask


@pytest.mark.parametrize("preset", PRESETS)
def test_feeding_back_low_res_logits_changes_the_answer(models, image, preset):
    predictor = Predictor(models[preset])
    predictor.set_image(image)
    first = predictor.predict(points=[[[40.0, 30.0]]], multimask=True)
    second_click = {"points": [[[40.0, 30.0], [90.0, 70.0]]], "point_labels": [[1, 0]]}
    without = predictor.predict(**second_click)
    refined = predictor.predict(**second_click, mask_input=first.low_res_logits)
    again = predictor.predict(
        **second_click, mask_input=torch.from_numpy(first.low_res_logits)[:, None]
    )
    assert (refined.masks != without.masks).sum() > 50
    np.testing.assert_array_equal(again.masks, refined.masks)  # (N, 1, r, r) tensors too


def _meta_predictor(model):
    sam_predictor = pytest.importorskip("segment_anything").SamPredictor
    meta = convert.build_meta_sam(model.config)
    meta.load_state_dict(convert.hf_to_meta_state_dict(model.state_dict()))
    return sam_predictor(meta.eval())


def test_click_loop_matches_segment_anythings_predictor(models):
    """Meta's SamPredictor, same weights, same clicks, logits fed back the same way. The image
    is 96x128 at a 128-pixel model: padded, not resized, so both preprocess identically."""
    image = np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    meta = _meta_predictor(models["tiny"])
    meta.set_image(image)
    ours = Predictor(models["tiny"])
    ours.set_image(image)
    torch.testing.assert_close(ours.embeddings, meta.features, atol=1e-5, rtol=0)

    point, label = np.array([[40.0, 30.0]]), np.array([1])
    m_masks, m_scores, m_logits = meta.predict(point, label, multimask_output=True)
    first = ours.predict(points=[point], point_labels=[label], multimask=True)
    best = int(np.argmax(m_scores))
    _assert_same_answer(first, m_masks[best], m_scores[best], m_logits[best])

    points, labels = np.array([[40.0, 30.0], [90.0, 70.0]]), np.array([1, 0])
    box = np.array([20.0, 10.0, 100.0, 80.0])
    m_masks, m_scores, m_logits = meta.predict(
        points, labels, box, mask_input=m_logits[best][None], multimask_output=False
    )
    second = ours.predict([box], [points], [labels], mask_input=first.low_res_logits)
    _assert_same_answer(second, m_masks[0], m_scores[0], m_logits[0])
    m_plain, *_ = meta.predict(points, labels, box, multimask_output=False)
    assert (m_plain[0] != m_masks[0]).sum() > 50  # the fed-back mask mattered to Meta's too


@pytest.mark.slow  # builds a reference SAM 2 with the sam2 package (hydra): seconds
def test_click_loop_matches_sam2s_image_predictor(tmp_path):
    """SAM 2's own SAM2ImagePredictor on a reference model built by the sam2 package (as in
    test_convert_family), converted by samtune. A 64x64 image at a 64-pixel model: no resize,
    so both preprocess identically."""
    build = pytest.importorskip("sam2.build_sam")
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    from test_convert_family import S2_CONFIG, S2_OVERRIDES, S2_STATED, _perturb_

    from samtune.models.convert import sam2 as convert_sam2

    torch.manual_seed(0)
    ref = build.build_sam2(S2_CONFIG, None, device="cpu", hydra_overrides_extra=S2_OVERRIDES)
    ref = _perturb_(ref, seed=3).eval()
    torch.save({"model": ref.state_dict()}, tmp_path / "sam2.pt")
    ours = Predictor(convert_sam2.load_original(tmp_path / "sam2.pt", **S2_STATED))
    theirs = SAM2ImagePredictor(ref)
    theirs._bb_feat_sizes = [(16, 16), (8, 8), (4, 4)]  # it assumes 1024-pixel models
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    theirs.set_image(image)
    ours.set_image(image)

    point, label = np.array([[30.0, 20.0]]), np.array([1])
    t_masks, t_scores, t_logits = theirs.predict(point, label, multimask_output=True)
    first = ours.predict(points=[point], point_labels=[label], multimask=True)
    best = int(np.argmax(t_scores))
    _assert_same_answer(first, t_masks[best], t_scores[best], t_logits[best])

    points, labels = np.array([[30.0, 20.0], [50.0, 40.0]]), np.array([1, 0])
    t_masks, t_scores, t_logits = theirs.predict(
        points, labels, mask_input=t_logits[best][None], multimask_output=False
    )
    second = ours.predict(points=[points], point_labels=[labels], mask_input=first.low_res_logits)
    _assert_same_answer(second, t_masks[0], t_scores[0], t_logits[0])
    t_plain, *_ = theirs.predict(points, labels, multimask_output=False)
    assert (t_plain[0] != t_masks[0]).sum() > 50  # the fed-back mask mattered to SAM 2's too


def _assert_same_answer(ours, masks, score, logits) -> None:
    np.testing.assert_allclose(ours.low_res_logits[0], logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours.scores[0], score, atol=1e-4, rtol=0)
    assert (ours.masks[0] != masks).sum() <= 2  # a logit within 1e-4 of 0 may round either way


def test_return_logits_gives_the_masks_before_thresholding(models, image):
    predictor = Predictor(models["tiny"])
    predictor.set_image(image)
    masks = predictor.predict(boxes=[[10, 8, 60, 50], [30, 20, 110, 85]], prompt_batch=1)
    logits = predictor.predict(boxes=[[10, 8, 60, 50], [30, 20, 110, 85]], return_logits=True)
    assert logits.masks.dtype == np.float32 and logits.masks.shape == (2, 90, 120)
    np.testing.assert_array_equal(logits.masks > 0, masks.masks)


def test_sam2_feeds_back_logits_within_its_predictors_range(models, image):
    predictor = Predictor(models["tiny-sam2"])
    predictor.set_image(image)
    model = predictor.model
    with torch.no_grad():  # make the object-score head say "absent" for every prompt
        head = model.mask_decoder.pred_obj_score_head.proj_out
        saved = head.bias.clone()
        head.bias.fill_(-1e4)
        try:
            answer = predictor.predict(points=[[[40.0, 30.0]]])
        finally:
            head.bias.copy_(saved)
    assert not answer.masks.any()
    assert answer.low_res_logits.min() == -LOGIT_CLAMP


def test_the_model_mode_is_restored(image):
    model = load_model("tiny", seed=0).train()
    predictor = Predictor(model)
    predictor.set_image(image)
    predictor.predict(boxes=[[10, 8, 60, 50]])
    assert model.training


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda p: Predictor(p.model).predict(boxes=[[1, 1, 5, 5]]), ["no image set", "set_image"]),
        (lambda p: p.predict(boxes=[[1, 1, 500, 5]]), ["outside the image", "120x90"]),
        (
            lambda p: p.predict(boxes=[[1, 1, 5, 5]], mask_input=np.zeros((1, 16, 16))),
            ["mask_input", "(1, 32, 32)", "(1, 1, 16, 16)"],
        ),
        (
            lambda p: p.predict(boxes=[[1, 1, 5, 5]], mask_input=np.zeros((2, 32, 32))),
            ["one 32x32", "found shape (2, 1, 32, 32)"],
        ),
    ],
    ids=["no-image", "outside", "mask-size", "mask-count"],
)
def test_bad_calls_say_what_was_expected(models, image, call, words):
    predictor = Predictor(models["tiny"])
    predictor.set_image(image)
    with pytest.raises(InputError) as err:
        call(predictor)
    for word in words:
        assert word in str(err.value)
