"""The demo data's cache and the datasets' default folder follow XDG_CACHE_HOME."""

from __future__ import annotations

from pathlib import Path

from samtune.data.recipes import data_home
from samtune.data.synthetic import cache_home, ensure_demo_dataset

COUNTS = {"train": 1, "val": 1, "test": 1}


def test_demo_cache_goes_under_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SAMTUNE_CACHE", raising=False)
    monkeypatch.delenv("SAMTUNE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = ensure_demo_dataset(size=32, counts=COUNTS)
    assert root.parent == tmp_path / "xdg" / "samtune"
    assert (root / "demo.json").is_file()
    assert data_home() == tmp_path / "xdg" / "samtune" / "datasets"
    assert not (tmp_path / "home").exists()  # nothing written to ~/.cache


def test_samtune_variables_win_and_a_relative_xdg_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: ignore it
    monkeypatch.delenv("SAMTUNE_CACHE", raising=False)
    monkeypatch.delenv("SAMTUNE_DATA", raising=False)
    assert cache_home() == tmp_path / "home" / ".cache" / "samtune"
    assert data_home() == tmp_path / "home" / ".cache" / "samtune" / "datasets"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SAMTUNE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("SAMTUNE_DATA", str(tmp_path / "data"))
    assert cache_home() == Path(tmp_path / "mine")
    assert data_home() == Path(tmp_path / "data")
