"""`samtune serve label-studio`: a real HTTP server on 127.0.0.1 answering Label Studio's payloads.

The payloads are those of label-studio-ml-backend (label_studio_ml/api.py, `/predict` and
`/setup`) and of its SAM example's test (examples/segment_anything_model/test_predict.py).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import samtune
from samtune.data.label_studio import decode_mask
from samtune.serve import LabelStudioBackend, make_server

CONFIG = """
<View>
    <Image name="image" value="$image" zoom="true"/>
    <BrushLabels name="tag" toName="image">
        <Label value="Banana" background="#FF0000"/>
        <Label value="Orange" background="#0d14d3"/>
    </BrushLabels>
    <KeyPointLabels name="tag2" toName="image" smart="true" >
        <Label value="Banana" background="#000000" showInline="true"/>
        <Label value="Orange" background="#000000" showInline="true"/>
    </KeyPointLabels>
    <RectangleLabels name="tag3" toName="image" smart="true" >
        <Label value="Banana" background="#000000" showInline="true"/>
        <Label value="Orange" background="#000000" showInline="true"/>
    </RectangleLabels>
</View>
"""
W, H = 64, 48


@pytest.fixture(scope="module")
def model():
    return samtune.load_model("tiny")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    for name in ("scene.png", "other.png"):
        pixels = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        pixels[10:30, 20:45] = (200, 180, 40)
        Image.fromarray(pixels).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


@pytest.fixture
def server(model, images):
    backend = LabelStudioBackend(model, images, model_version="test")
    httpd = make_server(backend, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield backend, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def call(url: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def keypoint(x: float, y: float, positive: bool = True, label: str = "Banana") -> dict:
    return {"original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": 0.3189792663476874, "labels": [label],
                      "keypointlabels": [label]},
            "is_positive": positive, "id": "fBWv1t0S2L", "from_name": "tag2", "to_name": "image",
            "type": "keypointlabels", "origin": "manual"}  # fmt: skip


def rectangle(x: float, y: float, w: float, h: float, label: str = "Orange") -> dict:
    return {"original_width": W, "original_height": H, "type": "rectanglelabels",
            "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]}}  # fmt: skip


def payload(regions: list | None, image: str = "/data/upload/1/3f2a9c1e-scene.png") -> dict:
    params = {"login": None, "password": None}
    if regions is not None:
        params["context"] = {"result": regions}
    return {"tasks": [{"id": 7, "data": {"image": image}}], "model_version": "test",
            "project": "1.1712345678", "label_config": CONFIG, "params": params}  # fmt: skip


def brush_masks(answer: dict) -> list[np.ndarray]:
    (prediction,) = answer["results"]
    out = []
    for region in prediction["result"]:
        assert region["type"] == "brushlabels" and region["from_name"] == "tag"
        assert region["to_name"] == "image" and region["value"]["format"] == "rle"
        h, w = region["original_height"], region["original_width"]
        out.append(decode_mask(region["value"]["rle"], h, w))
    return out


def px(percent: float, size: int) -> float:
    return percent * size / 100


def test_health_setup_and_no_context(server) -> None:
    _, url = server
    assert call(url + "/health") == (200, {"status": "UP", "model_class": "SamtuneBackend",
                                           "model_version": "test"})  # fmt: skip
    status, body = call(url + "/setup", {"project": "1.1712345678", "schema": CONFIG,
                                         "hostname": "http://localhost:8080"})  # fmt: skip
    assert (status, body) == (200, {"model_version": "test"})
    assert call(url + "/predict", payload(None)) == (200, {"results": []})
    assert call(url + "/webhook", {"action": "ANNOTATION_CREATED"})[0] == 200


def test_clicks_give_samtune_predict_masks_and_encode_once(server, model, images) -> None:
    backend, url = server
    image = images / "scene.png"
    clicks = [keypoint(50.0, 41.5)]
    status, body = call(url + "/predict", payload(clicks))
    assert status == 200, body
    (mask,) = brush_masks(body)
    expected = samtune.predict(model, image, points=[[[px(50.0, W), px(41.5, H)]]],
                               point_labels=[[1]])  # fmt: skip
    assert 0 < mask.sum() < mask.size and np.array_equal(mask, expected.masks[0])
    assert body["results"][0]["result"][0]["value"]["brushlabels"] == ["Banana"]
    clicks.append(keypoint(10.0, 80.0, positive=False))
    (mask,) = brush_masks(call(url + "/predict", payload(clicks))[1])
    expected = samtune.predict(model, image, points=[[[px(50.0, W), px(41.5, H)], [px(10.0, W), px(80.0, H)]]],
                               point_labels=[[1, 0]])  # fmt: skip
    assert np.array_equal(mask, expected.masks[0])
    box = rectangle(30.0, 20.0, 40.0, 45.0)
    (mask,) = brush_masks(call(url + "/predict", payload([box]))[1])
    expected = samtune.predict(model, image, boxes=[[px(30, W), px(20, H), px(70, W), px(65, H)]])
    assert np.array_equal(mask, expected.masks[0])
    assert backend.encodings == 1  # three requests on one image: one encoding
    call(url + "/predict", payload(clicks[:1], image="/data/upload/1/other.png"))
    assert backend.encodings == 2


def test_rle_is_the_converters(server) -> None:
    converter = pytest.importorskip("label_studio_converter.brush")
    _, url = server
    region = call(url + "/predict", payload([keypoint(50.0, 41.5)]))[1]["results"][0]["result"][0]
    mask = decode_mask(region["value"]["rle"], H, W)
    assert region["value"]["rle"] == converter.mask2rle(mask.astype(np.uint8) * 255)


@pytest.mark.parametrize(
    "body, status, words",
    [
        (payload([keypoint(150.0, 20.0)]), 400, "outside"),
        (payload([keypoint(50.0, 50.0)], image="/data/upload/1/nothere.png"), 404, "not in"),
        (payload([keypoint(50.0, 50.0)], image="broken.png"), 422, "cannot be read"),
        ({**payload([keypoint(5.0, 5.0)]), "label_config": "<View>"}, 400, "not XML"),
        ({**payload([keypoint(5.0, 5.0)]), "tasks": []}, 400, "'tasks'"),
        (payload([{"type": "choices", "value": {}}]), 400, "no keypointlabels"),
        (payload([{**keypoint(5.0, 5.0), "value": {"x": "5", "y": 5}}]), 400, "must be a number"),
        (payload([rectangle(1, 1, 5, 5), rectangle(9, 9, 5, 5), keypoint(5, 5)]), 400, "at most"),
        (
            {
                **payload([keypoint(5.0, 5.0)]),
                "label_config": '<View><Image name="image" value="$image"/></View>',
            },
            400,
            "no <BrushLabels",
        ),  # fmt: skip
    ],
)
def test_bad_requests_get_4xx_and_a_message(server, body, status, words) -> None:
    _, url = server
    got, answer = call(url + "/predict", body)
    assert got == status and words in answer["error"], answer


def test_malformed_bodies_and_routes(server, model) -> None:
    _, url = server
    status, answer = call(url + "/predict", raw=b"{not json")
    assert status == 400 and "not valid JSON" in answer["error"]
    assert call(url + "/predict", [1, 2])[0] == 400
    assert call(url + "/nothing", {})[0] == 404
    assert call(url + "/nothing")[0] == 404
    without_folder = LabelStudioBackend(model)
    with pytest.raises(Exception, match="fetches nothing over the network"):
        without_folder.predict(payload([keypoint(5.0, 5.0)], image="http://example.com/a.png"))
