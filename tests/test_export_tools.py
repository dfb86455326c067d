"""`samtune export --format x-anylabeling`: ONNX that annotation tools load, run the way each
tool runs it, gives the masks `samtune.predict` gives.

Fast tests run the exported files through onnxruntime with each tool's conventions rebuilt
here (X-AnyLabeling's 684 x 1024 letterbox canvas, samexporter's and osam's PIL resize, the
padding point after every prompt). Where the tools themselves are importable (`osam`,
`samexporter`, and X-AnyLabeling's `anylabeling` package: e.g. `pip install --no-deps
--target DIR osam samexporter x-anylabeling-cvhub imgviz loguru gdown beautifulsoup4
soupsieve cmap` and DIR on PYTHONPATH), their own code runs the files.

Measured on a tuned tiny model (128 px), mean mask IoU against `samtune.predict` (box / point):
osam 0.9998 / 0.9998, samexporter 0.979 / 0.975 (its 1024 px upsampling), X-AnyLabeling 0.93 /
0.91 on a 240 x 320 image (its 684 x 1024 letterbox canvas; 0.99 / 0.99 for an image of the
canvas's own size). The tools add a padding point to box prompts; the graphs drop it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import samtune
from samtune.cli import app
from samtune.data.synthetic import generate_scene
from samtune.export.formats import export_adapter
from samtune.export.tools import drop_box_padding, get_profile
from samtune.export.tools_check import encoder_feed, iou, run_tool
from samtune.io import MANIFEST
from samtune.strategies import get_strategy

ort = pytest.importorskip("onnxruntime")
DECODER_INPUTS = [
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
]


def _tuned() -> torch.nn.Module:
    """tiny with LoRA whose trained tensors all moved (stand-in for training)."""
    model = get_strategy("lora").apply(samtune.load_model("tiny"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def _scene(height: int, width: int, seed: int = 0):
    """A synthetic scene cropped to (height, width), its boxes and box centres."""
    rng = np.random.default_rng(seed)
    image, objects = generate_scene(rng, max(height, width), max_objects=4)
    image = np.ascontiguousarray(image[:height, :width])
    boxes = []
    for _, m in objects:
        ys, xs = np.nonzero(m[:height, :width])
        if len(xs) > 20:
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    boxes = np.asarray(boxes, np.float32)
    assert len(boxes), "the scene has no object"
    return image, boxes, (boxes[:, :2] + boxes[:, 2:]) / 2


@pytest.fixture(scope="module")
def model():
    return _tuned()


@pytest.fixture(scope="module")
def xany_cli(model, tmp_path_factory) -> tuple[Path, str]:
    """`samtune export ADAPTER OUT --format x-anylabeling`: the folder and what it printed."""
    root = tmp_path_factory.mktemp("xany")
    samtune.save_adapter(model, root / "adapter")
    out = root / "tool"
    result = CliRunner().invoke(
        app, ["export", str(root / "adapter"), str(out), "--format", "x-anylabeling"]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def xany(xany_cli) -> Path:
    return xany_cli[0]


@pytest.fixture(scope="module")
def osam_dir(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("osam") / "tool"
    export_adapter(model, out, "x-anylabeling", profile="osam")
    return out


def _files(folder: Path) -> tuple[Path, Path]:
    return next(folder.glob("*.encoder.onnx")), next(folder.glob("*.decoder.onnx"))


def _sessions(folder: Path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return [ort.InferenceSession(str(p), options, ["CPUExecutionProvider"]) for p in _files(folder)]


def _reference(model, image, boxes, centres):
    return (
        samtune.predict(model, image, boxes=boxes).masks,
        samtune.predict(model, image, points=centres[:, None]).masks,
    )


# --------------------------------------------------------------------------- the folder


def test_xanylabeling_folder_and_yaml(xany: Path) -> None:
    configs = list(xany.glob("*.yaml"))
    assert len(configs) == 1
    config = yaml.safe_load(configs[0].read_text())
    assert config["type"] == "segment_anything"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", config["name"])  # X-AnyLabeling's rule
    for key in ("encoder_model_path", "decoder_model_path"):
        assert (xany / config[key]).is_file(), key
    assert {"display_name", "input_size", "max_width", "max_height"} <= set(config)
    names = {p.name for p in xany.iterdir()}
    assert {"README.md", "samtune_tools.json", MANIFEST, configs[0].name} <= names
    assert "Load Custom Model" in (xany / "README.md").read_text()
    record = json.loads((xany / "samtune_tools.json").read_text())
    assert record["profile"] == "x-anylabeling" and record["model"]["merged"] is True
    # samexporter's route on a tiny random model: 0.96 / 0.96 (its 1024 px upsampling)
    assert record["check"]["point_mean_iou"] > 0.9 and record["check"]["box_mean_iou"] > 0.9


def test_graph_interfaces(xany: Path, osam_dir: Path) -> None:
    enc, dec = _sessions(xany)
    (inp,) = enc.get_inputs()
    assert inp.name == "input_image" and inp.shape[2] == 3 and len(inp.shape) == 3
    assert not isinstance(inp.shape[0], int) and not isinstance(inp.shape[1], int)  # any size
    # embeddings (1, 32, 8, 8) plus the row carrying the image's extent in the input
    image = np.zeros((684, 1024, 3), np.float32)
    image[:300, :451] = 128.0  # a letterboxed image: black bars right and below
    out = enc.run(None, {"input_image": image})[0]
    assert out.shape == (1, 32, 9, 8) and out[0, 0, 8, :2].tolist() == [300.0, 451.0]
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(_files(xany)[0])).graph
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert [a.i for n in resizes for a in n.attribute if a.name == "antialias"] == [1]
    assert [i.name for i in dec.get_inputs()] == DECODER_INPUTS
    assert [o.name for o in dec.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
    enc, _ = _sessions(osam_dir)
    (inp,) = enc.get_inputs()
    assert inp.name == "x" and inp.shape == [1, 3, 128, 128]  # osam reads S from it
    assert not list(osam_dir.glob("*.yaml"))


# --------------------------------------------------------------------------- tool conventions


def _letterbox_run(enc, dec, image, prompt):
    """X-AnyLabeling's SegmentAnythingONNX (services/auto_labeling/sam_onnx.py), step by step:
    the image scaled into a 684 x 1024 canvas, points in canvas pixels plus the padding point,
    token-0 logits warped back."""
    cv2 = pytest.importorskip("cv2")
    canvas = (684, 1024)
    scale = min(canvas[1] / image.shape[1], canvas[0] / image.shape[0])
    matrix = np.array([[scale, 0, 0], [0, scale, 0], [0, 0, 1]])
    warped = cv2.warpAffine(image, matrix[:2], (canvas[1], canvas[0]), flags=cv2.INTER_LINEAR)
    emb = enc.run(None, {enc.get_inputs()[0].name: warped.astype(np.float32)})[0]
    points, labels = prompt
    coords = np.concatenate([points, [[0.0, 0.0]]]) * scale
    feed = {
        "image_embeddings": emb,
        "point_coords": coords[None].astype(np.float32),
        "point_labels": np.concatenate([labels, [-1]])[None].astype(np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array(canvas, np.float32),
    }
    masks = dec.run(None, feed)[0]
    inv = np.linalg.inv(matrix)[:2]
    size = (image.shape[1], image.shape[0])
    return cv2.warpAffine(masks[0, 0], inv, size, flags=cv2.INTER_LINEAR) > 0


def _prompts(boxes, centres):
    return (
        [(b.reshape(2, 2), np.array([2.0, 3.0])) for b in boxes],
        [(c[None], np.array([1.0])) for c in centres],
    )


@pytest.mark.parametrize(
    ("size", "box_floor", "point_floor"),
    # the canvas itself; letterboxed with black bars at the right (square) or bottom-right
    [((684, 1024), 0.97, 0.97), ((500, 500), 0.95, 0.95), ((300, 200), 0.9, 0.85)],
)
def test_xanylabeling_canvas_agrees_with_predict(model, xany, size, box_floor, point_floor):
    image, boxes, centres = _scene(*size)
    enc, dec = _sessions(xany)
    box_prompts, point_prompts = _prompts(boxes, centres)
    tool_boxes = np.stack([_letterbox_run(enc, dec, image, p) for p in box_prompts])
    tool_points = np.stack([_letterbox_run(enc, dec, image, p) for p in point_prompts])
    ref_boxes, ref_points = _reference(model, image, boxes, centres)
    assert iou(tool_boxes, ref_boxes).mean() > box_floor
    assert iou(tool_points, ref_points).mean() > point_floor


@pytest.mark.parametrize("profile", ["x-anylabeling", "osam"])
def test_tool_resize_route_agrees_with_predict(model, xany, osam_dir, profile):
    """samexporter's route (PIL resize to 1024, HWC input) and osam's (PIL resize to S,
    normalised NCHW input named x, points scaled to S)."""
    folder = xany if profile == "x-anylabeling" else osam_dir
    image, boxes, centres = _scene(240, 320, seed=3)
    enc, dec = _sessions(folder)
    box_prompts, point_prompts = _prompts(boxes, centres)
    prof = get_profile(profile)
    tool_boxes = run_tool(enc, dec, prof, 128, image, box_prompts)
    tool_points = run_tool(enc, dec, prof, 128, image, point_prompts)
    ref_boxes, ref_points = _reference(model, image, boxes, centres)
    assert iou(tool_points, ref_points).mean() > 0.97
    assert iou(tool_boxes, ref_boxes).mean() > 0.97


def test_box_padding_point_is_dropped(model, osam_dir):
    """A box prompt with the tools' padding point gives exactly the mask of the box alone
    (SAM's convention, samtune's training), and that is samtune.predict's box mask."""
    image, boxes, _ = _scene(240, 320, seed=3)
    enc, dec = _sessions(osam_dir)
    emb = enc.run(None, {"x": encoder_feed(image, get_profile("osam"), 128)})[0]
    scale = 128 / max(image.shape[:2])
    h, w = (int(n * scale + 0.5) for n in image.shape[:2])
    corners = boxes.reshape(-1, 2, 2) * (w / image.shape[1], h / image.shape[0])
    padded = np.concatenate([corners, np.zeros((len(boxes), 1, 2))], axis=1)

    def masks(coords, labels):
        feed = {
            "image_embeddings": emb,
            "point_coords": coords.astype(np.float32),
            "point_labels": np.tile([labels], (len(boxes), 1)).astype(np.float32),
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.array([-1.0], np.float32),  # osam's "no mask"
            "orig_im_size": np.asarray(image.shape[:2], np.float32),
        }
        return dec.run(None, feed)[0][:, 0]

    alone = masks(corners, [2.0, 3.0])
    np.testing.assert_array_equal(masks(padded, [2.0, 3.0, -1.0]), alone)
    ref = samtune.predict(model, image, boxes=boxes).masks
    assert iou(alone > 0, ref).mean() > 0.99


def test_drop_box_padding_keeps_point_prompts_padding() -> None:
    coords = torch.arange(12.0).reshape(2, 3, 2)
    labels = torch.tensor([[2.0, 3.0, -1.0], [1.0, 0.0, -1.0]])  # a box row, a points row
    kept, kept_labels = drop_box_padding(coords, labels)
    assert torch.equal(kept, coords) and torch.equal(kept_labels, labels)
    kept, kept_labels = drop_box_padding(coords[:1], labels[:1])
    assert torch.equal(kept_labels, labels[:1, :2]) and torch.equal(kept, coords[:1, :2])


def test_cli_prints_the_check(xany_cli) -> None:
    _, output = xany_cli
    assert "profile x-anylabeling" in output and "point mask IoU" in output


# --------------------------------------------------------------------------- the tools' own code


def _xanylabeling_module(name: str):
    """A module of X-AnyLabeling's auto-labeling services, loaded from its file (the package's
    __init__ needs Qt)."""
    spec = importlib.util.find_spec("anylabeling")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("X-AnyLabeling (anylabeling) is not installed")
    path = Path(spec.submodule_search_locations[0]) / "services" / "auto_labeling" / name
    return path


def test_xanylabeling_own_code(model, xany) -> None:
    path = _xanylabeling_module("sam_onnx.py")
    pytest.importorskip("cv2")
    spec = importlib.util.spec_from_file_location("xanylabeling_sam_onnx", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    enc, dec = _files(xany)
    tool = module.SegmentAnythingONNX(str(enc), str(dec))
    image, boxes, centres = _scene(300, 200)  # portrait: letterboxed into the 684 x 1024 canvas
    emb = tool.encode(image)  # X-AnyLabeling hands it RGB (qt_img_to_rgb_cv_img)
    box_masks = [
        tool.predict_masks(emb, [{"type": "rectangle", "data": b.tolist()}])[0, 0] > 0
        for b in boxes
    ]
    point_masks = [
        tool.predict_masks(emb, [{"type": "point", "data": c.tolist(), "label": 1}])[0, 0] > 0
        for c in centres
    ]
    ref_boxes, ref_points = _reference(model, image, boxes, centres)
    assert iou(np.stack(point_masks), ref_points).mean() > 0.85
    assert iou(np.stack(box_masks), ref_boxes).mean() > 0.9


def _config_reads(tree: ast.AST) -> set[str]:
    """Keys read as ``self.config["key"]`` in ``tree``."""
    return {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and getattr(node.value, "attr", None) == "config"
        and isinstance(node.slice, ast.Constant)
    }


def test_xanylabeling_config_keys(xany) -> None:
    """The keys X-AnyLabeling's SegmentAnything requires (Meta.required_config_names) and
    reads with self.config[...], taken from its source."""
    source = _xanylabeling_module("segment_anything.py").read_text()
    tree = ast.parse(source)
    required: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "required_config_names" for t in node.targets
        ):
            required |= {e.value for e in node.value.elts}
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            for stmt in node.body:  # unconditional reads; CLIP keys sit under an `if`
                if not isinstance(stmt, ast.If):
                    required |= _config_reads(stmt)
    assert {"type", "encoder_model_path", "input_size"} <= required
    config = yaml.safe_load(next(xany.glob("*.yaml")).read_text())
    assert required <= set(config), required - set(config)


def test_samexporter_own_code(model, xany) -> None:
    sam_onnx = pytest.importorskip("samexporter.sam_onnx")
    enc, dec = _files(xany)
    tool = sam_onnx.SegmentAnythingONNX(str(enc), str(dec), providers=["cpu"])
    image, boxes, centres = _scene(240, 320, seed=3)
    emb = tool.encode(np.ascontiguousarray(image[..., ::-1]))  # samexporter reads BGR
    box_masks = [
        tool.predict_masks(emb, [{"type": "rectangle", "data": b.tolist()}])[0, 0] > 0
        for b in boxes
    ]
    point_masks = [
        tool.predict_masks(emb, [{"type": "point", "data": c.tolist(), "label": 1}])[0, 0] > 0
        for c in centres
    ]
    ref_boxes, ref_points = _reference(model, image, boxes, centres)
    assert iou(np.stack(point_masks), ref_points).mean() > 0.97
    assert iou(np.stack(box_masks), ref_boxes).mean() > 0.97


def test_osam_own_code(model, osam_dir, tmp_path, monkeypatch) -> None:
    """osam's model registry, blob cache and generate(), as the export's README shows."""
    osam = pytest.importorskip("osam")
    pytest.importorskip("osam.apis")
    from osam._models.sam._models import Sam

    monkeypatch.setenv("HOME", str(tmp_path))  # osam's blob cache lives under ~
    enc, dec = _files(osam_dir)
    digest = {p: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in (enc, dec)}
    blobs = {}
    for key, path in (("encoder", enc), ("decoder", dec)):
        blob = osam.types.Blob(url=path.resolve().as_uri(), hash=digest[path])
        Path(blob.path).parent.mkdir(parents=True, exist_ok=True)
        Path(blob.path).write_bytes(path.read_bytes())
        blobs[key] = blob

    class Tuned(Sam):
        name = "samtune-test:latest"
        _blobs = blobs

    monkeypatch.setattr(osam.apis, "registered_model_types", [Tuned])
    monkeypatch.setattr(osam.apis, "running_model", None)
    image, boxes, centres = _scene(240, 320, seed=3)

    def run(points, labels):
        prompt = osam.types.Prompt(points=points, point_labels=labels)
        request = osam.types.GenerateRequest(model="samtune-test", image=image, prompt=prompt)
        ann = osam.apis.generate(request).annotations[0]
        full = np.zeros(image.shape[:2], bool)
        b = ann.bounding_box
        full[b.ymin : b.ymax + 1, b.xmin : b.xmax + 1] = ann.mask
        return full

    box_masks = [run(b.reshape(2, 2), np.array([2, 3])) for b in boxes]
    point_masks = [run(c[None], np.array([1])) for c in centres]
    ref_boxes, ref_points = _reference(model, image, boxes, centres)
    assert iou(np.stack(point_masks), ref_points).mean() > 0.97
    assert iou(np.stack(box_masks), ref_boxes).mean() > 0.97


@pytest.mark.slow
def test_samexporter_nchw_profile(model, tmp_path) -> None:
    """--profile samexporter: a (1, 3, 1024, 1024) normalised input, resized to S inside."""
    out = tmp_path / "tool"
    export_adapter(model, out, "x-anylabeling", profile="samexporter")
    enc, dec = _sessions(out)
    assert enc.get_inputs()[0].shape == [1, 3, 1024, 1024]
    image, boxes, centres = _scene(240, 320, seed=3)
    box_prompts, point_prompts = _prompts(boxes, centres)
    prof = get_profile("samexporter")
    ref_boxes, ref_points = _reference(model, image, boxes, centres)
    assert iou(run_tool(enc, dec, prof, 128, image, point_prompts), ref_points).mean() > 0.8
    assert iou(run_tool(enc, dec, prof, 128, image, box_prompts), ref_boxes).mean() > 0.8


@pytest.mark.slow
def test_1024_model_in_the_canvas_is_exact(tmp_path) -> None:
    """At SAM's own 1024 px nothing is resized for an image of X-AnyLabeling's canvas size:
    the tool gives samtune.predict's masks (measured 1.0000 / 1.0000)."""
    from samtune.models.presets import sam_from_config, tiny_config

    model = get_strategy("lora").apply(sam_from_config(tiny_config(1024), 0)).eval()
    out = tmp_path / "tool"
    export_adapter(model, out, "x-anylabeling")
    enc, dec = _sessions(out)
    image, boxes, centres = _scene(684, 1024)
    box_prompts, point_prompts = _prompts(boxes, centres)
    ref_boxes, ref_points = _reference(model, image, boxes, centres)
    tool_boxes = np.stack([_letterbox_run(enc, dec, image, p) for p in box_prompts])
    tool_points = np.stack([_letterbox_run(enc, dec, image, p) for p in point_prompts])
    assert iou(tool_boxes, ref_boxes).mean() > 0.999
    assert iou(tool_points, ref_points).mean() > 0.999
