"""Shared test fixtures. Tests use no network and no downloaded weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep settings, vocabularies and caches of the test run away from the user's real directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real images in ../shared/data; tests that need them skip with a reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Point settings, user vocabularies and the data folder (adapter registry, default run folders) at
    temporary folders so tests never touch the user's own."""
    config = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("NAPARI_FRACTO_CONFIG_DIR", str(config))
    monkeypatch.setenv("NAPARI_FRACTO_VOCAB_DIR", str(config / "vocabularies"))
    monkeypatch.setenv("NAPARI_FRACTO_DATA_DIR", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    """A random tiny Qwen3-VL model directory, laid out like a Hub download; built once per session (~1 s)."""
    from napari_fracto.testing.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm") / "Qwen3-VL-tiny")
