"""CVAT serverless (nuclio) entry points of a samtune-exported SAM interactor.

``init_context`` loads the model once per worker; ``handler`` answers one interactor request:
``{"image": base64, "pos_points": [[x, y], ...], "neg_points": [...], "obj_bbox": [[x1, y1],
[x2, y2]] or null}`` -> ``{"mask": H x W booleans}``. Written by ``samtune export --format cvat``.
"""

import base64
import io
import json

import numpy as np
from model_handler import ModelHandler, PromptError
from PIL import Image


def init_context(context):
    context.logger.info("Init context...  0%")
    context.user_data.model = ModelHandler()
    context.logger.info("Init context...100%")


def _reply(context, body, status_code):
    return context.Response(
        body=json.dumps(body), headers={}, content_type="application/json", status_code=status_code
    )


def _read_request(body):
    """The image (HxWx3 uint8 RGB) and prompts of a request body (dict, or JSON text)."""
    if isinstance(body, (bytes, str)):
        body = json.loads(body)
    if not isinstance(body, dict) or "image" not in body:
        raise PromptError(
            'expected a JSON object with "image" (base64), "pos_points", "neg_points"'
        )
    try:
        image = Image.open(io.BytesIO(base64.b64decode(body["image"])))
        image = np.array(image.convert("RGB"))  # CVAT may send any mode; a writable copy
    except Exception as exc:  # any undecodable image is the request's fault
        raise PromptError(f'"image" is not a base64 image file: {exc}') from exc
    return image, body.get("pos_points") or [], body.get("neg_points") or [], body.get("obj_bbox")


def handler(context, event):
    context.logger.info("call handler")
    try:
        image, pos_points, neg_points, obj_bbox = _read_request(event.body)
        mask = context.user_data.model.handle(image, pos_points, neg_points, obj_bbox)
    except PromptError as exc:
        context.logger.warn(str(exc))
        return _reply(context, {"error": str(exc)}, 400)
    return _reply(context, {"mask": mask.tolist()}, 200)
