"""Synthesizer registry: a backend name maps to the class that implements it (how to add one: ``base.py``).

It imports nothing: the DAG file and the settings read the names at parse time, without numpy (which the base
classes in ``base.py`` import) and without an import running back up.
"""

from __future__ import annotations

from importlib import import_module

from narration.errors import ConfigurationFault

SYNTHESIZERS: dict[str, str] = {
    "espeak": "narration.synth.espeak:EspeakSynthesizer",
    "f5tts": "narration.synth.f5tts:F5TTSSynthesizer",
    "piper": "narration.synth.piper:PiperSynthesizer",
}
DEFAULT_SYNTHESIZER = "espeak"  # NARRATION_SYNTHESIZER's default: CPU only, no model download


class UnknownSynthesizerError(ConfigurationFault, ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown synthesizer {name!r}; valid names: {', '.join(sorted(SYNTHESIZERS))}")


def get_synthesizer_class(name: str) -> type:
    """The backend class registered as ``name`` (a :class:`Synthesizer` subclass); its module is imported now."""
    try:
        module_name, class_name = SYNTHESIZERS[name].split(":")
    except KeyError:
        raise UnknownSynthesizerError(name) from None
    return getattr(import_module(module_name), class_name)


__all__ = ["DEFAULT_SYNTHESIZER", "SYNTHESIZERS", "UnknownSynthesizerError", "get_synthesizer_class"]
