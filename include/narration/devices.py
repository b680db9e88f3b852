"""Device and numeric-precision choice for the GPU backends, and releasing GPU memory between chunks.

torch is imported only when a decision needs it, so CPU-only workers never pay for it.
"""

from __future__ import annotations

import gc
import sys

from narration.errors import InfrastructureFault


class DeviceError(InfrastructureFault, RuntimeError):
    """The configured device is not usable on this machine."""


def resolve_device(preference: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda``/``cuda:N`` must exist."""
    preference = (preference or "auto").strip().lower()
    if preference == "cpu":
        return "cpu"
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {preference!r} requested but torch sees no CUDA device")
        return preference
    raise DeviceError(f"unknown device {preference!r}; use cpu, cuda, cuda:N or auto")


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def float_precision(device: str, preference: str = "auto") -> str:
    """torch precision name: float16 on CUDA, float32 on CPU, unless a precision is configured."""
    if preference != "auto":
        return preference
    return "float16" if is_cuda(device) else "float32"


def ctranslate2_compute_type(device: str, preference: str = "auto") -> str:
    """CTranslate2 (faster-whisper) compute type: float16 on CUDA, int8 (its fast CPU path) on CPU."""
    if preference != "auto":
        return preference
    return "float16" if is_cuda(device) else "int8"


def torch_dtype(precision: str):
    import torch

    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[precision]
    except KeyError:
        raise DeviceError(f"unknown precision {precision!r}; use float32, float16 or bfloat16") from None


def release_gpu_memory(device: str | None = None) -> None:
    """Collect garbage and hand cached CUDA blocks back to the driver (after a model's last reference is gone)."""
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just to free nothing
    if torch is not None and (device is None or is_cuda(device)) and torch.cuda.is_available():
        # cuBLAS keeps a workspace per stream (32 MiB on Hopper) through the caching allocator; measured on an H200
        # it was the only allocation left after close(), so drop it too (the next matmul makes a new one).
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear_workspaces is not None:
            clear_workspaces()
        torch.cuda.empty_cache()
