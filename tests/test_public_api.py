"""The public API: every name in samtune.__all__ resolves, and importing samtune stays light."""

from __future__ import annotations

import subprocess
import sys

import samtune


def test_all_names_resolve():
    for name in samtune.__all__:
        assert getattr(samtune, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    try:
        samtune.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_and_help_do_not_load_torch():
    code = (
        "import sys, samtune, samtune.cli;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
