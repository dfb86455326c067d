"""Bad SAM 3 original checkpoints (``sam3.pt``): one ``error:`` line naming the tensor, exit 2,
nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_bad_input import Case, run_case

DEC = "detector.transformer.decoder."


def _sam3_pt(edit=None, sidecar=None):
    """A tiny ``sam3.pt`` as Meta lays one out (``edit`` changes its state dict; ``sidecar``
    edits the samtune sidecar written beside it, else there is none)."""

    def setup(root: Path, _mp) -> None:
        import samtune
        from samtune.models.convert import sam3

        model = samtune.load_model("tiny-sam3")
        if sidecar is not None:
            sam3.save_sam3_checkpoint(model, root / "sam3.pt")
            side = root / "sam3.pt.samtune.json"
            side.write_text(json.dumps(sidecar(json.loads(side.read_text()))))
            return
        sd = sam3.hf_to_sam3_state_dict(model.state_dict()) | sam3.rope_tables(model.config)
        sd = {k: v.clone() for k, v in sd.items()}
        if edit is not None:
            edit(sd)
        torch.save(sd, root / "sam3.pt")

    return setup


def _drop(key):
    return lambda sd: sd.pop(key)


def _set(key, shape):
    return lambda sd: sd.__setitem__(key, torch.zeros(shape))


def _family(side):
    return {**side, "family": "sam2"}


def _tokenizer(side):
    return {**side, "tokenizer": {"tokenizer_json": {"model": "none"}}}


CONVERT = ["convert", "sam3.pt", "out", "--to", "hf"]

CASES = [
    Case(
        "sam3-missing-tensor-read-for-the-architecture",
        CONVERT,
        [f"'{DEC}query_embed.weight'", "missing"],
        setup=_sam3_pt(_drop(DEC + "query_embed.weight")),
        absent=["out"],
    ),
    Case(
        "sam3-missing-tensor",
        CONVERT,
        ["'detector.segmentation_head.cross_attn_norm.bias'", "missing"],
        setup=_sam3_pt(_drop("detector.segmentation_head.cross_attn_norm.bias")),
        absent=["out"],
    ),
    Case(
        "sam3-missing-rope-table",
        ["info", "sam3.pt"],
        ["'detector.backbone.vision_backbone.trunk.blocks.1.attn.freqs_cis'", "missing"],
        setup=_sam3_pt(_drop("detector.backbone.vision_backbone.trunk.blocks.1.attn.freqs_cis")),
    ),
    Case(
        "sam3-extra-tensor-in-a-part",
        CONVERT,
        [f"'{DEC}bogus.weight'", "does not belong"],
        setup=_sam3_pt(_set(DEC + "bogus.weight", (2, 2))),
        absent=["out"],
    ),
    Case(
        "sam3-extra-tensor-outside-the-parts",
        ["info", "sam3.pt"],
        ["'ema.detector.weight'", "belongs to no part", "'detector.*'"],
        setup=_sam3_pt(_set("ema.detector.weight", (2,))),
    ),
    Case(
        "sam3-wrong-shape",
        CONVERT,
        [f"'{DEC}layers.1.linear1.weight'", "(3, 32)", "expected (64, 32)"],
        setup=_sam3_pt(_set(DEC + "layers.1.linear1.weight", (3, 32))),
        absent=["out"],
    ),
    Case(
        "sam3-fused-projection-not-three-parts",
        ["info", "sam3.pt"],
        ["'detector.transformer.encoder.layers.0.self_attn.in_proj_weight'", "divisible by 3"],
        setup=_sam3_pt(
            _set("detector.transformer.encoder.layers.0.self_attn.in_proj_weight", (95, 32))
        ),  # fmt: skip
    ),
    Case(
        "sam3-position-embedding-without-class-row",
        ["info", "sam3.pt"],
        ["'detector.backbone.vision_backbone.trunk.pos_embed'", "(1, 64, 32)", "class-token row"],
        setup=_sam3_pt(_set("detector.backbone.vision_backbone.trunk.pos_embed", (1, 64, 32))),
    ),
    Case(
        "sam3-decoder-heads-stated",
        ["info", "sam3.pt", "--decoder-heads", "4"],
        ["SAM 3 checkpoint", "decoder_num_heads", "only apply to SAM and SAM-HQ"],
        setup=_sam3_pt(),
    ),
    Case(
        "sam3-sidecar-of-another-family",
        CONVERT,
        ["sam3.pt.samtune.json", "'sam2'", "'sam3' weights", "stale sidecar"],
        setup=_sam3_pt(sidecar=_family),
        absent=["out"],
    ),
    Case(
        "sam3-sidecar-tokenizer-not-a-record",
        CONVERT,
        ["sam3.pt.samtune.json", "invalid tokenizer record"],
        setup=_sam3_pt(sidecar=_tokenizer),
        absent=["out"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_sam3_checkpoint(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_case(case, tmp_path, monkeypatch)
