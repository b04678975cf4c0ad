"""bf16 only where the hardware runs it natively, decided from the device capability (not emulation)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_fracto.backends.devices import native_bf16, resolve_dtype  # noqa: E402


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA GPU of the given compute capability; is_bf16_supported says True as torch 2.13 does on T4."""

    def use(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    return use


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_pre_ampere_gpus_get_fp16_even_though_torch_reports_emulated_bf16(fake_cuda, capability, expected):
    fake_cuda(capability)  # V100 (7.0), T4 (7.5), A100 (8.0), H100 (9.0)
    assert resolve_dtype("auto", "cuda") is expected
    assert resolve_dtype("auto", "cuda:0") is expected
    assert native_bf16("cuda") is (expected is torch.bfloat16)


def test_an_explicit_dtype_is_kept_on_any_gpu(fake_cuda):
    fake_cuda((7, 5))
    assert resolve_dtype("bfloat16", "cuda") is torch.bfloat16


@pytest.mark.parametrize(
    ("release", "expected"), [("14.2", torch.bfloat16), ("15.0", torch.bfloat16), ("13.6.1", torch.float16)]
)
def test_mps_prefers_bf16_from_macos_14(monkeypatch, release, expected):
    import platform

    monkeypatch.setattr(platform, "mac_ver", lambda: (release, ("", "", ""), "arm64"))
    assert resolve_dtype("auto", "mps") is expected


def test_training_uses_the_same_rule(fake_cuda):
    from napari_fracto.training.train import compute_dtype

    fake_cuda((7, 5))
    assert compute_dtype("cuda") is torch.float16
    fake_cuda((8, 6))
    assert compute_dtype("cuda") is torch.bfloat16
    assert compute_dtype("cpu") is torch.float32
