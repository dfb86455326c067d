"""Shared pieces of ``bench/peers.py``: the demo SAM in Meta's format, the demo data in each
peer's form, step clocks, the run record, and the one scoring function every runner is
scored by.

Formats:

- Meta checkpoint: a ``.pth`` of ``segment_anything`` state-dict keys (``image_encoder.*``,
  ``prompt_encoder.*``, ``mask_decoder.*``), written with ``torch.save``; the architecture
  is not in the file: :func:`meta_sam` builds it from samtune's ``SamConfig``
  (``samtune.models.convert.build_meta_sam``, LayerNorm epsilons included).
- Weights handed back by a run: ``safetensors`` of samtune's (transformers') ``SamModel``
  state dict, the base model's names and shapes (adapters merged), so one function loads and
  scores them all.
- Label images (micro-sam): one ``uint16`` TIFF per image, 0 = background, ``k`` = the k-th
  non-crowd instance of the image in annotation order (a later instance covers an earlier
  one where they overlap).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEMO_MODEL = "demo"
TEST_SPLIT = "test"


# --------------------------------------------------------------------------- timing


class StepClock:
    """Wall-clock times of the optimizer steps of one training run.

    ``start()`` is called when the training loop is about to begin (model, data and
    optimizer built); ``tick()`` after every optimizer step.
    """

    def __init__(self) -> None:
        self.t0: float | None = None
        self.ticks: list[float] = []

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def tick(self, *_: Any) -> None:
        self.ticks.append(time.perf_counter())

    def hook(self, optimizer: torch.optim.Optimizer) -> None:
        """Tick after every ``optimizer.step()`` (however a trainer wraps the call)."""
        optimizer.register_step_post_hook(lambda *_: self.tick())

    def summary(self, steps_per_epoch: int) -> dict[str, Any]:
        """``seconds`` (start to last step), ``s_per_step`` and ``s_epoch1`` (start to the
        end of step ``steps_per_epoch``; None when the run is shorter than an epoch)."""
        if self.t0 is None or not self.ticks:
            raise RuntimeError("the training loop ran no optimizer step")
        seconds = self.ticks[-1] - self.t0
        epoch1 = None
        if len(self.ticks) >= steps_per_epoch:
            epoch1 = self.ticks[steps_per_epoch - 1] - self.t0
        return {
            "steps_done": len(self.ticks),
            "seconds": seconds,
            "s_per_step": seconds / len(self.ticks),
            "s_epoch1": epoch1,
        }


# --------------------------------------------------------------------------- records


@dataclass
class RunRecord:
    """One training run of one runner with one seed (written by the child as JSON)."""

    runner: str
    seed: int
    steps: int
    batch_size: int
    steps_per_epoch: int
    steps_done: int
    seconds: float
    s_per_step: float
    s_epoch1: float | None
    weights: str
    notes: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float | None = None  # the parent fills these two
    miou: float | None = None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        return cls(**json.loads(path.read_text()))


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    if len(values) == 1:
        return values[0], None
    return statistics.fmean(values), statistics.stdev(values)


# --------------------------------------------------------------------------- models


def demo_model() -> torch.nn.Module:
    """The bundled demo SAM (samtune's ``SamModel``), eval mode."""
    import samtune

    return samtune.load_model(DEMO_MODEL)


def meta_sam(config: Any, meta_state_dict: dict[str, torch.Tensor] | None = None):
    """Meta's ``segment_anything`` ``Sam`` with samtune's architecture ``config``.

    The pixel mean/std buffers (not in a Meta state dict) are those of samtune's
    preprocessing, which the demo shares with Meta's defaults.
    """
    from samtune.models.convert.sam import build_meta_sam

    sam = build_meta_sam(config)
    if meta_state_dict is not None:
        sam.load_state_dict(meta_state_dict, strict=True)
    return sam


def write_meta_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Save samtune's ``model`` as a Meta state dict ``.pth`` (plain ``torch.save``)."""
    from samtune.models.convert.sam import hf_to_meta_state_dict

    sd = hf_to_meta_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    torch.save(sd, path)
    return path


def read_meta_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def merge_micro_sam_lora(meta_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold micro-sam's ``AttentionLoRA`` (``peft_sam.py``) into plain ``qkv`` weights.

    micro-sam replaces ``blocks.i.attn.qkv`` by a module holding the frozen ``qkv_proj`` and
    ``w_a_linear_{q,k,v}`` / ``w_b_linear_{q,k,v}``; its forward adds
    ``alpha * B(A(x))`` (alpha = 1) to the q, k and v thirds of ``qkv_proj(x)``.
    """
    out: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in meta_sd.items():
        if ".attn.qkv.qkv_proj." in key:
            out[key.replace(".qkv.qkv_proj.", ".qkv.")] = value.clone()
        elif ".attn.qkv.w_" in key:
            prefix, name = key.split(".attn.qkv.")
            lora.setdefault(prefix, {})[name] = value
        elif "w_a_linear" in key or "w_b_linear" in key:
            raise ValueError(f"unsupported micro-sam LoRA tensor {key} (MLP LoRA)")
        else:
            out[key] = value
    for prefix, parts in lora.items():
        weight = out[f"{prefix}.attn.qkv.weight"]
        dim = weight.shape[1]
        for third, name in enumerate("qkv"):
            a, b = parts.get(f"w_a_linear_{name}.weight"), parts.get(f"w_b_linear_{name}.weight")
            if a is not None:
                weight[third * dim : (third + 1) * dim] += b @ a
    return out


def samtune_state_from_meta(meta_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """samtune's ``SamModel`` state dict of a (possibly micro-sam-LoRA) Meta state dict."""
    from samtune.models.convert.sam import meta_to_hf_state_dict

    return meta_to_hf_state_dict(merge_micro_sam_lora(meta_sd))


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().clone().contiguous() for k, v in state_dict.items()}, str(path))
    return str(path)


def load_scored_model(weights: str | None) -> torch.nn.Module:
    """The demo model with ``weights`` (a safetensors file of its state dict; None: as is)."""
    model = demo_model()
    if weights is not None:
        from safetensors.torch import load_file

        state = load_file(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # transformers keeps a few derived buffers out of the Meta mapping (e.g. the shared
        # positional embedding); everything trainable must be there
        trainable_missing = [k for k in missing if "positional_embedding" not in k]
        if trainable_missing or unexpected:
            raise RuntimeError(
                f"weights {weights} do not fit the demo model: missing {trainable_missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    return model.eval()


def score(weights: str | None, test_dataset: Any) -> float:
    """The one scoring function: samtune's box-prompt evaluation (``samtune eval --prompt
    box``: each non-crowd instance prompted with its mask's tight box) of the demo model with
    ``weights`` on ``test_dataset``; returns mIoU in percent."""
    import samtune

    model = load_scored_model(weights)
    with torch.no_grad():
        report = samtune.evaluate(model, test_dataset, "box", progress=False)
    return 100.0 * float(report.metrics["miou"])


def conversion_gap(model: torch.nn.Module, sample: Any) -> float:
    """Largest |difference| of the box-prompted low-res mask logits between samtune's
    ``model`` and Meta's module rebuilt from it (:func:`meta_sam`) on one ``Sample``."""
    from samtune.models.convert.sam import hf_to_meta_state_dict
    from samtune.models.identity import preprocess_config

    cfg = preprocess_config(model)
    image = torch.from_numpy(sample.image).permute(2, 0, 1).float()
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    h, w = image.shape[1:]
    x = torch.nn.functional.pad(
        (image - mean) / std, (0, cfg.image_size - w, 0, cfg.image_size - h)
    )
    scale = cfg.image_size / max(h, w)
    boxes = torch.from_numpy(np.asarray(sample.boxes, dtype=np.float32)) * scale
    sam = meta_sam(model.config, hf_to_meta_state_dict(model.state_dict())).eval()
    with torch.no_grad():
        hf = model(pixel_values=x[None], input_boxes=boxes[None], multimask_output=False)
        emb = sam.image_encoder(x[None])
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        low, _ = sam.mask_decoder(
            image_embeddings=emb,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
    return float((hf.pred_masks[0, :, 0] - low[:, 0]).abs().max())


# --------------------------------------------------------------------------- data


def demo_root() -> Path:
    from samtune.data.synthetic import ensure_demo_dataset

    return Path(ensure_demo_dataset())


def label_image(masks: np.ndarray, iscrowd: np.ndarray) -> np.ndarray:
    """HxW uint16 instance labels of NxHxW bool ``masks`` (crowd regions left 0)."""
    labels = np.zeros(masks.shape[1:], dtype=np.uint16)
    k = 0
    for mask, crowd in zip(masks, iscrowd, strict=True):
        if crowd:
            continue
        k += 1
        labels[mask] = k
    return labels


def write_label_images(split: str, folder: Path) -> tuple[list[str], list[str]]:
    """micro-sam's form of a demo split: (image paths, label TIFF paths), in the same order.

    The images are the demo's own files; the label TIFFs are written into ``folder``.
    """
    import tifffile

    from samtune.data import load_dataset

    dataset = load_dataset("demo", split)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        path = folder / f"{Path(sample.file_name).stem}.tif"
        tifffile.imwrite(path, label_image(sample.masks, sample.iscrowd))
        images.append(str(dataset.image_path(i)))
        labels.append(str(path))
    return images, labels


def coco_split(split: str) -> tuple[str, str]:
    """lightning-sam's form of a demo split: (image folder, COCO annotation file)."""
    root = demo_root() / split
    return str(root / "images"), str(root / "annotations.json")
