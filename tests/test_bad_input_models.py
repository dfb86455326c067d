"""Bad model, adapter and prediction inputs on the command line (issue #22): one ``error:``
line and exit 2, nothing written. Runs through ``test_bad_input.run_case``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_bad_input import Case, _adapter, _all, _image, _write, run_case


def _to_int(tensors):
    key = sorted(k for k in tensors if "lora_A" in k)[0]
    tensors[key] = tensors[key].to(torch.int32)
    return tensors


def _lora_config(**changes) -> dict[str, str]:
    config = {
        "alpha": 8.0,
        "blocks": "all",
        "decoder_attention": False,
        "dropout": 0.0,
        "mlp": False,
        "proj": False,
        "rank": 8,
        "train_decoder": True,
        "use_dora": False,
    }
    return {"strategy_config": json.dumps({**config, **changes})}


def _peft_adapter(root: Path, target_modules: str) -> None:
    """An IA3 adapter whose metadata carries ``target_modules`` (as an edited file would)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    import samtune

    model = samtune.load_model("tiny")
    samtune.get_strategy("peft", method="ia3", target_modules=r".*\.qkv").apply(model)
    samtune.save_adapter(model, root / "adapter")
    path = root / "adapter" / "adapter.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    config = json.loads(meta["strategy_config"])
    meta["strategy_config"] = json.dumps({**config, "target_modules": target_modules})
    save_file(tensors, str(path), metadata=meta)


CASES = [
    # ---- adapters
    Case(
        "adapter-integer-tensor",
        ["export", "adapter", "out"],
        ["lora_A", "int32", "expected floating point"],
        setup=lambda r, mp: _adapter(r, edit=_to_int),
        absent=["out"],
    ),
    Case(
        "adapter-rank-asks-for-terabytes",
        ["export", "adapter", "out"],
        ["lora_A", "(8, 32)", "expects (1000000000000, 32)"],
        setup=lambda r, mp: _adapter(r, metadata=_lora_config(rank=10**12)),
        absent=["out"],
    ),
    Case(
        "adapter-target-modules-backtracks",
        ["export", "adapter", "out"],
        ["target_modules", "(a+)+", "repeat inside a repeat", "adapter.safetensors"],
        setup=lambda r, mp: _peft_adapter(r, r"(a+)+$|.*\.qkv"),
        absent=["out"],
    ),
    # ---- predict prompt files
    Case(
        "predict-prompts-file-string-coordinate",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--prompts", "p.json"],
        ["boxes", "p.json", "[0][0]", "a number", "'1'"],
        setup=_all(
            lambda r, mp: _image(r), _write("p.json", json.dumps({"boxes": [["1", 2, 30, 40]]}))
        ),
        absent=["o"],
    ),
    Case(
        "predict-prompts-file-boolean-coordinate",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--prompts", "p.json"],
        ["points", "[0][0][1]", "True"],
        setup=_all(
            lambda r, mp: _image(r), _write("p.json", json.dumps({"points": [[[4, True]]]}))
        ),
        absent=["o"],
    ),
    Case(
        "predict-prompts-file-boolean-label",
        ["predict", "scene.png", "-m", "tiny", "-o", "o", "--prompts", "p.json"],
        ["labels", "integer 1 or 0", "True"],
        setup=_all(
            lambda r, mp: _image(r),
            _write("p.json", json.dumps({"points": [[[4, 5]]], "labels": [[True]]})),
        ),
        absent=["o"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_model_input_gets_one_line_and_exit_2(case: Case, tmp_path, monkeypatch):
    run_case(case, tmp_path, monkeypatch)
