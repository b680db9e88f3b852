"""Aligner registry: a backend name maps to the class that implements it (how to add one: ``base.py``).

It imports nothing: the DAG file and the settings read the names at parse time, without numpy (which the base
classes in ``base.py`` import) and without an import running back up.
"""

from __future__ import annotations

from importlib import import_module

from narration.errors import ConfigurationFault

ALIGNERS: dict[str, str] = {
    "pocketsphinx": "narration.align.pocketsphinx:PocketsphinxAligner",
    "whisperx": "narration.align.whisperx:WhisperXAligner",
    "google": "narration.align.google:GoogleAligner",
}
DEFAULT_ALIGNER = "pocketsphinx"  # NARRATION_ALIGNER's default: CPU only, no model download
FALLBACK_ALIGNER = "google"  # times the items the primary aligner could not
# Words scored below these count as low confidence in the report (each backend scores on its own scale).
LOW_CONFIDENCE_SCORES: dict[str, float] = {"pocketsphinx": 0.1, "whisperx": 0.5, "google": 0.5}


class UnknownAlignerError(ConfigurationFault, ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown aligner {name!r}; valid names: {', '.join(sorted(ALIGNERS))}")


def get_aligner_class(name: str) -> type:
    """The backend class registered as ``name`` (a :class:`Aligner` subclass); its module is imported now."""
    try:
        module_name, class_name = ALIGNERS[name].split(":")
    except KeyError:
        raise UnknownAlignerError(name) from None
    return getattr(import_module(module_name), class_name)


__all__ = ["ALIGNERS", "DEFAULT_ALIGNER", "FALLBACK_ALIGNER", "UnknownAlignerError", "get_aligner_class"]
