"""Bad input to `samtune fit` / `samtune eval`: one `error:` line, exit 2, nothing left behind.

Every case goes through the command line in-process (``samtune.cli.main``), like a user: wrong
YAML types, non-finite or negative numbers, unknown names (checked before any model is
loaded), leftovers of a run whose setup failed, and unreadable images with ``on_error``.
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from pathlib import Path

import numpy as np
import pytest

from samtune.errors import ConfigError, DataError
from samtune.evaluation.config import EvalConfig
from samtune.options import NOT_GIVEN, merge_options
from samtune.train.config import FitConfig, build_config

DEMO_COUNTS = {"train": 2, "val": 1, "test": 1}


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """Run ``samtune ARGS``; return (exit code, stderr)."""
    from samtune.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    code = exc.value.code if isinstance(exc.value.code, int) else 1
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    line = err.strip()
    assert code == 2, err
    assert line.startswith("error: ") and "\n" not in line, err
    assert "unexpected" not in line and "samtune bug" not in line, err
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a model is loaded: bad names must be caught before that."""
    import samtune.models.loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(samtune.models.loading, "load_model", refuse)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- 1. YAML types


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ('seed: "abc"\n', ["seed", "an integer", "'abc'"]),
        ('focal_weight: "high"\n', ["focal_weight", "a number", "'high'"]),
        ("epochs: true\n", ["epochs", "an integer", "True"]),
        ("batch_size: 2.5\n", ["batch_size", "an integer", "2.5"]),
        ('resume: "yes"\n', ["resume", "true or false", "'yes'"]),
        ("strategy_options: [1, 2]\n", ["strategy_options", "a mapping", "[1, 2]"]),
        ("model: 3\n", ["model", "a string", "3"]),
        ("max_grad_norm: [1]\n", ["max_grad_norm", "a number or null", "[1]"]),
    ],
    ids=[
        "seed-str",
        "focal-str",
        "epochs-bool",
        "batch-float",
        "resume-str",
        "options-list",
        "model-int",
        "clip-list",
    ],
)
def test_fit_yaml_with_a_wrong_type_is_a_config_error(tmp_path, capsys, yaml_text, words):
    config = write_yaml(tmp_path / "bad.yaml", yaml_text)
    run = tmp_path / "run"
    code, err = run_cli(
        capsys, "fit", "--dataset", "demo", "-c", config, "-o", run, "--max-steps", "2"
    )
    assert_one_line_error(code, err, *words)
    assert not run.exists()


def _bad_value(hint) -> object:
    """A value of the wrong type for an options field annotation."""
    kinds = [k for k in typing.get_args(hint) or (hint,) if k is not type(None)]
    origin = typing.get_origin(kinds[0]) or kinds[0]
    return {str: 123, int: "abc", float: "high", bool: "yes", dict: [1], list: 12.5}[origin]


def _fields(*classes, where=lambda f: True) -> list:
    return [
        pytest.param(cls, f.name, id=f"{cls.__name__}.{f.name}")
        for cls in classes
        for f in dataclasses.fields(cls)
        if where(f)
    ]


@pytest.mark.parametrize(("cls", "field"), _fields(FitConfig, EvalConfig))
def test_every_option_is_type_checked(cls, field):
    hint = typing.get_type_hints(cls)[field]
    with pytest.raises(ConfigError, match=rf"^{field} must be .*; found "):
        cls(**{field: _bad_value(hint)})


@pytest.mark.parametrize(
    ("cls", "field"), _fields(FitConfig, EvalConfig, where=lambda f: "int" in str(f.type))
)
def test_a_bool_is_not_an_integer(cls, field):
    with pytest.raises(ConfigError, match=rf"^{field} must be an integer.*found bool True"):
        cls(**{field: True})
    config = cls()
    setattr(config, field, True)  # validate() checks a config changed after construction too
    with pytest.raises(ConfigError, match=rf"^{field} must be an integer.*found bool True"):
        config.validate()


@pytest.mark.parametrize("cls", [FitConfig, EvalConfig])
def test_one_merge_defaults_then_file_then_given(tmp_path, cls):
    """``merge_options``: the file beats the defaults, given options beat the file;
    NOT_GIVEN is skipped, None is a value where the field allows it."""
    file = write_yaml(tmp_path / "c.yaml", "seed: 7\nmax_images: 3\n" if cls is EvalConfig
                      else "seed: 7\nval_split: test\nstrategy_options: {r: 4}\n")  # fmt: skip
    nullable = "max_images" if cls is EvalConfig else "val_split"
    assert merge_options(cls, None, {"seed": NOT_GIVEN}).seed == 0
    assert merge_options(cls, file, {"seed": NOT_GIVEN}).seed == 7
    merged = merge_options(cls, file, {"seed": 9, nullable: None})
    assert (merged.seed, getattr(merged, nullable)) == (9, None)
    assert merge_options(cls, merged.to_dict(), {}) == merged
    assert merge_options(cls, file, {"seed": None}).seed == 7  # seed takes no None: not given
    if cls is FitConfig:  # a mapping option updates the file's key by key
        given = {"strategy_options": {"alpha": 8}}
        assert build_config(file, **given).strategy_options == {"r": 4, "alpha": 8}


@pytest.mark.parametrize(("command", "cls"), [("fit", FitConfig), ("eval", EvalConfig)])
def test_help_texts_are_the_fields(command, cls):
    """The command line shows each option's dataclass help text (written once)."""
    from typer.main import get_command

    from samtune.cli import app

    cmd = get_command(app).commands[command]
    names = {f.name for f in dataclasses.fields(cls)}
    shown = {p.name: p.help for p in cmd.params if p.param_type_name == "option"}
    shown["strategy_options"] = shown.pop("strategy_option", None)
    shared = names & set(shown)
    assert len(shared) >= 18, shared
    for name in shared:
        assert shown[name] == cls.field_help(name) != "", name


def test_yaml_words_and_exponent_floats_mean_what_the_user_meant(tmp_path):
    from samtune.train.config import build_config

    config = write_yaml(
        tmp_path / "c.yaml", "lr: 1e-4\ncache: off\nmixed_precision: no\ncompile: no\n"
    )  # YAML 1.1 reads these as the text '1e-4' and the booleans False
    cfg = build_config(config)
    assert (cfg.lr, cfg.cache, cfg.mixed_precision, cfg.compile) == (1e-4, "off", "no", "no")


# --------------------------------------------------------------------------- 2. numbers


@pytest.mark.parametrize(
    ("args", "yaml_text", "words"),
    [
        (["--lr", "nan"], "", ["lr", "finite", "nan"]),
        (["--lr", "inf"], "", ["lr", "finite", "inf"]),
        (["--lr", "-0.001"], "", ["lr", "> 0", "-0.001"]),
        (["--lr", "0"], "", ["lr", "> 0"]),
        ([], "weight_decay: -0.1\n", ["weight_decay", ">= 0", "-0.1"]),
        ([], "weight_decay: .nan\n", ["weight_decay", "finite", "nan"]),
        ([], "focal_weight: .inf\n", ["focal_weight", "finite", "inf"]),
        ([], "dice_weight: -1.0\n", ["dice_weight", ">= 0"]),
        ([], "focal_weight: 0\ndice_weight: 0\niou_weight: 0\n", ["focal_weight", "> 0"]),
        ([], "max_grad_norm: -1.0\n", ["max_grad_norm", ">= 0"]),
        ([], "box_jitter: .nan\n", ["box_jitter", "finite"]),
        (["--seed", "-1"], "", ["seed", ">= 0", "-1"]),
        ([], "warmup_steps: -5\n", ["warmup_steps", ">= 0"]),
        ([], "num_workers: -1\n", ["num_workers", ">= 0"]),
        (["--epochs", "0"], "", ["epochs", "positive integer"]),
    ],
)  # fmt: skip
def test_fit_numbers_must_be_finite_and_in_range(tmp_path, capsys, no_model_load, args,
                                                 yaml_text, words):  # fmt: skip
    run = tmp_path / "run"
    extra = ["-c", write_yaml(tmp_path / "c.yaml", yaml_text)] if yaml_text else []
    code, err = run_cli(capsys, "fit", "--dataset", "demo", "-o", run, *extra, *args)
    assert_one_line_error(code, err, *words)
    assert not run.exists()


# --------------------------------------------------------------------------- 3. names first


@pytest.mark.parametrize(
    ("args", "yaml_text", "words"),
    [
        (["--strategy", "lora", "--dataset", "nope"], "",
         ["unknown dataset 'nope'", "known datasets", "demo", "trashcan"]),
        (["--strategy", "nope", "--dataset", "demo"], "",
         ["strategy 'nope' is not installed", "lora"]),
        (["--dataset", "demo"], "val_split: validation\n", ["no split 'validation'", "val"]),
        (["--dataset", "trashcan"], "dataset_root: /nonexistent/samtune-data\n",
         ["/nonexistent/samtune-data", "samtune data download trashcan"]),
        (["--dataset", "coco"], "", ["coco", "root"]),
        (["--dataset", "demo"], "dataset_options: {colour: red}\n", ["colour", "dataset 'demo'"]),
        (["--dataset", "demo"], "dataset_options: {on_error: ignore}\n", ["on_error", "skip"]),
        (["--dataset", "demo", "-S", "rank=-3"], "", ["rank"]),
        (["--dataset", "demo"], "log_with: tensorbored\n", ["log_with", "tensorboard"]),
        (["--dataset", "demo"], "augment: rotate\n", ["augment", "'rotate'", "flips"]),
    ],
    ids=["dataset", "strategy", "split", "root", "coco-root", "dataset-option", "on-error",
         "strategy-option", "tracker", "augment"],
)  # fmt: skip
def test_fit_reports_a_bad_name_before_loading_a_model(tmp_path, capsys, no_model_load, args,
                                                       yaml_text, words):  # fmt: skip
    run = tmp_path / "run"
    extra = ["-c", write_yaml(tmp_path / "c.yaml", yaml_text)] if yaml_text else []
    code, err = run_cli(capsys, "fit", "-o", run, *extra, *args)
    assert_one_line_error(code, err, *words)
    assert "hub" not in err and "offline" not in err
    assert not run.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--dataset", "nope"], ["unknown dataset 'nope'", "known datasets", "demo"]),
        (["--dataset", "demo", "--split", "nope"], ["no split 'nope'", "train, val, test"]),
        (["--dataset", "trashcan", "--root", "/nonexistent/samtune-data"],
         ["/nonexistent/samtune-data", "samtune data download"]),
        (["--dataset", "demo", "--images", "/tmp"], ["--images", "coco"]),
    ],
)  # fmt: skip
def test_eval_reports_a_bad_name_before_loading_a_model(tmp_path, capsys, no_model_load, args,
                                                        words):  # fmt: skip
    out = tmp_path / "report"
    code, err = run_cli(capsys, "eval", "--model", "facebook/sam-vit-base", "-o", out, *args)
    assert_one_line_error(code, err, *words)
    assert not out.exists()


# --------------------------------------------------------------------------- 4. leftovers


def test_a_failed_fit_leaves_no_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = run_cli(capsys, "fit", "--strategy", "lora", "--dataset", "nope", "-o", run)
    assert_one_line_error(code, err, "unknown dataset")
    assert not run.exists()


def _demo_with_a_corrupt_test_image(root: Path) -> Path:
    from samtune.data import write_demo_dataset

    write_demo_dataset(root, counts=DEMO_COUNTS)
    image = sorted((root / "test" / "images").iterdir())[0]
    image.write_bytes(b"not an image")
    return root


def _setup_failing_config(tmp_path: Path) -> Path:
    root = _demo_with_a_corrupt_test_image(tmp_path / "demo")
    return write_yaml(
        tmp_path / "c.yaml",
        f"dataset_root: {root}\ndataset_options: {{counts: {DEMO_COUNTS}}}\nlog_with: null\n",
    )


def test_a_setup_failure_after_the_model_loaded_writes_nothing(tmp_path, capsys):
    # The zero-shot evaluation of the test split (setup, before training) meets the corrupt
    # image: the input error is reported and no config.yaml or run folder is left.
    config = _setup_failing_config(tmp_path)
    run = tmp_path / "run"
    code, err = run_cli(capsys, "fit", "-s", "decoder", "-d", "demo", "-m", "tiny", "-c", config,
                        "-o", run, "--max-steps", "1", "-q")  # fmt: skip
    assert_one_line_error(code, err, "cannot be read", "on_error='skip'")
    assert not run.exists()


def test_a_setup_failure_keeps_what_was_in_the_run_folder(tmp_path, capsys):
    config = _setup_failing_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    code, err = run_cli(capsys, "fit", "-s", "decoder", "-d", "demo", "-m", "tiny", "-c", config,
                        "-o", run, "--max-steps", "1", "-q")  # fmt: skip
    assert code == 2, err
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    assert (run / "notes.txt").read_text() == "mine"


def test_a_run_that_starts_writes_its_config(tmp_path, capsys):
    from samtune.train.config import build_config

    run = tmp_path / "run"
    config = write_yaml(
        tmp_path / "c.yaml",
        f"dataset_options: {{counts: {DEMO_COUNTS}}}\ncompare: false\nval_split: null\n"
        "log_with: null\n",
    )
    code, err = run_cli(capsys, "fit", "-s", "decoder", "-d", "demo", "-m", "tiny", "-c", config,
                        "-o", run, "--max-steps", "1", "-q")  # fmt: skip
    assert code == 0, err
    assert build_config(run / "config.yaml").max_steps == 1


# --------------------------------------------------------------------------- 5. eval numbers


@pytest.mark.parametrize(
    ("args", "yaml_text", "words"),
    [
        (["--max-images", "-3"], "", ["max_images", "positive integer", "-3"]),
        (["--max-images", "0"], "", ["max_images", "positive integer", "0"]),
        (["--prompt-batch", "0"], "", ["prompt_batch", "positive integer"]),
        (["--worst", "-1"], "", ["worst", ">= 0", "-1"]),
        (["--seed", "-1"], "", ["seed", ">= 0"]),
        (["--jitter", "nan"], "", ["jitter", "finite"]),
        (["--jitter", "-0.5"], "", ["jitter", ">= 0"]),
        ([], 'prompt_batch: "lots"\n', ["prompt_batch", "an integer", "'lots'"]),
        ([], "max_images: true\n", ["max_images", "an integer", "True"]),
        ([], 'plots: "no"\n', ["plots", "true or false", "'no'"]),
        ([], "jitter: high\n", ["jitter", "a number", "'high'"]),
        ([], "adapter: [1, 2]\n", ["adapter", "1"]),
        ([], "max_images: 0\n", ["max_images", "positive integer"]),
    ],
)  # fmt: skip
def test_eval_numbers_and_yaml_types(tmp_path, capsys, no_model_load, args, yaml_text, words):
    out = tmp_path / "report"
    extra = ["-c", write_yaml(tmp_path / "e.yaml", yaml_text)] if yaml_text else []
    code, err = run_cli(capsys, "eval", "--dataset", "demo", "--split", "test", "-o", out,
                        *extra, *args)  # fmt: skip
    assert_one_line_error(code, err, *words)
    assert not out.exists()


def test_evaluate_refuses_a_bad_max_images(tiny_model):
    from samtune.evaluation import evaluate

    for bad in (0, -3, True, 2.0):
        with pytest.raises(ConfigError, match="max_images"):
            evaluate(tiny_model, [], max_images=bad)


# --------------------------------------------------------------------------- 6. unreadable images


def _coco(tmp_path: Path) -> tuple[Path, Path]:
    from samtune.data import write_demo_dataset

    root = write_demo_dataset(tmp_path / "demo", counts={"train": 3, "val": 1, "test": 1})
    return root / "train" / "annotations.json", root / "train" / "images"


def test_skip_leaves_out_an_unreadable_image_with_a_count(tmp_path):
    from samtune.data import InstanceDataset

    ann, images = _coco(tmp_path)
    first = sorted(images.iterdir())[0]
    first.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot be read.*on_error='skip'"):
        InstanceDataset(ann, images)[0]  # the default is unchanged: an error
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        ds = InstanceDataset(ann, images, on_error="skip")
    assert len(ds) == 2 and ds.skipped["unreadable image"] == 1
    assert first.name not in [ds.image_info(i)["file_name"].split("/")[-1] for i in range(2)]
    for i in range(len(ds)):
        ds[i]


def test_skip_reads_an_image_that_fails_to_decode_as_one_without_instances(tmp_path):
    from PIL import Image

    from samtune.data import InstanceDataset

    ann, images = _coco(tmp_path)
    ds = InstanceDataset(ann, images, on_error="skip")
    path = ds.image_path(0)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(path, "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # opens, fails to decode
    with pytest.warns(UserWarning, match="skipped unreadable image .*1 unreadable so far"):
        sample = ds[0]
    assert sample.num_instances == 0 and sample.image.shape == (128, 128, 3)
    assert ds.skipped["unreadable image"] == 1
    strict = InstanceDataset(ann, images)
    with pytest.raises(DataError, match="cannot be read"), warnings.catch_warnings():
        warnings.simplefilter("error")
        strict[0]
