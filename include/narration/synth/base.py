"""The synthesizer interface.

How to add a synthesizer:
1. Create ``narration/synth/<name>.py`` with a subclass of :class:`Synthesizer`; set ``name``.
2. Import heavy libraries (torch, f5_tts...) inside ``load()``, never at module level, so the Airflow side and
   other workers can import the registry without them.
3. Register the class path in ``SYNTHESIZERS`` in ``narration/synth/__init__.py``.
4. ``load()`` is called once per chunk, ``prepare()`` once with every item to do, ``synthesize()`` once per item,
   ``close()`` at the end of the chunk (release GPU memory there).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from narration.schema import ScriptToken, WordTiming
from narration.settings import Settings


@dataclass
class Voice:
    """A reference voice from the voice library, materialised on local disk for the worker."""

    voice_id: str
    language: str
    transcript: str
    reference_path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Synthesis:
    """Audio for one item plus what is needed to audit it."""

    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    params: dict[str, Any] = field(default_factory=dict)
    reference_words: list[WordTiming] | None = None  # exact onsets, when the synthesizer knows them


@dataclass
class SynthesisRequest:
    """One item a chunk will ask for: the arguments of :meth:`Synthesizer.synthesize`."""

    tokens: list[ScriptToken]
    voice: Voice
    speed: float = 1.0
    seed: int | None = None


class Synthesizer(ABC):
    name: ClassVar[str]
    clones_voice: ClassVar[bool] = False  # True when the output imitates the voice's reference recording
    takes_phonemes: ClassVar[bool] = False  # True when it speaks a token's ``phonemes`` (lexicon phoneme entries)
    # A long item (narration.longform) is synthesised in segments of whole sentences, each at most this many seconds
    # of speech (estimated from its spoken characters at speaking_chars_per_second); None: one sentence a segment.
    segment_seconds: ClassVar[float | None] = None
    speaking_chars_per_second: ClassVar[float] = 15.0

    def __init__(self, settings: Settings):
        self.settings = settings

    @classmethod
    def output_params(cls) -> dict[str, Any]:
        """The effective settings (defaults included) that shape this backend's audio: part of every cache key."""
        return {}

    def load(self) -> None:
        """Load the model once for a chunk."""

    def prepare(self, requests: list[SynthesisRequest]) -> None:
        """Announce the items the chunk will ask for, in order; a batching backend generates several at once."""

    @abstractmethod
    def synthesize(
        self, tokens: list[ScriptToken], voice: Voice, *, speed: float = 1.0, seed: int | None = None
    ) -> Synthesis:
        """Speak the script's normalised words (``tokens``) with ``voice``."""

    def close(self) -> None:
        """Release the model (and GPU memory) at the end of a chunk."""
