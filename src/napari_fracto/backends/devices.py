"""Which device and dtype a local model runs on, chosen once so every backend and trainer agrees.

"auto" means the fastest thing that works: CUDA, then Apple MPS, then the CPU; bf16 on CUDA GPUs with
native bf16 (compute capability 8.0+, Ampere and newer; `torch.cuda.is_bf16_supported()` also counts the
slow emulation on T4/V100), fp16 on older ones; bf16 on MPS from macOS 14 (fp16 gives NaN/garbage with
Qwen2/2.5-VL there, transformers#33294), fp16 before; fp32 on the CPU (half precision is slow there).
The 4-bit (QLoRA) loading configuration lives here too, so training and the local backend agree.
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
    if kind in ("cuda", "mps"):
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.float32


def native_bf16(device: str = "cuda") -> bool:
    """True where bf16 runs natively: CUDA compute capability >= 8 (not emulation), MPS on macOS 14+."""
    import torch

    kind = device.split(":", 1)[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        major, _minor = torch.cuda.get_device_capability(index)
        return major >= 8
    if kind == "mps":
        import platform

        release = platform.mac_ver()[0]
        return bool(release) and int(release.split(".")[0]) >= 14
    return False


# Left in bf16/fp32 by 4-bit loading; anchored at the start of module names in transformers 5.x.
FOUR_BIT_SKIP_MODULES = ("model.visual", "lm_head")


def four_bit_config(compute_dtype: Any) -> Any:
    """The NF4 + double-quantisation BitsAndBytesConfig QLoRA trains with (vision tower and head kept)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(FOUR_BIT_SKIP_MODULES),
    )
