"""The whole loop with Label Studio itself: it connects the backend, asks it for a mask on a
task, saves the mask as a person's annotation, exports the project, and samtune reads the export.

Label Studio is too heavy for the dev extra (Django and ~300 packages); the test runs where its
``label-studio`` command is found: ``$SAMTUNE_LABEL_STUDIO`` (the executable) or on ``PATH``.
A separate venv does it (label-studio 1.23.2 needs ``sentry-sdk<3``)::

    python3 -m venv /tmp/ls && /tmp/ls/bin/pip install label-studio "sentry-sdk<3"
    SAMTUNE_LABEL_STUDIO=/tmp/ls/bin/label-studio pytest -m slow tests/test_label_studio_live.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import samtune
from samtune.data.label_studio import decode_mask, read_label_studio
from samtune.serve import LabelStudioBackend, make_server

TOKEN = "0123456789abcdef0123456789abcdef01234567"
CONFIG = (Path(__file__).parents[1] / "docs" / "annotation-tools.md").read_text()
CONFIG = CONFIG.split("```xml")[1].split("```")[0]  # the labelling config the docs give


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def label_studio(tmp_path: Path):
    executable = os.environ.get("SAMTUNE_LABEL_STUDIO") or shutil.which("label-studio")
    if not executable:
        pytest.skip("label-studio is not installed (set SAMTUNE_LABEL_STUDIO)")
    port = _free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls"),
           "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",  # on 127.0.0.1
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true"}  # fmt: skip
    args = [executable, "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
            "--username", "me@example.com", "--password", "pass12345", "--user-token", TOKEN]  # fmt: skip
    log = open(tmp_path / "label-studio.log", "w")  # noqa: SIM115
    process = subprocess.Popen(args, env=env, stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, process, tmp_path / "label-studio.log")
        yield url, tmp_path / "ls" / "media" / "upload"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()


def _wait_up(url: str, process: subprocess.Popen, log: Path, limit: float = 400) -> None:
    import requests

    start = time.monotonic()
    while time.monotonic() - start < limit:
        if process.poll() is not None:
            pytest.fail(f"label-studio stopped:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/health", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(2)
    pytest.fail(f"label-studio did not start in {limit} s")


@pytest.mark.slow
def test_label_studio_gets_masks_and_its_export_trains(label_studio, tmp_path: Path) -> None:
    import requests

    url, uploads = label_studio
    auth = {"Authorization": f"Token {TOKEN}"}
    project = requests.post(f"{url}/api/projects", headers=auth,
                            json={"title": "samtune", "label_config": CONFIG}).json()["id"]  # fmt: skip
    pixels = np.random.default_rng(0).integers(0, 60, (96, 128, 3), dtype=np.uint8)
    pixels[20:70, 30:90] = (200, 180, 40)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    with open(tmp_path / "scene.png", "rb") as fh:
        requests.post(f"{url}/api/projects/{project}/import", headers=auth,
                      files={"file": ("scene.png", fh, "image/png")}).raise_for_status()  # fmt: skip
    task = requests.get(f"{url}/api/projects/{project}/tasks", headers=auth).json()[0]
    assert task["data"]["image"].startswith(f"/data/upload/{project}/")

    model = samtune.load_model("tiny")
    backend = LabelStudioBackend(model, uploads / str(project), model_version="live")
    server = make_server(backend, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        ml = requests.post(f"{url}/api/ml", headers=auth, json={
            "url": f"http://127.0.0.1:{server.server_address[1]}", "project": project,
            "is_interactive": True, "title": "samtune"})  # fmt: skip
        assert ml.status_code == 201, ml.text
        click = {"original_width": 128, "original_height": 96, "image_rotation": 0,
                 "value": {"x": 50.0, "y": 50.0, "width": 0.5, "keypointlabels": ["can"]},
                 "is_positive": True, "id": "k1", "from_name": "click", "to_name": "image",
                 "type": "keypointlabels", "origin": "manual"}  # fmt: skip
        answer = requests.post(f"{url}/api/ml/{ml.json()['id']}/interactive-annotating",
                               headers=auth, json={"task": task["id"],
                                                   "context": {"result": [click]}})  # fmt: skip
        assert answer.status_code == 200, answer.text
    finally:
        server.shutdown()
        server.server_close()
    (region,) = answer.json()["data"]["result"]
    mask = decode_mask(region["value"]["rle"], 96, 128)
    expected = samtune.predict(model, tmp_path / "scene.png", points=[[[64.0, 48.0]]],
                               point_labels=[[1]]).masks[0]  # fmt: skip
    assert np.array_equal(mask, expected) and region["value"]["brushlabels"] == ["can"]

    requests.post(f"{url}/api/tasks/{task['id']}/annotations", headers=auth,
                  json={"result": [region]}).raise_for_status()  # fmt: skip
    export = requests.get(f"{url}/api/projects/{project}/export?exportType=JSON", headers=auth)
    (tmp_path / "export.json").write_bytes(export.content)
    data = read_label_studio(tmp_path / "export.json", tmp_path)  # scene.png, by file name
    assert data.categories == {1: "can"} and np.array_equal(data[0].masks[0], mask)
    assert json.loads(export.content)[0]["annotations"][0]["result"][0]["type"] == "brushlabels"
