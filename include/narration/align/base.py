"""The aligner interface: word timings for a KNOWN script in given audio.

How to add an aligner:
1. Create ``narration/align/<name>.py`` with a subclass of :class:`Aligner`; set ``name`` and ``resolution_ms``.
2. Import heavy libraries inside ``load()`` so the registry stays importable everywhere.
3. Register the class path in ``ALIGNERS`` in ``narration/align/__init__.py``.
4. ``align()`` returns one :class:`WordTiming` per script token, in order; a token the backend could not time
   keeps ``start_ms``/``end_ms`` None (flagged downstream, never dropped). Raise :class:`AlignmentError` when the
   item as a whole cannot be aligned; the pipeline routes it to the fallback with that reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from narration.schema import ScriptToken, WordTiming
from narration.settings import Settings


class AlignmentError(RuntimeError):
    """The item cannot be aligned by this backend; the message is the fallback reason."""


class Aligner(ABC):
    name: ClassVar[str]
    resolution_ms: ClassVar[int]
    model: str | None = None

    def __init__(self, settings: Settings):
        self.settings = settings

    def load(self) -> None:
        """Load the model once for a chunk."""

    @abstractmethod
    def align(
        self, audio: np.ndarray, sample_rate: int, tokens: list[ScriptToken], language: str
    ) -> list[WordTiming]:
        """Time every script token in ``audio`` (float32 mono)."""

    def close(self) -> None:
        """Release the model at the end of a chunk."""
