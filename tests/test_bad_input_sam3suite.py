"""Bad input to ``samtune suite`` with the ``text`` protocol (SAM 3 by name): one ``error:``
line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_bad_input import Case, _all, _write, run_case

from samtune.data.masks import encode_mask


def _data_outside(root: Path, mp: pytest.MonkeyPatch) -> None:
    """The demo data is generated outside the work folder (which must stay unchanged)."""
    mp.setenv("SAMTUNE_DATA", str(root.parent / "datasets"))


def _coco_without_names(root: Path, _mp) -> None:
    """A COCO dataset (train and test splits) whose one category has a blank name."""
    from PIL import Image

    mask = np.zeros((40, 60), bool)
    mask[5:20, 10:30] = True
    for split in ("train", "test"):
        (root / "mine" / split).mkdir(parents=True)
        (root / "mine" / "annotations").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / "mine" / split / "a.png")
        coco = {
            "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
            "annotations": [
                {
                    "id": 7,
                    "image_id": 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": encode_mask(mask),
                    "area": int(mask.sum()),
                    "bbox": [10, 5, 20, 15],
                }
            ],  # fmt: skip
            "categories": [{"id": 1, "name": " "}],
        }
        (root / "mine" / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def spec(models: str, protocols: str, datasets: str = "[demo]", extra: str = "") -> str:
    return (
        f"models: {models}\nstrategies: [lora]\ndatasets: {datasets}\n"
        f"splits: {{val: null}}\nprotocols: {protocols}\n{extra}"
    )


SUITE = ["suite", "s.yaml", "-o", "out"]
CASES = [
    Case(
        "text-protocol-on-a-model-without-text-encoder",
        SUITE,
        ["models[0]", "protocol text needs a model with a text encoder", "'tiny'", "family sam"],
        setup=_write("s.yaml", spec("[tiny]", "[text]")),
        absent=["out"],
    ),
    Case(
        "text-protocol-on-a-model-without-text-encoder-check",
        [*SUITE, "--check"],
        ["models[0]", "protocol text needs a model with a text encoder"],
        setup=_write("s.yaml", spec("[tiny]", "[text]")),
        absent=["out"],
    ),
    Case(
        "sam3-model-with-box-protocol-only",
        SUITE,
        ["models[0]", "'tiny-sam3' is a SAM 3 model", "list the protocol text"],
        setup=_write("s.yaml", spec("[tiny-sam3]", "[box]")),
        absent=["out"],
    ),
    Case(
        "text-protocol-fitting-no-model",
        SUITE,
        ["protocols[1]", "'text' fits none of the models", "SAM 3"],
        setup=_write("s.yaml", spec("[tiny]", "[box, text]")),
        absent=["out"],
    ),
    Case(
        "box-training-prompt-for-a-model-asked-by-name",
        SUITE,
        ["train.prompt 'box' does not fit the model", "text or text+exemplar"],
        setup=_write("s.yaml", spec("[tiny-sam3]", "[text]", extra="train: {prompt: box}\n")),
        absent=["out"],
    ),
    Case(
        "auto-protocol",
        SUITE,
        ["protocols[0]", "'auto'", "samtune eval --prompt auto"],
        setup=_write("s.yaml", spec("[tiny]", "[auto]")),
        absent=["out"],
    ),
    Case(
        "prompt-map-naming-a-category-the-dataset-lacks",
        SUITE,
        ["datasets[0]", "prompt_map names category 'shoe'", "lacks"],
        setup=_all(
            _data_outside,
            _write(
                "s.yaml",
                spec("[tiny-sam3]", "[text]", "[{name: demo, train: {prompt_map: {shoe: boot}}}]"),
            ),
        ),
        absent=["out"],
    ),
    Case(
        "prompt-map-giving-two-categories-one-phrase",
        SUITE,
        ["'bottle' and 'can' would both be asked by the phrase 'can'"],
        setup=_all(
            _data_outside,
            _write(
                "s.yaml",
                spec("[tiny-sam3]", "[text]", extra="train: {prompt_map: {bottle: can}}\n"),
            ),
        ),
        absent=["out"],
    ),
    Case(
        "text-protocol-on-a-dataset-without-category-names",
        SUITE,
        ["datasets[0]", "no category names"],
        setup=_all(
            _coco_without_names,
            _write(
                "s.yaml", spec("[tiny-sam3]", "[text]", "[{name: coco, label: mine, root: mine}]")
            ),
        ),
        absent=["out"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_text_suite_gets_one_line_and_exit_2(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)
