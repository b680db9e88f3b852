"""The embedded-default synthesizer: espeak-ng through ctypes on the library bundled by ``espeakng_loader``.

It needs no model download and reports exact word onsets, which makes its speech ground truth for aligner checks.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

import numpy as np

from narration.errors import ItemFault
from narration.normalize import pause_mark
from narration.schema import ScriptToken, WordTiming
from narration.synth.base import Synthesis, Synthesizer, Voice

DEFAULT_VOICE = "en-us"
DEFAULT_RATE_WPM = 175
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450  # espeak-ng's accepted range without the sonic speed-up

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_BUFFER_MS = 500
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_PHONEMES_SEPARATOR_SPACE = ord(" ") << 8  # phoneme_mode bits 8-23: separator between phoneme names
_PHONEME_INPUT = 0x100  # espeakPHONEMES: text may hold phoneme names in [[ ]] (a lexicon's phoneme entries)

# Energy trimming of word ends: 10 ms frames, quieter than the loudest frame by this much counts as silence.
_FRAME_S = 0.010
_SILENCE_BELOW_PEAK_DB = 40.0


class EspeakError(ItemFault, RuntimeError):
    """espeak-ng could not be loaded or refused a request (unknown voice, failed synthesis)."""


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character offset in the text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # exact sample offset of the event
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_void_p),
    ]


class _VoiceSpec(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class WordEvent:
    text_offset: int  # 0-based character offset of the word in the spoken text
    sample: int


class EspeakEngine:
    """The process-wide espeak-ng library. espeak-ng keeps global state: use :func:`espeak_engine`, never two."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Info.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        # The built-in data path points at the wheel's build machine: pass the folder that contains espeak-ng-data.
        data_parent = os.path.dirname(espeakng_loader.get_data_path())
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_parent.encode(), 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data under {data_parent}")
        self.sample_rate = rate
        self.version = self._lib.espeak_Info(None).decode()
        self._pcm: list[np.ndarray] = []
        self._events: list[WordEvent] = []
        self._callback = _SynthCallback(self._on_synth)  # kept referenced: espeak holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _on_synth(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._pcm.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                self._events.append(WordEvent(events[i].text_position - 1, events[i].sample))
            i += 1
        return 0

    def set_voice(self, voice: str) -> None:
        """Select a voice by name ("en-us", "en-gb-x-rp", "en-us+f3") or language ("en-gb"). Caller holds ``lock``."""
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                spec = _VoiceSpec(languages=voice.lower().encode())
                if self._lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != 0:
                    raise EspeakError(f"espeak-ng has no voice or language {voice!r}")
            self._voice = voice

    def synthesize(self, text: str, *, voice: str, rate_wpm: int, phoneme_input: bool = False
                   ) -> tuple[np.ndarray, list[WordEvent]]:
        """Speak ``text`` (with ``phoneme_input``, ``[[...]]`` in it are espeak-ng phoneme names); returns int16
        PCM at ``sample_rate`` and the word onsets espeak reported."""
        data = text.encode("utf-8")
        flags = _CHARS_UTF8 | (_PHONEME_INPUT if phoneme_input else 0)
        with self.lock:
            self.set_voice(voice)
            self._lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
            self._pcm, self._events = [], []
            status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
            self._lib.espeak_Synchronize()
            pcm, events = self._pcm, self._events
            self._pcm, self._events = [], []
        if status != 0:
            raise EspeakError(f"espeak_Synth failed with status {status}")
        audio = np.concatenate(pcm) if pcm else np.zeros(0, dtype=np.int16)
        return audio, events

    def phonemes(self, word: str, *, voice: str = DEFAULT_VOICE) -> list[str]:
        """espeak-ng's phoneme names for ``word`` (its ASCII scheme, stress marks attached), e.g. h @ l 'oU."""
        with self.lock:
            self.set_voice(voice)
            text = ctypes.c_char_p(word.encode("utf-8"))
            out: list[str] = []
            # TextToPhonemes consumes one clause per call and advances the pointer; NULL when all is read.
            while text.value:
                result = self._lib.espeak_TextToPhonemes(ctypes.byref(text), _CHARS_UTF8, _PHONEMES_SEPARATOR_SPACE)
                if result:
                    out.extend(result.decode().split())
        return out


_engine: EspeakEngine | None = None
_engine_lock = threading.Lock()


def espeak_engine() -> EspeakEngine:
    """The one espeak-ng engine of this process, initialised on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = EspeakEngine()
        return _engine


def phoneme_word(ipa: str) -> str:
    """A lexicon's IPA as espeak-ng phoneme input (``[[w'Ust3]]``); symbols its English set lacks are left out."""
    from narration.phonemes import ipa_to_espeak

    return "[[" + "".join(ipa_to_espeak(ipa)[0]) + "]]"


def speech_text(tokens: list[ScriptToken], phonemes: bool = False) -> tuple[str, list[int]]:
    """The text espeak speaks for ``tokens`` and the character offset of each spoken word in it.

    The words are ``normalize.spoken_text(tokens)``; a token's trailing clause punctuation is kept so that
    espeak pauses at commas and full stops as a narrator would (not the period of "Dr." or "etc."). With
    ``phonemes``, a token that has them (a lexicon's phoneme entry) is spoken from them (:func:`phoneme_word`).
    """
    parts: list[str] = []
    word_offsets: list[int] = []
    position = 0
    for token in tokens:
        if phonemes and token.phonemes:
            word_offsets.extend([position] * len(token.spoken))
            parts.append(phoneme_word(token.phonemes))
            position += len(parts[-1]) + 1
            if mark := pause_mark(token.original):
                parts[-1] += mark
                position += 1
            continue
        for word in token.spoken:
            word_offsets.append(position)
            parts.append(word)
            position += len(word) + 1
        if mark := pause_mark(token.original):
            parts[-1] += mark
            position += 1
    return " ".join(parts), word_offsets


def _voiced_frames(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Per 10 ms frame: is it louder than the silence floor? Returns the mask and the frame length."""
    frame = max(1, round(_FRAME_S * sample_rate))
    n_frames = int(np.ceil(len(audio) / frame))
    padded = np.zeros(n_frames * frame, dtype=np.float64)
    padded[: len(audio)] = audio
    rms = np.sqrt(np.mean(padded.reshape(n_frames, frame) ** 2, axis=1))
    floor = max(float(rms.max()) * 10 ** (-_SILENCE_BELOW_PEAK_DB / 20), 1e-5) if n_frames else 1e-5
    return rms > floor, frame


def reference_words(
    tokens: list[ScriptToken], word_offsets: list[int], events: list[WordEvent], audio: np.ndarray, sample_rate: int
) -> list[WordTiming]:
    """One timing per token: espeak's onset of its first word, ending where its sound ends before the next."""
    n = len(tokens)
    first_words = np.cumsum([0] + [len(t.spoken) for t in tokens[:-1]])
    offsets = np.asarray(word_offsets)
    onsets: dict[int, int] = {}
    for event in events:
        # espeak's text positions can be one off (after a full stop they point at the space): take the nearest word.
        word = int(np.argmin(np.abs(offsets - event.text_offset)))
        onsets.setdefault(word, event.sample)
    known = [i for i in range(n) if int(first_words[i]) in onsets]
    if not known:
        raise EspeakError("espeak-ng reported no word events")
    # A token whose first word espeak did not report gets an onset interpolated by character position.
    token_offsets = [word_offsets[int(w)] for w in first_words]
    filled = np.interp(token_offsets, [token_offsets[i] for i in known], [onsets[int(first_words[i])] for i in known])
    starts_s = np.maximum.accumulate(filled) / sample_rate

    voiced, frame = _voiced_frames(audio, sample_rate)
    audio_end_s = len(audio) / sample_rate
    words: list[WordTiming] = []
    for i, token in enumerate(tokens):
        start_s = float(starts_s[i])
        limit_s = float(starts_s[i + 1]) if i + 1 < n else audio_end_s
        # End at the last sounding frame before the next onset, so pauses are not counted as speech.
        first, last = int(start_s / _FRAME_S), int(np.ceil(limit_s / _FRAME_S))
        sounding = np.flatnonzero(voiced[first:last])
        end_s = min(limit_s, (first + sounding[-1] + 1) * frame / sample_rate) if len(sounding) else limit_s
        end_s = max(end_s, start_s)
        words.append(WordTiming.of(token, round(start_s * 1000), round(end_s * 1000), 1.0, source="espeak"))
    return words


class EspeakSynthesizer(Synthesizer):
    """espeak-ng formant speech; the voice's ``espeak_voice`` metadata picks the espeak voice.

    No randomness, so ``seed`` is ignored; ``speed`` scales 175 words per minute (clamped to 80-450). Not bit
    for bit repeatable within a process: espeak-ng's pitch flutter keeps its phase from one call to the next (a
    static in its wavegen that no API resets), so the same text can come out a few samples longer or shorter.
    """

    name = "espeak"
    takes_phonemes = True
    segment_seconds = None  # a long item is spoken one sentence at a time: exact onsets, bounded memory

    def load(self) -> None:
        self.engine = espeak_engine()

    def synthesize(
        self, tokens: list[ScriptToken], voice: Voice, *, speed: float = 1.0, seed: int | None = None
    ) -> Synthesis:
        if not tokens:
            raise EspeakError("nothing to speak: the script has no spoken words")
        engine = getattr(self, "engine", None) or espeak_engine()
        espeak_voice = str(voice.metadata.get("espeak_voice", DEFAULT_VOICE))
        rate = round(min(max(DEFAULT_RATE_WPM * speed, MIN_RATE_WPM), MAX_RATE_WPM))
        text, offsets = speech_text(tokens, phonemes=True)
        with_phonemes = any(t.phonemes for t in tokens)
        pcm, events = engine.synthesize(text, voice=espeak_voice, rate_wpm=rate, phoneme_input=with_phonemes)
        if not len(pcm):
            raise EspeakError(f"espeak-ng produced no audio for voice {espeak_voice!r}")
        audio = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
        words = reference_words(tokens, offsets, events, audio, engine.sample_rate)
        params = {"voice": espeak_voice, "rate_wpm": rate, "speed": speed, "espeak_ng": engine.version}
        return Synthesis(audio=audio, sample_rate=engine.sample_rate, params=params, reference_words=words)
