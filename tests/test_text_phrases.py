"""A model trained by name is scored by the phrases it trained with.

``prompt: text`` asks each category by its phrase (prompt map > the recipe's map > the name);
the ``text`` protocol used to ask by the bare category names, so a tuned model was tested on
words it never saw (``bag`` instead of ``plastic bag``). Training, ``samtune.evaluate``,
``samtune eval`` and fit's zero-shot/fine-tuned table now resolve the phrases one way
(:func:`samtune.data.phrases.dataset_phrases`).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import samtune
from samtune.cli import app
from samtune.data.phrases import dataset_phrases
from samtune.errors import ConfigError

DEMO = {1: "bottle", 2: "can", 3: "piece of cardboard", 4: "plastic bag"}
COUNTS = {"train": 4, "val": 1, "test": 2}


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return samtune.load_dataset("demo", "test", root, counts=COUNTS)


def test_a_demo_split_is_asked_by_the_demo_recipes_phrases(test_split):
    assert test_split.name.startswith("demo")
    assert dataset_phrases(test_split) == DEMO
    assert dataset_phrases(test_split, {"can": "tin can"})[2] == "tin can"
    assert dataset_phrases(test_split, recipe="coco")[4] == "bag"  # no built-in map: the name
    with pytest.raises(ConfigError, match="'lid'"):
        dataset_phrases(test_split, {"lid": "lid"})


def test_evaluate_asks_by_the_phrases_and_records_them(test_split):
    model = samtune.load_model("tiny-sam3")
    report = samtune.evaluate(model, test_split, "text", progress=False)
    assert report.options["phrases"] == {
        "bottle": "bottle", "can": "can", "cardboard": "piece of cardboard", "bag": "plastic bag"
    }  # fmt: skip
    assert set(report.metrics["per_class"]) == {"bottle", "can", "cardboard", "bag"}
    names = samtune.evaluate(
        model, test_split, "text", progress=False, phrases=test_split.categories
    )
    assert names.options["phrases"]["bag"] == "bag"
    scores = sorted(r["score"] for r in report.coco["results"])
    assert scores != sorted(r["score"] for r in names.coco["results"])  # other words, other scores
    with pytest.raises(ConfigError, match="category id 4 is missing"):
        samtune.evaluate(model, test_split, "text", phrases={1: "a", 2: "b", 3: "c"})
    with pytest.raises(ConfigError, match="text protocol only"):
        samtune.evaluate(samtune.load_model("tiny"), test_split, "box", phrases=DEMO)


def test_fit_scores_zero_shot_and_fine_tuned_by_its_training_phrases(tmp_path, monkeypatch):
    import samtune.train.loop as loop

    asked = []
    real = loop.evaluate

    def recording(*args, **kwargs):
        asked.append(kwargs.get("phrases"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", recording)
    samtune.fit(model=samtune.load_model("tiny-sam3"), strategy="decoder", dataset="demo",
                dataset_options={"counts": COUNTS}, output_dir=tmp_path / "run", prompt="text",
                prompt_map={"can": "tin can"}, max_steps=1, batch_size=2, quiet=True,
                log_with="none")  # fmt: skip
    assert asked == [{**DEMO, 2: "tin can"}] * 2  # zero-shot, then fine-tuned


@pytest.mark.slow  # a CLI run on freshly generated demo data (6 s); the API tests above are fast
def test_eval_cli_prompt_map(tmp_path):
    root = tmp_path / "demo"
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, [
        "eval", "-m", "tiny-sam3", "-d", "demo", "--root", str(root), "--split", "test",
        "--prompt", "text", "--prompt-map", "bag=shopping bag", "--max-images", "2", "-o", str(out),
        "-q",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    options = json.loads((out / "metrics.json").read_text())["options"]
    assert options["phrases"]["bag"] == "shopping bag"
    assert options["phrases"]["cardboard"] == "piece of cardboard"
