"""A pickled LoRA adapter is refused with the real reason, not a base-model mismatch (issue 17)."""

from __future__ import annotations

import json

import pytest

from napari_fracto.backends.base import BackendError, Turn, VLMRequest
from napari_fracto.backends.transformers_backend import TransformersBackend


def test_a_pickled_adapter_is_refused_as_a_pickle(tiny_vlm_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(tiny_vlm_dir), "r": 4})
    )
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    backend = TransformersBackend(str(tiny_vlm_dir), adapter=str(adapter), device="cpu")
    with pytest.raises(BackendError) as info:
        backend.generate(VLMRequest([Turn("user", ["hello"])], max_new_tokens=4))
    message = str(info.value)
    assert "pickle" in message
    assert "safetensors" in message
    assert "does not fit the model" not in message
