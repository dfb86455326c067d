"""A tuned SAM as a CVAT serverless interactor: a nuclio function folder.

:func:`export_cvat` writes (through :func:`samtune.io.atomic_dir`) the layout of CVAT's own
SAM functions (``serverless/pytorch/facebookresearch/sam/nuclio``)::

    function.yaml     nuclio spec: metadata.annotations.type interactor (version 2, an optional
                      starting box), a Python runtime, build steps that pip install samtune
    main.py           init_context (loads the model once) and handler (one interactor request)
    model_handler.py  ModelHandler: the model and a samtune.Predictor that keeps the last
                      image's embedding, so further clicks on it skip the encoder
    model/            the merged model (a transformers SamModel folder), or the adapter where
                      the strategy does not merge (``adapter``: the base loads from its source)
    README.md         how to deploy it and what it answers

The handler reads CVAT's interactor request ``{"image": base64, "pos_points": [[x, y], ...],
"neg_points": [...], "obj_bbox": [[x1, y1], [x2, y2]] | null}`` (original pixels) and answers
``{"mask": H x W booleans}`` as CVAT's SAM 2 function does. Its mask equals
:func:`samtune.predict` for the same prompt: one prompt of all points (1 positive, 0
negative) and the box; a single click without a box uses the multimask output ranked by the
IoU head (SAM's advice for one ambiguous point), anything else the single-mask output.

The code in ``main.py`` and ``model_handler.py`` is this package's
``samtune/assets/cvat/*.py``, copied as it is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import __version__
from ..adapters import save_adapter
from ..io import atomic_dir
from .formats import save_hf_folder
from .onnx import _plain_copy
from .tools import model_stem

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "cvat"
CODE_FILES = ("main.py", "model_handler.py")
MODEL_DIR = "model"


def function_spec(name: str, version: str = __version__) -> dict[str, Any]:
    """The nuclio ``function.yaml`` of the interactor called ``name``."""
    return {
        "metadata": {
            "name": name,
            "namespace": "cvat",
            "annotations": {
                "name": f"Segment Anything (samtune, {name})",
                "version": 2,
                "type": "interactor",
                "spec": "",
                "min_pos_points": 0,
                "min_neg_points": 0,
                "startswith_box_optional": True,
                "help_message": "Click positive points on the object and negative points "
                "around it, or start with a box; a samtune-tuned SAM answers with a mask",
            },
        },
        "spec": {
            "description": "Interactive segmentation with a samtune-tuned Segment Anything",
            "runtime": "python:3.10",
            "handler": "main:handler",
            "eventTimeout": "30s",
            "build": {
                "image": f"cvat.{name}",
                "baseImage": "python:3.10-slim",
                "directives": {
                    "preCopy": [
                        {"kind": "ENV", "value": "DEBIAN_FRONTEND=noninteractive"},
                        {
                            "kind": "RUN",
                            "value": "pip install --no-cache-dir torch torchvision "
                            "--index-url https://download.pytorch.org/whl/cpu",
                        },  # fmt: skip
                    ],
                    "postCopy": [
                        {"kind": "RUN", "value": _install_samtune(version)},
                    ],
                },
            },
            "triggers": {
                "myHttpTrigger": {
                    "maxWorkers": 1,
                    "kind": "http",
                    "workerAvailabilityTimeoutMilliseconds": 10000,
                    "attributes": {"maxRequestBodySize": 33554432},  # 32 MB, as CVAT's
                }
            },
            "platform": {
                "attributes": {
                    "restartPolicy": {"name": "always", "maximumRetryCount": 3},
                    "mountMode": "volume",
                }
            },
        },
    }


def _install_samtune(version: str) -> str:
    """A wheel put in ``wheels/`` beside function.yaml, else samtune from the package index."""
    return (
        "if ls /opt/nuclio/wheels/samtune-*.whl >/dev/null 2>&1; "
        "then pip install --no-cache-dir /opt/nuclio/wheels/samtune-*.whl; "
        f'else pip install --no-cache-dir "samtune=={version}"; fi'
    )


def export_cvat(
    model: torch.nn.Module,
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    protect=(),
) -> Path:
    """Write the nuclio function folder of ``model`` (see the module docstring).

    Raises:
        InputError: an output that may not be written.
    """
    sam, info = _plain_copy(model)
    name = model_stem(info)
    with atomic_dir(output, overwrite=overwrite, protect=protect) as tmp:
        if info["merged"] or info["strategy"] is None:
            save_hf_folder(sam, tmp / MODEL_DIR)
        else:  # layers that do not fold: the adapter, applied to its base at start-up
            save_adapter(model, tmp / MODEL_DIR)
        for file in CODE_FILES:
            shutil.copyfile(ASSETS / file, tmp / file)
        spec = yaml.safe_dump(function_spec(name), sort_keys=False)
        (tmp / "function.yaml").write_text(_HEADER + spec)
        (tmp / "README.md").write_text(readme(name, merged=bool(info["merged"])))
    return Path(output)


_HEADER = "# CVAT serverless interactor written by samtune (see README.md)\n"


def readme(name: str, *, merged: bool) -> str:
    """README.md of the function folder."""
    model = (
        "the merged model (a transformers `SamModel` folder)"
        if merged
        else "the adapter; the base model it records loads from its source when the function starts"
    )
    return f"""# {name}: a samtune-tuned SAM as a CVAT interactor

A nuclio function in the layout of CVAT's own SAM functions. `model/` holds {model}.

## Deploy

With CVAT's serverless components running (`docker compose -f docker-compose.yml
-f components/serverless/docker-compose.serverless.yml up -d`):

```bash
nuctl deploy --project-name cvat --path . --platform local
# or, from a CVAT checkout:  ./serverless/deploy_cpu.sh /path/to/this/folder
```

The build installs CPU PyTorch and samtune {__version__}. Where samtune is not on your
package index, build its wheel (`pip wheel --no-deps /path/to/samtune -w wheels/`) into a
`wheels/` folder here first: the build installs it from there.

## Use

In CVAT: AI Tools > Interactors > "Segment Anything (samtune, {name})". Click positive points
(left) and negative points (right), or start with a box. Each click sends the frame and all
points; the function keeps the last frame's image embedding, so only the first click on a frame
runs the image encoder.

## Request and answer

Request (CVAT's interactor protocol): `{{"image": "<base64>", "pos_points": [[x, y], ...],
"neg_points": [[x, y], ...], "obj_bbox": [[x1, y1], [x2, y2]] or null}}`, original pixels.
Answer: `{{"mask": [[true, false, ...], ...]}}` (image height x width), equal to
`samtune.predict(model, image, points=..., point_labels=..., boxes=...)` for one prompt of all
points and the box; one click without a box uses the multimask output the IoU head ranks best.
A request without a point or box is answered 400 with `{{"error": "..."}}`.
"""
