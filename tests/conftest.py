"""Shared fixtures: tiny SAM models only, never the network."""

from __future__ import annotations

import os

import pytest
import torch

# Tests never reach the network: make any accidental hub access fail fast and locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# One intra-op thread: the test models are tiny, so a second thread buys little on an idle
# machine and costs a lot on a busy one (2 threads on 2 shared cores made a 2-step tiny fit take
# 30 s instead of 2 s). Tests that need two threads (tests/test_determinism.py) set them; the
# scripts tests start (examples, benchmarks, CLI subprocesses) inherit one thread unless the
# environment says otherwise.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def server(tmp_path):
    """(folder, base URL): ``tmp_path/served`` on a local HTTP server (tests/local_http.py)."""
    from local_http import serving

    served = tmp_path / "served"
    served.mkdir()
    with serving(served) as url:
        yield served, url


@pytest.fixture
def tiny_model():
    from samtune.models.loading import load_model

    return load_model("tiny", seed=0)


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter random values (also the tables SAM initialises to zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(
                torch.randn(p.shape, generator=g) * std
                + (1.0 if p.ndim == 1 and "norm" in _ else 0.0)
            )
    return module


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for torchrun's rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pretrain_demo_sam3_tool():
    """``tools/pretrain_demo_sam3.py`` as a module (it is a script, not part of the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "pretrain_demo_sam3.py"
    spec = importlib.util.spec_from_file_location("pretrain_demo_sam3", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
