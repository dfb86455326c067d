"""ONNX export: onnxruntime's outputs equal the merged PyTorch model's, prompt by prompt, and
the box protocol scores the same through either; quantized exports report their cost."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import samtune
from samtune.adapters import merge_adapter, save_adapter
from samtune.cli import app
from samtune.data.transforms import Geometry
from samtune.errors import InputError, MissingDependencyError, UnknownNameError
from samtune.evaluation import evaluate
from samtune.export.formats import export_adapter
from samtune.export.onnx import (
    CONFIG_FILE,
    DECODER_FILE,
    ENCODER_FILE,
    evaluate_onnx,
    export_onnx,
    load_onnx,
)
from samtune.io import MANIFEST
from samtune.strategies import get_strategy

ONNX_INSTALLED = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not ONNX_INSTALLED, reason='needs pip install "samtune[onnx]"')
ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4  # fp32: onnxruntime vs PyTorch, mask logits and IoU scores


def _tuned(source: str, strategy: str, seed: int = 1, std: float = 0.02, **config):
    """A model with a strategy applied whose trained tensors all moved (stand-in for training)."""
    model = get_strategy(strategy, **config).apply(samtune.load_model(source))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """(tuned demo model with LoRA, its merged copy, ONNX export folder via export_adapter)."""
    model = _tuned("demo", "lora")
    out = tmp_path_factory.mktemp("onnx") / "sam-onnx"
    assert export_adapter(model, out, "onnx") == out
    return model, merge_adapter(model).eval(), load_onnx(out)


def _feed(sam, emb, coords, labels, orig=None, mask=None):
    r = sam.low_res
    orig = orig or (sam.preprocess.image_size,) * 2
    return {
        "image_embeddings": np.asarray(emb, np.float32),
        "point_coords": np.asarray(coords, np.float32),
        "point_labels": np.asarray(labels, np.float32),
        "mask_input": np.zeros((1, 1, r, r), np.float32) if mask is None else mask,
        "has_mask_input": np.array([0.0 if mask is None else 1.0], np.float32),
        "orig_im_size": np.asarray(orig, np.float32),
    }


def _boxes(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, 2, generator=g) * size
    return torch.cat([xy.min(1).values, xy.max(1).values], dim=1)  # (n, 4) XYXY


def _close(a, b, what: str) -> float:
    diff = float(np.abs(np.asarray(a) - np.asarray(b)).max())
    assert diff < TOL, f"{what}: max abs diff {diff}"
    return diff


@needs_onnx
def test_folder_holds_encoder_decoder_and_config(lora):
    model, merged, sam = lora
    folder = sam.folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CONFIG_FILE, DECODER_FILE, ENCODER_FILE, MANIFEST]
    )
    assert json.loads((folder / MANIFEST).read_text())["entries"] == sorted(
        [CONFIG_FILE, DECODER_FILE, ENCODER_FILE]
    )
    c = sam.config
    meta = samtune.adapters.adapter_metadata(model)
    assert c["model"]["base_fingerprint"] == meta["base_fingerprint"]
    assert c["model"]["strategy"] == "lora" and c["model"]["merged"] is True
    assert c["model"]["exported_fingerprint"] == samtune.models.fingerprint(merged)
    assert len(c["model"]["adapter_fingerprint"]) == 16
    pre = c["preprocess"]
    assert pre["image_size"] == 128
    assert pre["mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert pre["std"] == pytest.approx([58.395, 57.12, 57.375])
    assert c["opset"] == 17 and c["quantize"] is None
    # names and dynamic axes as documented, read back from the graphs themselves
    enc_in, dec_in = sam.encoder.get_inputs(), sam.decoder.get_inputs()
    assert [i.name for i in enc_in] == list(c["encoder"]["inputs"])
    assert [o.name for o in sam.encoder.get_outputs()] == list(c["encoder"]["outputs"])
    assert [i.name for i in dec_in] == [
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
        "orig_im_size",
    ]
    assert [o.name for o in sam.decoder.get_outputs()] == [
        "masks",
        "iou_predictions",
        "low_res_masks",
    ]
    assert enc_in[0].shape == ["batch", 3, 128, 128]
    assert dec_in[1].shape == ["num_prompts", "num_points", 2]
    check = c["check"]
    assert check["mask_agreement_iou"] > 0.999 and check["encoder_max_abs_diff"] < TOL
    assert c["files"][ENCODER_FILE] == (folder / ENCODER_FILE).stat().st_size


@needs_onnx
def test_encoder_equals_get_image_embeddings(lora):
    _, merged, sam = lora
    pixels = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = merged.get_image_embeddings(pixels).numpy()
    (got,) = sam.encoder.run(None, {"pixel_values": pixels.numpy()})  # a batch of 3 images
    _close(got, want, "image embeddings")


@needs_onnx
def test_decoder_equals_merged_model_for_boxes_points_and_mask_inputs(lora):
    _, merged, sam = lora
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(1, 3, 128, 128, generator=g)
    with torch.no_grad():
        emb = merged.get_image_embeddings(pixels)

    # a batch of 5 boxes, each two corner points labelled 2 and 3: the single-mask output
    boxes = _boxes(5, 128, g)
    _, iou, low = sam.decoder.run(None, _feed(sam, emb, boxes.reshape(5, 2, 2), [[2, 3]] * 5))
    with torch.no_grad():
        out = merged(image_embeddings=emb, input_boxes=boxes[None], multimask_output=False)
    _close(low[:, 0], out.pred_masks[0, :, 0], "box masks")
    _close(iou[:, 0], out.iou_scores[0, :, 0], "box IoU")

    # 4 prompts of 2 points (positive and negative) plus Meta's padding point (label -1)
    points = torch.rand(4, 2, 2, generator=g) * 128
    labels = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 0]])
    coords = np.concatenate([points.numpy(), np.zeros((4, 1, 2))], axis=1)
    codes = np.concatenate([labels.numpy(), -np.ones((4, 1))], axis=1)
    _, iou, low = sam.decoder.run(None, _feed(sam, emb, coords, codes))
    with torch.no_grad():
        multi = merged(image_embeddings=emb, input_points=points[None], input_labels=labels[None])
        single = merged(
            image_embeddings=emb,
            input_points=points[None],
            input_labels=labels[None],
            multimask_output=False,
        )
    _close(low[:, 1:], multi.pred_masks[0], "point masks (multimask)")
    _close(iou[:, 1:], multi.iou_scores[0], "point IoU (multimask)")
    _close(low[:, 0], single.pred_masks[0, :, 0], "point masks (single)")

    # a box and a point in one prompt; and one mask input per prompt (corrective clicks)
    mask_in = torch.randn(4, 1, sam.low_res, sam.low_res, generator=g) * 4
    box_pt = np.concatenate([points[:, :1].numpy(), boxes[:4].reshape(4, 2, 2).numpy()], 1)
    _, iou, low = sam.decoder.run(
        None, _feed(sam, emb, box_pt, [[1, 2, 3]] * 4, mask=mask_in.numpy())
    )
    with torch.no_grad():
        out = merged(
            image_embeddings=emb.expand(4, -1, -1, -1),
            input_points=points[:, None, :1],
            input_labels=torch.ones(4, 1, 1, dtype=torch.long),
            input_boxes=boxes[:4, None],
            input_masks=mask_in,
            multimask_output=False,
        )
    _close(low[:, 0], out.pred_masks[:, 0, 0], "box + point + mask input")
    _close(iou[:, 0], out.iou_scores[:, 0, 0], "box + point + mask input IoU")


@needs_onnx
@pytest.mark.parametrize("size", [(90, 150), (300, 200), (128, 128)])
def test_masks_at_original_size_equal_samtunes_postprocessing(lora, size):
    _, _, sam = lora
    g = torch.Generator().manual_seed(2)
    emb = np.random.default_rng(0).standard_normal((1, 64, 16, 16)).astype(np.float32)
    coords = _boxes(2, 128, g).reshape(2, 2, 2)
    masks, _, low = sam.decoder.run(None, _feed(sam, emb, coords, [[2, 3]] * 2, orig=size))
    want = Geometry.for_image(*size, 128).logits_to_original(torch.from_numpy(low))
    assert masks.shape == (2, 4, *size)
    # resampling in float32 on both sides: 1e-4 plus 1e-5 of logits that reach |30| here
    np.testing.assert_allclose(masks, want.numpy(), rtol=1e-5, atol=TOL)


@pytest.fixture(scope="module")
def demo_test(tmp_path_factory):
    from samtune.data import load_dataset

    root = tmp_path_factory.mktemp("demo")
    return load_dataset("demo", "test", root, counts={"test": 4})


@needs_onnx
def test_box_miou_through_onnxruntime_equals_evaluate(lora, demo_test):
    model, _, sam = lora
    want = evaluate(model, demo_test, "box").metrics
    got = evaluate_onnx(sam, demo_test)
    assert got["num_instances"] == want["num_instances"] > 5
    for key in ("miou", "image_miou", "pooled_iou", "dice"):
        assert abs(got[key] - want[key]) <= 1e-4, (key, got[key], want[key])  # 0.01 points


@needs_onnx
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "decoder", "adapter"])
def test_every_strategy_exports_what_it_computes(strategy, tmp_path):
    """Merging strategies export the merged model; bottleneck adapters, which cannot merge,
    export the tuned model's graph with its extra layers."""
    model = _tuned("tiny", strategy, std=0.05)
    export_onnx(model, tmp_path / "out", check=False)
    sam = load_onnx(tmp_path / "out")
    assert sam.config["model"]["merged"] is (strategy != "adapter")
    assert sam.config["model"]["strategy"] == strategy
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(1, 3, 128, 128, generator=g)
    boxes = _boxes(3, 128, g)
    with torch.no_grad():
        emb = model.get_image_embeddings(pixels)
        out = model(image_embeddings=emb, input_boxes=boxes[None], multimask_output=False)
        zero_shot = samtune.load_model("tiny").get_image_embeddings(pixels)
    (got_emb,) = sam.encoder.run(None, {"pixel_values": pixels.numpy()})
    _close(got_emb, emb, f"{strategy} embeddings")
    if strategy != "decoder":  # the encoder's tuning is in the graph, not lost
        assert np.abs(got_emb - zero_shot.numpy()).max() > 1e-3
    _, iou, low = sam.decoder.run(None, _feed(sam, got_emb, boxes.reshape(3, 2, 2), [[2, 3]] * 3))
    _close(low[:, 0], out.pred_masks[0, :, 0], f"{strategy} masks")
    _close(iou[:, 0], out.iou_scores[0, :, 0], f"{strategy} IoU")


@needs_onnx
@pytest.mark.slow
def test_cli_exports_quantized_encoders_and_reports_the_cost(lora, tmp_path, demo_test):
    model = lora[0]
    save_adapter(model, tmp_path / "adapter")
    out = tmp_path / "sam-int8"
    args = ["export", str(tmp_path / "adapter"), str(out), "--format", "onnx"]
    result = CliRunner().invoke(app, [*args, "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    assert "masks agree at IoU" in result.output and "(encoder int8)" in result.output
    int8 = load_onnx(out)
    assert int8.config["quantize"] == "int8"
    assert 0.9 < int8.config["check"]["mask_agreement_iou"] <= 1.0
    assert int8.config["check"]["encoder_rel_error"] > 1e-4  # it did quantize
    assert int8.config["files"][ENCODER_FILE] < lora[2].config["files"][ENCODER_FILE]

    # the same folder again: refused without --overwrite, replaced with it (Python API, fp16)
    result = CliRunner().invoke(app, [*args, "--quantize", "fp16"])
    assert result.exit_code == 2 and "--overwrite" in result.output
    export_adapter(model, out, "onnx", quantize="fp16", overwrite=True)
    fp16 = load_onnx(out)
    assert fp16.config["quantize"] == "fp16"
    assert fp16.config["check"]["mask_agreement_iou"] > 0.99
    assert fp16.encoder.get_inputs()[0].type == "tensor(float)"  # float32 in and out

    fp32_miou = evaluate_onnx(lora[2], demo_test)["miou"]
    assert abs(evaluate_onnx(fp16, demo_test)["miou"] - fp32_miou) < 0.01
    assert abs(evaluate_onnx(int8, demo_test)["miou"] - fp32_miou) < 0.05


def test_bad_quantize_values_fail_before_writing(tmp_path):
    model = get_strategy("decoder").apply(samtune.load_model("tiny"))
    with pytest.raises(UnknownNameError, match="fp16 or int8"):
        export_adapter(model, tmp_path / "a", "onnx", quantize="int4")
    with pytest.raises(InputError, match="onnx format only"):
        export_adapter(model, tmp_path / "b", "hf", quantize="int8")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_missing_extra_names_it(tmp_path, monkeypatch):
    model = get_strategy("decoder").apply(samtune.load_model("tiny"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(MissingDependencyError, match=r'pip install "samtune\[onnx\]"'):
        export_adapter(model, tmp_path / "out", "onnx")
    with pytest.raises(MissingDependencyError, match="onnxruntime"):
        load_onnx(tmp_path)
    save_adapter(model, tmp_path / "adapter")
    result = CliRunner().invoke(
        app, ["export", str(tmp_path / "adapter"), str(tmp_path / "out"), "-f", "onnx"]
    )
    assert result.exit_code == 2
    assert 'pip install "samtune[onnx]"' in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@needs_onnx
def test_large_models_are_kept_as_one_model_file_and_one_data_file(tmp_path):
    """Over 2 GB the exporter writes one file per tensor; the export keeps one data file."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from samtune.export.onnx import _single_file

    weights = [np.full((64, 64), i + 1, np.float32) for i in range(3)]
    nodes, prev = [], "x"
    for i in range(3):
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"y{i}"]))
        prev = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save_model(
        model,
        str(folder / "encoder.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
    )
    assert len(list(folder.iterdir())) == 4
    _single_file(onnx, folder / "encoder.onnx")
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.onnx", "encoder.onnx.data"]
    x = np.ones((1, 64), np.float32)
    (y,) = ort.InferenceSession(str(folder / "encoder.onnx")).run(None, {"x": x})
    assert np.allclose(y, x @ weights[0] @ weights[1] @ weights[2])


@needs_onnx
def test_example_script_gives_samtunes_mask(lora, tmp_path, demo_test):
    _, _, sam = lora
    sample = demo_test[0]
    Image.fromarray(sample.image).save(tmp_path / "photo.png")
    box = [float(v) for v in sample.boxes[0]]
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "onnx_predict.py"),
            str(sam.folder),
            str(tmp_path / "photo.png"),
            "--box",
            ",".join(str(v) for v in box),
            "--out",
            str(tmp_path / "mask.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "predicted IoU" in out.stdout
    mask = np.asarray(Image.open(tmp_path / "mask.png")) > 0
    emb, geometry = sam.encode(sample.image)
    masks, _, _ = sam.decode(emb, geometry, boxes=np.array([box]))
    assert np.array_equal(mask, masks[0, 0] > 0)  # 128 px: no resize, the same pixels
