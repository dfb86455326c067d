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


def _hf_folder(name: str = "model", *, config=None, processor=None, weights=None, pickle=False):
    """A setup writing the tiny SAM as a hub-format folder, then editing its files."""

    def setup(root: Path, _mp) -> None:
        from safetensors.torch import load_file, save_file

        import samtune
        from samtune.export.formats import save_hf_folder

        folder = root / name
        save_hf_folder(samtune.load_model("tiny"), folder)
        (folder / ".samtune-manifest.json").unlink(missing_ok=True)
        for file, edit in (("config.json", config), ("processor_config.json", processor)):
            if edit is not None:
                doc = json.loads((folder / file).read_text())
                edit(doc)
                (folder / file).write_text(json.dumps(doc))
        if weights is not None or pickle:
            sd = load_file(folder / "model.safetensors")
            weights is None or weights(sd)
            (folder / "model.safetensors").unlink()
            if pickle:
                torch.save(sd, folder / "pytorch_model.bin")
            else:
                save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})

    return setup


def _nan_weight(sd) -> None:
    sd["mask_decoder.iou_token.weight"][0, 0] = float("nan")


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(doc) -> None:
        for key in keys[:-1]:
            doc = doc[key]
        doc[keys[-1]] = value

    return edit


def _pth_broadcast(root: Path, _mp) -> None:
    """A Meta checkpoint whose encoder MLPs are broadcast views claiming ~10 TB."""
    from samtune.models.convert import save_original_checkpoint
    from samtune.models.loading import load_model

    save_original_checkpoint(load_model("tiny"), root / "big.pth")
    sd = torch.load(root / "big.pth", weights_only=True)
    n = 10**10  # mlp_dim, as read off the shapes
    for i in range(2):
        mlp = f"image_encoder.blocks.{i}.mlp."
        sd[mlp + "lin1.weight"] = torch.zeros(1, 1).expand(n, 32)
        sd[mlp + "lin1.bias"] = torch.zeros(1).expand(n)
        sd[mlp + "lin2.weight"] = torch.zeros(1, 1).expand(32, n)
    torch.save(sd, root / "big.pth")
    (root / "big.pth.samtune.json").unlink()


CASES = [
    # ---- models
    Case(
        "model-nan-weight",
        ["info", "model"],
        ["mask_decoder.iou_token.weight", "NaN"],
        setup=_hf_folder(weights=_nan_weight),
    ),
    Case(
        "model-folder-with-only-a-pickle",
        ["info", "model"],
        ["pytorch_model.bin", "pickle", "does not load", "safetensors"],
        setup=_hf_folder(pickle=True),
    ),
    Case(
        "model-preprocessor-size-an-integer",
        ["info", "model"],
        ["'size'", "1024"],
        setup=_hf_folder(processor=_set("image_processor", "size", 1024)),
    ),
    Case(
        "model-preprocessor-std-zero",
        ["info", "model"],
        ["'image_std'", "positive"],
        setup=_hf_folder(processor=_set("image_processor", "image_std", [0, 0, 0])),
    ),
    Case(
        "model-preprocessor-mean-two-values",
        ["info", "model"],
        ["'image_mean'", "3"],
        setup=_hf_folder(processor=_set("image_processor", "image_mean", [0.5, 0.5])),
    ),
    Case(
        "model-config-does-not-match-weights",
        ["info", "model"],
        [
            "config.json",
            "does not match its weights",
            "vision_encoder.pos_embed",
            "(1, 8, 8, 32)",
            "(1, 8, 8, 64)",
        ],
        setup=_hf_folder(config=_set("vision_config", "hidden_size", 64)),
    ),
    Case(
        "model-config-asks-for-terabytes",
        ["info", "model"],
        ["does not match its weights", "mlp"],
        setup=_hf_folder(config=_set("vision_config", "mlp_dim", 10**12)),
    ),
    Case(
        "model-pth-broadcast-tensor",
        ["info", "big.pth"],
        ["vision_encoder.layers.0.mlp.lin1", "broadcast view"],
        setup=_pth_broadcast,
    ),
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
        ["boxes", "p.json", "[0][0]", "numbers", "'1'"],
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
        ["labels", "integers 1 or 0", "True"],
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
