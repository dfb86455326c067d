"""A Label Studio ML backend: keypoint and rectangle prompts in, brush masks out.

It speaks the conventions of ``label-studio-ml`` (``label_studio_ml/api.py``) as its SAM example
(``examples/segment_anything_model``) uses them, with the standard library's HTTP server:

* ``GET /health`` (and ``GET /``): ``{"status": "UP", "model_class": "SamtuneBackend",
  "model_version": ...}``.
* ``POST /setup`` ``{"project": "1.1712345678", "schema": "<View>...</View>", ...}``:
  remembers the labelling config; answers ``{"model_version": ...}``.
* ``POST /predict`` ``{"tasks": [{"id", "data": {"image": URL}}], "label_config": XML,
  "project": "1.17...", "params": {"context": {"result": [REGION, ...]}}}``: each REGION a
  ``keypointlabels`` (``value.x``/``value.y`` in percent of ``original_width`` /
  ``original_height``, ``is_positive``: positive unless false) or ``rectanglelabels``
  (``value.x, y, width, height`` in percent, ``rotation`` in degrees) region. The points and
  at most one rectangle are one prompt (one mask); several rectangles without points are a
  prompt each. Answers ``{"results": [{"result": [BRUSH, ...], "model_version", "score"}]}``,
  each BRUSH a ``brushlabels`` region (Label Studio RLE of the mask at the original size, the
  prompt's label, ``score`` the IoU head's) for the config's first ``BrushLabels`` tag and its
  image. No context (pre-annotation of whole tasks): ``{"results": []}``.
* ``POST /webhook``: accepted and ignored (samtune trains with ``samtune fit``).

Images come from the task's ``data`` (the config's ``Image`` tag's ``$value``), matched by
file name in the ``images`` folder (:func:`samtune.data.label_studio.resolve_image`), or, with
no folder, a local file path. Nothing is fetched over the network. One image is encoded once:
the last image's embedding is kept, so repeated clicks on one task only run the decoder.

Bad requests get a 4xx answer ``{"error": "..."}`` (400 malformed payload or prompt, 404 image
not found, 413 body too large, 422 unreadable image), never a traceback.
"""

from __future__ import annotations

import json
import threading
import uuid
import xml.etree.ElementTree as ElementTree
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import DataError, InputError, MissingFileError, SamtuneError, quote_untrusted
from ..io import parse_json

MAX_BODY = 64 * 1024 * 1024
PROMPT_TYPES = ("keypointlabels", "rectanglelabels")


class RequestError(InputError):
    """A request the backend cannot answer; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LabelStudioBackend:
    """The backend's logic, without HTTP: one model, one :class:`~samtune.segment.predictor.Predictor`.

    Args:
        model: a loaded SAM model (with its adapter, on its device).
        images: the folder of the project's images (None: task data must be local paths).
        model_version: what Label Studio shows as the predictions' model version.
        multimask: a single click asks SAM for 3 candidates and keeps the IoU head's best.

    Attributes:
        encodings: how many times the image encoder ran (one per new image).
    """

    def __init__(self, model, images: str | Path | None = None, *,
                 model_version: str = "samtune", multimask: bool = False) -> None:  # fmt: skip
        from ..segment.predictor import Predictor

        self.predictor = Predictor(model)
        self.images = Path(images).expanduser() if images is not None else None
        self.model_version, self.multimask = model_version, multimask
        self.encodings, self._image_key = 0, None
        self._configs: dict[str, str] = {}
        self._lock = threading.Lock()

    def health(self) -> dict:
        return {"status": "UP", "model_class": "SamtuneBackend",
                "model_version": self.model_version}  # fmt: skip

    def setup(self, payload: dict) -> dict:
        schema = payload.get("schema")
        if isinstance(schema, str):
            self._configs[str(payload.get("project", "")).split(".", 1)[0]] = schema
        return {"model_version": self.model_version}

    def predict(self, payload: dict) -> dict:
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not tasks or not isinstance(tasks[0], dict):
            raise RequestError("'tasks' must be a non-empty list of task objects")
        params = payload.get("params") or {}
        context = params.get("context") if isinstance(params, dict) else None
        regions = context.get("result") if isinstance(context, dict) else None
        if not regions:
            return {"results": []}  # no interaction yet: nothing to segment
        brush_name, image_name, data_key = brush_tags(self._config(payload))
        task = tasks[0]
        prompt = prompts_from_regions(regions)
        with self._lock:
            self._set_image(task, data_key, prompt.size)
            found = self.predictor.predict(
                boxes=prompt.boxes, points=prompt.points, point_labels=prompt.labels,
                multimask=self.multimask and prompt.single_click,
            )  # fmt: skip
        results = [brush_region(m, float(s), prompt, brush_name, image_name)
                   for m, s in zip(found.masks, found.scores, strict=True)]  # fmt: skip
        score = float(np.mean(found.scores)) if len(found.scores) else 0.0
        return {"results": [{"result": results, "model_version": self.model_version,
                             "score": score}]}  # fmt: skip

    def _config(self, payload: dict) -> str:
        config = payload.get("label_config")
        if isinstance(config, str) and config.strip():
            return config
        project = str(payload.get("project", "")).split(".", 1)[0]
        if project in self._configs:
            return self._configs[project]
        raise RequestError("no 'label_config' in the request and no /setup for its project")

    def _set_image(self, task: dict, data_key: str, size: tuple[int, int]) -> None:
        """Encode the task's image unless it is the one encoded last."""
        data = task.get("data")
        if not isinstance(data, dict) or data_key not in data:
            raise RequestError(f"the task has no data[{data_key!r}] (the Image tag's value)")
        path = self._image_path(data[data_key])
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key != self._image_key:
            self._image_key = None
            try:
                self.predictor.set_image(path)
            except DataError as exc:
                raise RequestError(str(exc), 422) from None
            self._image_key, self.encodings = key, self.encodings + 1
        shown = tuple(self.predictor.original_size)
        if shown != size:
            raise RequestError(
                f"image {str(path)!r} is {shown[1]}x{shown[0]} but Label Studio shows it as "
                f"{size[1]}x{size[0]} (original_width x original_height): the images folder "
                "holds another version of it"
            )

    def _image_path(self, reference: object) -> Path:
        from ..data.label_studio import resolve_image

        if not isinstance(reference, str) or not reference.strip():
            raise RequestError("the task's image reference must be a non-empty string")
        if self.images is not None:
            found = resolve_image(reference, self.images)
            if found is None:
                raise RequestError(
                    f"image {quote_untrusted(reference)} is not in {str(self.images)!r} (matched "
                    "by file name, with or without Label Studio's upload prefix)", 404
                )  # fmt: skip
            return found
        if urlsplit(reference).scheme or reference.startswith("/data/"):
            raise RequestError(
                f"image {quote_untrusted(reference)} is a Label Studio URL; this backend fetches "
                "nothing over the network: start it with --images DIR holding the project's images"
            )
        path = Path(reference).expanduser()
        if not path.is_file():
            raise RequestError(f"image {quote_untrusted(reference)} is not a file", 404)
        return path


class Prompt:
    """One request's prompts in original pixels: ``boxes`` (B,4) XYXY or None, ``points``
    (P,K,2) / ``labels`` (P,K) or None, the brush ``label`` and the image ``size`` (H, W)."""

    def __init__(self, boxes, points, labels, label: str, size: tuple[int, int]) -> None:
        self.boxes, self.points, self.labels = boxes, points, labels
        self.label, self.size = label, size

    @property
    def single_click(self) -> bool:
        return self.boxes is None and self.points is not None and self.points.shape[1] == 1


def prompts_from_regions(regions: object) -> Prompt:
    """The :class:`Prompt` of ``context.result``: keypoints and rectangles, in percent."""
    if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
        raise RequestError("'params.context.result' must be a list of region objects")
    used = [r for r in regions if r.get("type") in PROMPT_TYPES]
    if not used:
        raise RequestError("the context holds no keypointlabels or rectanglelabels region")
    size = _region_size(used)
    points, labels, boxes = [], [], []
    for region in used:
        value = region.get("value")
        if not isinstance(value, dict):
            raise RequestError("a context region has no 'value' object")
        if region["type"] == "keypointlabels":
            points.append(_pixels(value, ("x", "y"), size))
            labels.append(0 if region.get("is_positive", True) is False else 1)
        else:
            boxes.append(_box(value, size))
    if len(boxes) > 1 and points:
        raise RequestError("give keypoints with at most one rectangle (one object per request)")
    return Prompt(
        np.asarray(boxes, np.float32) if boxes else None,
        np.asarray(points, np.float32)[None] if points else None,
        np.asarray(labels, np.int64)[None] if points else None,
        _label(used[-1]),
        size,
    )


def _region_size(regions: list[dict]) -> tuple[int, int]:
    sizes = {(r.get("original_height"), r.get("original_width")) for r in regions}
    if len(sizes) != 1:
        raise RequestError("the context regions disagree on original_width/original_height")
    (h, w) = sizes.pop()
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (h, w)):
        raise RequestError("'original_width'/'original_height' must be positive integers")
    return h, w


def _pixels(value: dict, keys: tuple[str, ...], size: tuple[int, int]) -> list[float]:
    """``value[keys]`` (percent of width, height, width, ...) in pixels."""
    out = []
    for i, key in enumerate(keys):
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise RequestError(f"'value.{key}' must be a number (percent); found {v!r}")
        out.append(v * (size[1] if i % 2 == 0 else size[0]) / 100)
    return out


def _box(value: dict, size: tuple[int, int]) -> list[float]:
    """XYXY pixels of a rectangle (the extent of its corners when it is turned)."""
    from ..data.label_studio.export import rectangle_outline

    try:
        corners = np.asarray(rectangle_outline(value, size[1], size[0])).reshape(4, 2)
    except DataError as exc:
        raise RequestError(str(exc)) from None
    return [*corners.min(0).tolist(), *corners.max(0).tolist()]


def _label(region: dict) -> str:
    names = region["value"].get(region["type"])
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise RequestError(f"'value.{region['type']}' must be a list holding the region's label")
    return names[0]


def brush_tags(config: str) -> tuple[str, str, str]:
    """(BrushLabels name, its Image name, the task data key of that image) of a config."""
    try:
        root = ElementTree.fromstring(config)
    except ElementTree.ParseError as exc:
        raise RequestError(f"the labelling config is not XML ({exc})") from None
    tags = list(root.iter())
    brush = next((t for t in tags if t.tag.lower() == "brushlabels"), None)
    if brush is None or not brush.get("name") or not brush.get("toName"):
        raise RequestError(
            "the labelling config has no <BrushLabels name=... toName=...> tag for the masks"
        )
    image = next((t for t in tags if t.tag.lower() == "image"
                  and t.get("name") == brush.get("toName")), None)  # fmt: skip
    value = image.get("value", "") if image is not None else ""
    if not value.startswith("$"):
        raise RequestError(f"no <Image name={brush.get('toName')!r} value='$...'> in the config")
    return brush.get("name"), brush.get("toName"), value[1:]


def brush_region(mask: np.ndarray, score: float, prompt: Prompt, name: str, image: str) -> dict:
    """A ``brushlabels`` result of ``mask`` (HxW bool) as Label Studio stores it."""
    from ..data.label_studio import encode_mask

    h, w = prompt.size
    return {"id": uuid.uuid4().hex[:10], "from_name": name, "to_name": image,
            "original_width": w, "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [prompt.label]},
            "score": score, "type": "brushlabels", "readonly": False}  # fmt: skip


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    backend: LabelStudioBackend
    quiet = False
    server_version = "samtune-label-studio"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urlsplit(self.path).path.rstrip("/")
        if path in ("", "/health"):
            self._answer(200, self.backend.health())
        elif path == "/metrics":
            self._answer(200, {})
        else:
            self._answer(404, {"error": f"no GET {path or '/'}; try /health"})

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path.rstrip("/")
        routes = {"/setup": self.backend.setup, "/predict": self.backend.predict,
                  "/webhook": lambda payload: {"status": "ok"}}  # fmt: skip
        if path not in routes:
            self._answer(404, {"error": f"no POST {path or '/'}; try /predict or /setup"})
            return
        try:
            self._answer(200, routes[path](self._payload()))
        except RequestError as exc:
            self._answer(exc.status, {"error": str(exc)})
        except MissingFileError as exc:
            self._answer(404, {"error": str(exc)})
        except SamtuneError as exc:  # a prompt outside the image and the like
            self._answer(400, {"error": str(exc)})
        except Exception as exc:  # a failure of the model itself: said, never a traceback
            self._answer(500, {"error": f"prediction failed: {type(exc).__name__}: {exc}"})

    def _payload(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise RequestError("Content-Length must be a number") from None
        if length > MAX_BODY:
            raise RequestError(f"request body over {MAX_BODY} bytes", 413)
        text = self.rfile.read(length).decode("utf-8", errors="replace")
        payload = parse_json(text or "null", "request body", RequestError)
        if not isinstance(payload, dict):
            raise RequestError("the request body must be a JSON object")
        return payload

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        if not self.quiet:
            super().log_message(format, *args)


def make_server(
    backend: LabelStudioBackend, host: str = "127.0.0.1", port: int = 9090, *, quiet: bool = False
) -> ThreadingHTTPServer:
    """A threading HTTP server answering Label Studio for ``backend`` (``port`` 0: any free
    port, see ``server.server_address``). Call ``serve_forever()``; ``shutdown()`` stops it."""
    handler = type("Handler", (_Handler,), {"backend": backend, "quiet": quiet})
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
