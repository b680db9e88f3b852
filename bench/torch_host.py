"""What the model benchmarks need to know of the torch host they run on: its device, and a WAV reader where
torchaudio has none."""

from __future__ import annotations

import os
from pathlib import Path


def use_soundfile_for_wav_if_torchaudio_cannot_read(path: Path) -> str | None:
    """f5_tts reads the reference clip with torchaudio.load, which from torchaudio 2.9 decodes through torchcodec and
    FFmpeg's shared libraries. Where those are missing, read WAV with soundfile (torchaudio 2.8's backend in the
    worker images); returns why, or None when torchaudio reads it itself."""
    import torchaudio

    try:
        torchaudio.load(str(path))
        return None
    except (ImportError, RuntimeError, OSError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    import soundfile
    import torch

    def load_with_soundfile(uri, *args, **kwargs):
        samples, sample_rate = soundfile.read(str(uri), dtype="float32", always_2d=True)
        return torch.from_numpy(samples.T.copy()), sample_rate

    torchaudio.load = load_with_soundfile
    return (f"torchaudio {torchaudio.__version__} cannot read WAV here ({reason}); "
            "the reference clip is read with soundfile")


def device_description(device: str) -> str:
    from narration.devices import is_cuda

    if not is_cuda(device):
        return f"CPU ({os.cpu_count()} cores)"
    import torch

    return (f"CUDA {torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda}; "
            f"{os.cpu_count()} CPU cores)")
