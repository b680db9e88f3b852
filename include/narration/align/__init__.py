"""Aligner registry: a backend name maps to the class that implements it."""

from __future__ import annotations

from importlib import import_module

from narration.align.base import Aligner, AlignmentError
from narration.errors import ConfigurationFault

ALIGNERS: dict[str, str] = {
    "pocketsphinx": "narration.align.pocketsphinx:PocketsphinxAligner",
    "whisperx": "narration.align.whisperx:WhisperXAligner",
    "google": "narration.align.google:GoogleAligner",
}


class UnknownAlignerError(ConfigurationFault, ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown aligner {name!r}; valid names: {', '.join(sorted(ALIGNERS))}")


def get_aligner_class(name: str) -> type[Aligner]:
    try:
        module_name, class_name = ALIGNERS[name].split(":")
    except KeyError:
        raise UnknownAlignerError(name) from None
    return getattr(import_module(module_name), class_name)


__all__ = ["ALIGNERS", "Aligner", "AlignmentError", "UnknownAlignerError", "get_aligner_class"]
