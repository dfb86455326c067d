"""The annotation loop, end to end on the demo data: serve the zero-shot model to Label Studio,
take the annotators' saved corrections (a Label Studio JSON export), fine-tune on them, serve
the adapter, and count the clicks the next images need.

Clicks to 0.85 IoU, as an annotator makes them through the backend (HTTP on 127.0.0.1, the
payloads Label Studio sends): the first click at the instance's centre, each further click at
the centre of the largest error region (``samtune.prompting.next_click``), positive or
negative, sent with all earlier clicks; at most 10 clicks (a miss counts as 11).
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import samtune
from samtune.data.label_studio import decode_mask, encode_mask
from samtune.prompting import center_point, next_click
from samtune.segment.prompted import load_for_inference
from samtune.serve import LabelStudioBackend, make_server

pytestmark = pytest.mark.slow

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="object"/></BrushLabels>
  <KeyPointLabels name="click" toName="image" smart="true"><Label value="object"/></KeyPointLabels>
</View>"""


def write_export(dataset, folder: Path) -> Path:
    """A Label Studio JSON export of ``dataset``: its masks as a person's saved brush regions,
    its images under Label Studio's upload names (an 8-hex-digit prefix)."""
    (folder / "imgs").mkdir(parents=True)
    tasks = []
    for i in range(len(dataset)):
        sample, source = dataset[i], dataset.image_path(i)
        shutil.copy(source, folder / "imgs" / source.name)
        h, w = sample.masks.shape[1:]
        result = [{"type": "brushlabels", "original_width": w, "original_height": h,
                   "from_name": "mask", "to_name": "image", "image_rotation": 0,
                   "value": {"format": "rle", "rle": encode_mask(m),
                             "brushlabels": [dataset.categories[int(c)]]}}
                  for m, c in zip(sample.masks, sample.category_ids, strict=True)]  # fmt: skip
        tasks.append({"id": i + 1, "data": {"image": f"/data/upload/1/{i:08x}-{source.name}"},
                      "annotations": [{"result": result, "was_cancelled": False}]})  # fmt: skip
    path = folder / "export.json"
    path.write_text(json.dumps(tasks))
    return path


def clicks_to_iou(model, dataset, n_images: int, target: float = 0.85) -> np.ndarray:
    """Clicks each instance of the first ``n_images`` images needs through the backend."""
    backend = LabelStudioBackend(model, dataset.image_root)
    server = make_server(backend, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/predict"

    def ask(name: str, clicks: list, h: int, w: int) -> np.ndarray:
        regions = [{"original_width": w, "original_height": h, "image_rotation": 0,
                    "type": "keypointlabels", "from_name": "click", "to_name": "image",
                    "value": {"x": 100 * x / w, "y": 100 * y / h, "width": 0.5,
                              "keypointlabels": ["object"]}, "is_positive": bool(label)}
                   for x, y, label in clicks]  # fmt: skip
        body = {"tasks": [{"id": 1, "data": {"image": f"/data/upload/1/0a1b2c3d-{name}"}}],
                "project": "1.1", "label_config": LABEL_CONFIG,
                "params": {"context": {"result": regions}}}  # fmt: skip
        request = urllib.request.Request(
            url, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        return decode_mask(answer["results"][0]["result"][0]["value"]["rle"], h, w)

    counts = []
    try:
        for i in range(n_images):
            sample = dataset[i]
            h, w = sample.image.shape[:2]
            for truth in sample.masks:
                x, y = center_point(truth)
                clicks, needed = [(float(x), float(y), 1)], 11
                for k in range(1, 11):
                    pred = ask(sample.file_name, clicks, h, w)
                    if (pred & truth).sum() / max((pred | truth).sum(), 1) >= target:
                        needed = k
                        break
                    correction = next_click(pred, truth)
                    if correction is None:
                        needed = k
                        break
                    clicks.append(tuple(float(v) for v in correction))
                counts.append(needed)
    finally:
        server.shutdown()
        server.server_close()
    assert backend.encodings == n_images  # one encoding per image, however many clicks
    return np.array(counts)


def test_corrections_from_label_studio_make_the_next_images_need_fewer_clicks(tmp_path):
    train = samtune.load_dataset("demo", "train")
    test = samtune.load_dataset("demo", "test")
    export = write_export(train, tmp_path / "ls")
    before = clicks_to_iou(load_for_inference("demo"), test, n_images=12)
    result = samtune.fit(model="demo", strategy="lora", dataset=f"label-studio:{export}",
                         dataset_options={"images": str(tmp_path / "ls" / "imgs")},
                         output_dir=tmp_path / "run", max_steps=80, lr=3e-4, batch_size=2,
                         warmup_steps=2, max_instances=8, compare=False, quiet=True,
                         log_with="none")  # fmt: skip
    after = clicks_to_iou(load_for_inference("demo", result.adapter_dir), test, n_images=12)
    print(f"mean clicks to 0.85 IoU: zero-shot {before.mean():.2f}, tuned {after.mean():.2f} "
          f"({len(before)} instances)")  # fmt: skip
    assert len(before) == len(after) > 20
    assert after.mean() < before.mean()
    assert (after <= 10).mean() > (before <= 10).mean()
