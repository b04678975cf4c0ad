"""A model download shows its size and progress in the Analyze panel (HF cache folder polled)."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel

from napari_fracto.widgets.download_watch import DownloadWatch, model_cache_dir


def test_a_growing_download_is_shown_with_its_expected_size(qtbot, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    label = QLabel()
    qtbot.addWidget(label)
    watch = DownloadWatch(label)
    assert watch.start("Qwen/Qwen3-VL-2B-Instruct")
    assert "0.00 GB so far (roughly 4 GB)" in label.text()
    blobs = tmp_path / "models--Qwen--Qwen3-VL-2B-Instruct" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "abc.incomplete").write_bytes(b"\0" * 30_000_000)
    qtbot.waitUntil(lambda: "0.03 GB so far" in label.text(), timeout=3000)
    watch.stop()


def test_local_folders_and_cached_models_are_not_watched(tmp_path, tiny_vlm_dir):
    assert model_cache_dir(str(tiny_vlm_dir)) is None
    assert model_cache_dir("") is None
