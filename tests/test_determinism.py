"""Same seed, same machine: the same adapter, bit for bit (docs/training.md, Reproducibility).

The bug these guard against: ``SamTrainStep`` gathered each prompt's image embedding with
``image_embeddings[image_index]``. The backward of that advanced indexing (``index_put_`` with
``accumulate=True``) adds the gradients of prompts sharing an image with multithreaded atomic
adds on CPU, in whatever order the threads get there, so two identical LoRA runs (the only
built-in strategies whose image embeddings need a gradient are those that train the encoder)
drifted apart by ~1e-9 per step, 5e-4 after 30 demo steps. ``decoder`` (frozen encoder, no
gradient there) was unaffected. The race needs two or more intra-op threads and a gradient of
at least 32768 elements, hence the demo model (64x16x16 embeddings) and two threads here.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from samtune.models.loading import load_model
from samtune.strategies import get_strategy
from samtune.train import fit, losses
from samtune.train.step import SamTrainStep


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_train_step_gradients_are_bit_identical_when_prompts_share_an_image(two_threads):
    """The failing case itself: several prompts on one image, a gradient into its embedding."""
    model = get_strategy("lora").apply(load_model("demo"))
    model.train()
    step = SamTrainStep(model)
    size = model.config.vision_config.image_size
    grid = size // model.config.vision_config.patch_size
    channels = model.config.vision_config.output_channels
    g = torch.Generator().manual_seed(0)
    # What the image encoder hands the decoder; a LoRA in the encoder needs its gradient.
    embeddings = torch.randn(2, channels, grid, grid, generator=g, requires_grad=True)
    image_index = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1])  # 7 prompts on the second image
    xy = torch.rand(len(image_index), 2, generator=g) * size * 0.6
    boxes = torch.cat([xy, xy + 0.3 * size], dim=1)
    targets = torch.rand(len(image_index), 4 * grid, 4 * grid, generator=g) > 0.5

    def gradient() -> torch.Tensor:
        embeddings.grad = None
        ((pred, iou),) = step(image_index=image_index, image_embeddings=embeddings, boxes=boxes)
        losses.sam_loss(pred, iou, targets).total.backward()
        return embeddings.grad.clone()

    first = gradient()
    for _ in range(3):
        change = float((gradient() - first).abs().max())
        assert change == 0, (
            f"the embedding gradient changed between identical steps by {change:.3g}"
        )


@pytest.mark.slow  # two training runs compared bit for bit
def test_two_identical_lora_fits_give_bit_identical_adapters(tmp_path, two_threads):
    """Run A generates the demo data (fresh dataset cache), run B reads it back."""
    data = tmp_path / "demo-data"
    options = dict(
        dataset_root=str(data),
        dataset_options={"counts": {"train": 4, "val": 2, "test": 2}},
        max_steps=3,
        batch_size=1,  # one image per step: its prompts share it
        val_split=None,
        compare=False,
        quiet=True,
        log_with=None,
        seed=0,
    )
    adapters = []
    for name in ("a", "b"):
        assert data.exists() == (name == "b")
        result = fit("demo", "lora", "demo", tmp_path / name, **options)
        assert result.steps == 3
        adapters.append(load_file(result.adapter_dir / "adapter.safetensors"))
    a, b = adapters
    assert a.keys() == b.keys()
    differ = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    worst = max(differ, key=differ.get, default=None)
    assert not differ, (
        f"{len(differ)} of {len(a)} adapter tensors differ, most {worst} by {differ.get(worst):.3g}"
    )


def test_deterministic_option_turns_on_deterministic_algorithms(tmp_path):
    from samtune.data import load_dataset
    from samtune.train.config import FitConfig

    assert FitConfig().deterministic is False
    splits = {"train": load_dataset("demo", "train", root=tmp_path / "data", counts={"train": 2})}
    before = torch.are_deterministic_algorithms_enabled()
    try:
        fit("tiny", "lora", splits, tmp_path / "run", max_steps=1, batch_size=2, compare=False,
            quiet=True, log_with=None, deterministic=True)  # fmt: skip
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
    assert "deterministic: true" in (tmp_path / "run" / "config.yaml").read_text()
