"""Synthesizer registry: a backend name maps to the class that implements it."""

from __future__ import annotations

from importlib import import_module

from narration.errors import ConfigurationFault
from narration.synth.base import Synthesis, Synthesizer, Voice

SYNTHESIZERS: dict[str, str] = {
    "espeak": "narration.synth.espeak:EspeakSynthesizer",
    "f5tts": "narration.synth.f5tts:F5TTSSynthesizer",
}


class UnknownSynthesizerError(ConfigurationFault, ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown synthesizer {name!r}; valid names: {', '.join(sorted(SYNTHESIZERS))}")


def get_synthesizer_class(name: str) -> type[Synthesizer]:
    try:
        module_name, class_name = SYNTHESIZERS[name].split(":")
    except KeyError:
        raise UnknownSynthesizerError(name) from None
    return getattr(import_module(module_name), class_name)


__all__ = ["SYNTHESIZERS", "Synthesis", "Synthesizer", "UnknownSynthesizerError", "Voice", "get_synthesizer_class"]
