"""The public API: every name in samtune.__all__ resolves, and importing samtune stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


@pytest.mark.slow  # imports every module in a fresh interpreter (15 s); test_layers checks names
def test_evaluate_and_predict_stay_functions_after_their_modules_are_imported():
    """samtune.evaluate and samtune.predict are functions, and no module of the package shares
    their names, so importing every module (training, adapters and the generator do) leaves
    them functions, with no module made callable."""
    import subprocess
    import sys

    code = (
        "import pkgutil, types, importlib, samtune\n"
        "for m in pkgutil.walk_packages(samtune.__path__, 'samtune.'):\n"
        "    if m.name == 'samtune.__main__':\n"
        "        continue\n"
        "    mod = importlib.import_module(m.name)\n"
        "    assert type(mod) is types.ModuleType, m.name\n"
        "assert isinstance(samtune.evaluate, types.FunctionType)\n"
        "assert isinstance(samtune.predict, types.FunctionType)\n"
        "model = samtune.load_model('tiny')\n"
        "data = samtune.load_dataset('demo', 'test', counts={'train': 1, 'val': 1, 'test': 1})\n"
        "print(round(samtune.evaluate(model, data, prompt='box', progress=False).metrics['miou'], 6))\n"
        "print(samtune.evaluate(model, data, progress=False).metrics == "
        "samtune.evaluation.protocols.evaluate(model, data, progress=False).metrics)\n"
        "print(samtune.predict(model, data[0].image, boxes=data[0].boxes[:1]).masks.shape[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", "1"]
