"""With no network, a model missing from the cache fails within seconds with the cache / local-folder
message, instead of retrying the download for half a minute."""

from __future__ import annotations

import time

import pytest

from napari_fracto.backends.base import BackendError


def test_unreachable_hub_fails_fast_with_the_cache_message(monkeypatch, tmp_path):
    import socket

    from huggingface_hub import constants

    from napari_fracto.backends.transformers_backend import TransformersBackend

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the connection is refused, like a machine with no network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    backend = TransformersBackend("Qwen/Qwen3-VL-2B-Instruct", device="cpu")
    start = time.perf_counter()
    with pytest.raises(BackendError, match="not in the Hugging Face cache") as info:
        backend._ensure_loaded()
    assert time.perf_counter() - start < 10
    assert "127.0.0.1 cannot be reached" in str(info.value)
    assert "local model directory" in str(info.value)
