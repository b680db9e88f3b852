"""The embedded-default aligner: pocketsphinx 5 forced alignment with its bundled en-us model, CPU only.

Words outside its dictionary get a pronunciation from ``narration.align.pronounce`` instead of aborting the item.
"""

from __future__ import annotations

import math
import re
from importlib.metadata import version

import numpy as np

from narration import audio as audio_io
from narration.align.base import Aligner, AlignmentError
from narration.schema import ScriptToken, WordTiming

SAMPLE_RATE = 16000
FRAME_MS = 10
MIN_SPEECH_DBFS = -60.0  # quieter than this throughout is silence, not speech to align

# Search settings measured with bench.alignment: the default beams pruned away the only (forced) path on a third of
# British-voice espeak items and 1e-80 still did, so the beams are effectively off (alignment search stays cheap);
# bestpath off keeps the Viterbi word boundaries (lattice rescoring moved them: TIMIT 28.6 -> 24.8 ms), and a higher
# silence probability lets pauses be silence rather than stretched words (-> 21.5 ms).
DECODER_OPTIONS = {"bestpath": False, "beam": 1e-300, "pbeam": 1e-300, "wbeam": 1e-300, "silprob": 0.1}

# Scores: pocketsphinx normalises acoustic scores by the best senone of each frame, so a word's acoustic score is
# its log-likelihood ratio against the unconstrained best match (<= 0). Its per-frame mean in nats goes through a
# logistic centred between matched words (TIMIT median -1.2) and wrongly scripted words (median -6.5).
SENONE_SCORE_SHIFT = 10  # pocketsphinx stores senone scores right-shifted by this many bits (SENSCR_SHIFT)
SCORE_MIDPOINT_NATS = -3.5
SCORE_SLOPE_NATS = 1.0
# An item whose words fit this badly on average is not speech of the script (noise, tones, another text): measured
# item means are >= 0.57 on TIMIT, >= 0.15 on espeak speech, <= 0.06 on noise and tones that found a path at all.
MIN_ITEM_SCORE = 0.05

_VARIANT = re.compile(r"\(\d+\)$")  # "your(2)": the dictionary's second pronunciation of "your"
_NOT_DICTIONARY_CHARS = re.compile(r"[^a-z']")


def dictionary_word(word: str) -> str:
    """The form of a spoken word that pocketsphinx's lowercase dictionary uses ("" if nothing is left)."""
    return _NOT_DICTIONARY_CHARS.sub("", word.lower()).strip("'")


def word_score(log_ratio_nats: float, n_frames: int) -> float:
    """Map a word's acoustic log-likelihood ratio (vs the best senone per frame) to a [0, 1] fit score."""
    logit = (log_ratio_nats / max(n_frames, 1) - SCORE_MIDPOINT_NATS) / SCORE_SLOPE_NATS
    return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0


class PocketsphinxAligner(Aligner):
    """Forced alignment of the script's spoken words; 10 ms frames."""

    name = "pocketsphinx"
    resolution_ms = FRAME_MS

    def load(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **DECODER_OPTIONS)
        self.model = f"pocketsphinx-{version('pocketsphinx')} en-us"
        self.added_words: dict[str, str] = {}  # out-of-dictionary words given a pronunciation, for audit

    def close(self) -> None:
        self._decoder = None

    def _ensure_pronunciations(self, words: list[str]) -> None:
        from narration.align.pronounce import pronounce

        missing: dict[str, str] = {}
        for word in dict.fromkeys(words):
            if self._decoder.lookup_word(word) is None:
                try:
                    missing[word] = pronounce(word)
                except (ValueError, RuntimeError) as exc:
                    raise AlignmentError(f"no usable pronunciation for the word {word!r}: {exc}") from exc
        for word, phones in missing.items():
            try:
                # No rebuild of the current search (update=False): set_align_text builds each alignment's own.
                self._decoder.add_word(word, phones, False)
            except RuntimeError as exc:
                raise AlignmentError(f"no usable pronunciation for the word {word!r}: {exc}") from exc
            self.added_words[word] = phones

    @staticmethod
    def _lexicon_word(token: ScriptToken, lexicon_words: dict[str, str]) -> str | None:
        """The dictionary word that carries a token's lexicon phonemes ("nguyen_lexicon1": its own entry, so the
        shared dictionary's "nguyen" is left as it is), or None when no ARPAbet phone comes of them."""
        from narration.phonemes import ipa_to_arpabet

        phones = " ".join(ipa_to_arpabet(token.phonemes or ""))
        base = "".join(map(dictionary_word, token.spoken)) or "word"
        if not phones:
            return None
        for word, known in lexicon_words.items():
            if known == phones and word.startswith(f"{base}_lexicon"):
                return word
        word = f"{base}_lexicon{len(lexicon_words) + 1}"
        lexicon_words[word] = phones
        return word

    def align(self, audio: np.ndarray, sample_rate: int, tokens: list[ScriptToken], language: str) -> list[WordTiming]:
        if not language.lower().startswith("en"):
            raise AlignmentError(f"pocketsphinx has only an English model; the item's language is {language!r}")
        if getattr(self, "_decoder", None) is None:
            self.load()
        # Each token's slice of the word sequence; tokens with nothing alignable stay untimed.
        words: list[str] = []
        spans: list[tuple[int, int]] = []
        lexicon_words: dict[str, str] = {}  # dictionary word -> ARPAbet, for tokens with a lexicon's phonemes
        for token in tokens:
            first = len(words)
            if token.phonemes and (word := self._lexicon_word(token, lexicon_words)):
                words.append(word)
            else:
                words.extend(w for w in map(dictionary_word, token.spoken) if w)
            spans.append((first, len(words)))
        if not words:
            return [self._timing(token, None, None, None) for token in tokens]

        pcm = audio_io.resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
        duration_ms = int(len(pcm) * 1000 / SAMPLE_RATE)
        if audio_io.rms_dbfs(pcm) < MIN_SPEECH_DBFS:
            raise AlignmentError(f"audio is silent ({audio_io.rms_dbfs(pcm):.0f} dBFS over {duration_ms} ms)")
        for word, phones in lexicon_words.items():
            if self._decoder.lookup_word(word) != phones:
                self._decoder.add_word(word, phones, True)
            self.added_words[word] = phones
        self._ensure_pronunciations(words)
        segments = self._decode(pcm, words, duration_ms)

        timings = []
        for token, (first, last) in zip(tokens, spans):
            if first == last:
                timings.append(self._timing(token, None, None, None))
                continue
            mine = segments[first:last]
            start = mine[0][0] * FRAME_MS
            end = min((mine[-1][1] + 1) * FRAME_MS, duration_ms)
            n_frames = sum(e - s + 1 for s, e, _ in mine)
            timings.append(self._timing(token, start, end, word_score(sum(r for _, _, r in mine), n_frames)))
        scores = [t.score for t in timings if t.score is not None]
        if scores and sum(scores) / len(scores) < MIN_ITEM_SCORE:
            raise AlignmentError(
                f"the audio does not sound like the script (mean word fit {sum(scores) / len(scores):.3f} "
                f"< {MIN_ITEM_SCORE}): noise, silence or other speech"
            )
        return timings

    def _decode(self, pcm: np.ndarray, words: list[str], duration_ms: int) -> list[tuple[int, int, float]]:
        """(start_frame, end_frame inclusive, log-likelihood ratio in nats) for each word, in script order."""
        decoder = self._decoder
        raw = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        try:
            decoder.set_align_text(" ".join(words))
            decoder.start_utt()
            decoder.process_raw(raw, full_utt=True)
            decoder.end_utt()
        except RuntimeError as exc:
            raise AlignmentError(f"pocketsphinx failed on the {len(words)}-word script: {exc}") from exc
        if decoder.hyp() is None:
            raise AlignmentError(
                f"pocketsphinx found no path through the {len(words)}-word script in {duration_ms} ms of audio "
                "(the speech does not match the text, or is too short for it)"
            )
        found, segments = [], []
        for seg in decoder.seg():
            if seg.word.startswith(("<", "[", "(")):  # <sil>, <s>, [NOISE], (NULL)
                continue
            # Segment.ascore is exp() of the raw score without the senone shift: undo both to get nats.
            ratio = math.log(seg.ascore) * (1 << SENONE_SCORE_SHIFT) if seg.ascore > 0 else -math.inf
            found.append(_VARIANT.sub("", seg.word))
            segments.append((seg.start_frame, seg.end_frame, ratio))
        if found != words:
            raise AlignmentError(f"pocketsphinx's segmentation has {len(found)} words, the script {len(words)}")
        return segments

    def _timing(self, token: ScriptToken, start: int | None, end: int | None, score: float | None) -> WordTiming:
        return WordTiming.of(token, start, end, None if score is None else round(score, 4), source=self.name)
