"""samtune.models.sam_ops: encode, decode (both prompt layouts), pick the best candidate."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_

from samtune.models.sam_ops import best_candidate, decode, encode_images, to_model


@pytest.fixture
def sam(tiny_model):
    return randomize_(tiny_model, seed=1).eval()


def _pixels(sam, b=2, seed=0):
    size = sam.config.vision_config.image_size
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_encode_images_is_get_image_embeddings(sam):
    pixels = _pixels(sam)
    with torch.no_grad():
        assert torch.equal(encode_images(sam, pixels), sam.get_image_embeddings(pixels))


def test_decode_layouts_agree_with_the_model(sam):
    with torch.no_grad():
        emb = encode_images(sam, _pixels(sam, 1))
        boxes = torch.tensor([[2.0, 3.0, 60.0, 70.0], [10.0, 10.0, 100.0, 90.0], [0, 0, 128, 128]])
        shared = decode(sam, emb, boxes=boxes)
        assert shared.pred_masks.shape[:2] == (3, 1) and shared.iou_scores.shape == (3, 1)
        ref = sam(image_embeddings=emb, input_boxes=boxes[None], multimask_output=False)
        assert torch.equal(shared.pred_masks, ref.pred_masks[0])
        assert torch.equal(shared.iou_scores, ref.iou_scores[0])
        # one embedding per prompt: the same masks, up to batching round-off
        each = decode(sam, emb.expand(3, -1, -1, -1), boxes=boxes)
        torch.testing.assert_close(each.pred_masks, shared.pred_masks, atol=1e-4, rtol=1e-4)

        points = torch.tensor([[[30.0, 40.0]], [[64.0, 64.0]]])
        labels = torch.ones(2, 1, dtype=torch.long)
        multi = decode(sam, emb, points=points, labels=labels, multimask=True)
        assert multi.pred_masks.shape[:2] == (2, 3) and multi.iou_scores.shape == (2, 3)
        r = multi.pred_masks.shape[-1]
        fed = decode(
            sam,
            emb.expand(2, -1, -1, -1),
            points=points,
            labels=labels,
            mask_inputs=torch.zeros(2, 1, r, r),
        )
        assert fed.pred_masks.shape == (2, 1, r, r)


def test_decode_rejects_bad_layouts(sam):
    with torch.no_grad():
        emb = encode_images(sam, _pixels(sam, 2))
        boxes = torch.tensor([[2.0, 3.0, 60.0, 70.0]] * 3)
        with pytest.raises(ValueError, match="2 embeddings for 3 prompts"):
            decode(sam, emb, boxes=boxes)
        with pytest.raises(ValueError, match="boxes and/or points"):
            decode(sam, emb)
        with pytest.raises(ValueError, match="one embedding per prompt"):
            decode(sam, emb[:1], boxes=boxes, mask_inputs=torch.zeros(3, 1, 32, 32))


def test_gradients_flow_through_decode_deterministically(sam):
    """index_select gathers per-prompt embeddings; the backward is the same every run."""
    sam.train()
    emb = encode_images(sam, _pixels(sam, 2)).detach()
    boxes = torch.tensor([[2.0, 3.0, 60.0, 70.0], [10, 10, 100, 90], [5, 5, 40, 40]])
    index = torch.tensor([0, 1, 1])

    def grad():
        leaf = emb.clone().requires_grad_(True)
        out = decode(sam, leaf.index_select(0, index), boxes=boxes, multimask=True)
        best = best_candidate(*out)
        (best.masks.sigmoid().sum() + best.scores.sum()).backward()
        return leaf.grad

    first = grad()
    assert first.abs().sum() > 0
    assert torch.equal(first, grad())


def test_best_candidate_picks_the_highest_rated():
    masks = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    iou = torch.tensor([[0.1, 0.9, 0.3], [0.7, 0.2, 0.7]])  # a tie: the first wins
    best = best_candidate(masks, iou)
    assert best.index.tolist() == [1, 0]
    assert torch.equal(best.masks, torch.stack([masks[0, 1], masks[1, 0]]))
    assert best.scores.tolist() == pytest.approx([0.9, 0.7])
    # any trailing shape, any dtype (e.g. bool masks at the original resolution)
    flags = masks > 20
    assert torch.equal(best_candidate(flags, iou).masks, torch.stack([flags[0, 1], flags[1, 0]]))
    # the gradient reaches only the chosen candidates
    leaf = masks.clone().requires_grad_(True)
    best_candidate(leaf, iou).masks.sum().backward()
    assert leaf.grad[:, :, 0, 0].tolist() == [[0, 1, 0], [1, 0, 0]]


def test_to_model_moves_and_casts_floats_only(sam):
    wide = sam.to(torch.float64)
    assert to_model(wide, torch.ones(2)).dtype == torch.float64
    assert to_model(wide, torch.ones(2, dtype=torch.long)).dtype == torch.long
