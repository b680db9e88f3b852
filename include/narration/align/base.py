"""The aligner interface: word timings for a KNOWN script in given audio.

How to add an aligner:
1. Create ``narration/align/<name>.py`` with a subclass of :class:`Aligner`; set ``name`` and ``resolution_ms``.
2. Import heavy libraries inside ``load()`` so the registry stays importable everywhere.
3. Register the class path in ``ALIGNERS`` in ``narration/align/__init__.py``.
4. ``align()`` returns one :class:`WordTiming` per script token, in order; a token the backend could not time
   keeps ``start_ms``/``end_ms`` None (flagged downstream, never dropped). Raise :class:`AlignmentError` when the
   item as a whole cannot be aligned; the pipeline routes it to the fallback with that reason, and routes every
   alignment that :func:`quality_problem` finds too poor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from narration.errors import ItemFault
from narration.schema import ScriptToken, WordTiming
from narration.settings import Settings


class AlignmentError(ItemFault, RuntimeError):
    """The item cannot be aligned by this backend; the message is the fallback reason."""


def quality_problem(words: list[WordTiming], settings: Settings) -> str | None:
    """Why an alignment is too poor to ship (the fallback reason), or None."""
    if not words:
        return "no words were timed"
    untimed = sum(1 for w in words if not w.timed)
    if untimed / len(words) > settings.max_untimed_ratio:
        return f"{untimed} of {len(words)} words untimed (limit {settings.max_untimed_ratio:.0%})"
    scores = [w.score for w in words if w.score is not None]
    if scores and settings.min_mean_score and sum(scores) / len(scores) < settings.min_mean_score:
        return f"mean word score {sum(scores) / len(scores):.2f} below {settings.min_mean_score:.2f}"
    return None


class Aligner(ABC):
    name: ClassVar[str]
    resolution_ms: ClassVar[int]
    model: str | None = None

    def __init__(self, settings: Settings):
        self.settings = settings

    @classmethod
    def output_params(cls, settings: Settings) -> dict:
        """The settings beyond its own ``NARRATION_<BACKEND>_*`` environment that shape this backend's timings:
        part of the alignment cache key."""
        return {}

    def load(self) -> None:
        """Load the model once for a chunk."""

    @abstractmethod
    def align(
        self, audio: np.ndarray, sample_rate: int, tokens: list[ScriptToken], language: str
    ) -> list[WordTiming]:
        """Time every script token in ``audio`` (float32 mono)."""

    def align_many(
        self, items: list[tuple[np.ndarray, int, list[ScriptToken], str]]
    ) -> list[list[WordTiming] | Exception]:
        """Each (audio, sample rate, tokens, language)'s timings, or the exception that item alone failed with.
        A backend that computes several items in one model pass overrides this; here they go one by one."""
        results: list[list[WordTiming] | Exception] = []
        for audio, sample_rate, tokens, language in items:
            try:
                results.append(self.align(audio, sample_rate, tokens, language))
            except Exception as exc:  # the caller treats it as that item's own failure
                results.append(exc)
        return results

    def close(self) -> None:
        """Release the model at the end of a chunk."""
