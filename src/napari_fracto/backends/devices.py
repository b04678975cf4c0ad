"""Which device and dtype a local model runs on, chosen once so every backend and trainer agrees.

"auto" means the fastest thing that works: CUDA, then Apple MPS, then the CPU; bf16 on CUDA GPUs that
support it (fp16 on older ones), fp16 on MPS, fp32 on the CPU (half precision is slow or unsupported there).
"""

from __future__ import annotations

from typing import Any

from napari_fracto.backends.base import BackendError

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "bfloat16", "float16", "float32")
_DTYPE_ALIASES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float": "float32",
}


def resolve_device(device: str = "auto") -> str:
    """A torch device string; "auto" picks cuda, then mps, then cpu. Unavailable ones raise BackendError."""
    import torch

    requested = (device or "auto").strip().lower()
    kind = requested.split(":", 1)[0]
    if kind not in DEVICES:
        raise BackendError(
            f"Unknown device '{device}'; choose one of {', '.join(DEVICES)} (or e.g. 'cuda:1')."
        )
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if kind == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if kind == "cuda" and not cuda:
        raise BackendError(
            "device='cuda' was asked for but PyTorch sees no CUDA GPU (CPU-only torch build, or no driver); "
            "use device='auto' or 'cpu'."
        )
    if kind == "mps" and not mps:
        raise BackendError("device='mps' was asked for but Apple MPS is not available; use 'auto' or 'cpu'.")
    return requested


def resolve_dtype(dtype: str = "auto", device: str = "cpu") -> Any:
    """A torch dtype for `device`; "auto": bf16 on capable CUDA GPUs, fp16 on other GPUs/MPS, else fp32."""
    import torch

    name = (dtype or "auto").strip().lower().removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise BackendError(f"Unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}.")
    if name != "auto":
        return getattr(torch, name)
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32
