"""Quality-check benchmark: language identification (multilingual Whisper base) on a small multilingual espeak-ng
set plus Piper English, and the speaker encoder's separation of same- and different-speaker TIMIT pairs.

Run ``python -m bench.quality`` from the repo root (the heavy venv has every extra); ``main()`` returns the figures.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import defaultdict

import numpy as np

from bench.alignment import TIMIT_SAMPLE_RATE, load_timit, timit_dir
from narration.normalize import normalize_script
from narration.quality import QualityChecks, QualitySettings
from narration.schema import ScriptToken
from narration.settings import get_settings
from narration.synth.base import Voice
from narration.synth.espeak import EspeakSynthesizer

# (espeak voice, Whisper code, sentence): spoken as written (normalize_script is English-only, so plain words).
MULTILINGUAL = [
    ("en-us", "en", "The weather will be cold tonight and the trains are running late."),
    ("de", "de", "Das Wetter wird heute Nacht kalt und die Züge haben Verspätung."),
    ("fr", "fr", "Le temps sera froid cette nuit et les trains sont en retard."),
    ("es", "es", "El tiempo será frío esta noche y los trenes llegan tarde."),
    ("it", "it", "Il tempo sarà freddo stanotte e i treni sono in ritardo."),
    ("pt", "pt", "O tempo vai estar frio esta noite e os comboios estão atrasados."),
    ("nl", "nl", "Het weer wordt vannacht koud en de treinen hebben vertraging."),
    ("pl", "pl", "Pogoda będzie dziś w nocy zimna, a pociągi się spóźniają."),
]


def _plain_tokens(text: str) -> list[ScriptToken]:
    return [ScriptToken(index=i, original=w, spoken=[w.strip(".,").lower()]) for i, w in enumerate(text.split())]


def bench_language(checks: QualityChecks) -> dict:
    espeak = EspeakSynthesizer(get_settings())
    espeak.load()
    rows = []
    for voice, code, text in MULTILINGUAL:
        out = espeak.synthesize(_plain_tokens(text), Voice(voice, code, "", metadata={"espeak_voice": voice}))
        found = checks.language.detect(out.audio, out.sample_rate, code)
        rows.append(("espeak " + voice, code, found.language, found.probability))
    try:
        from narration.synth.piper import PiperSynthesizer
    except ImportError:
        PiperSynthesizer = None
    if PiperSynthesizer is not None:
        piper = PiperSynthesizer(get_settings())
        piper.load()
        for _, _, text in MULTILINGUAL[:1]:
            for sentence in (text, "Please transfer the money before half past five on Friday."):
                out = piper.synthesize(normalize_script(sentence), Voice("piper", "en", ""))
                found = checks.language.detect(out.audio, out.sample_rate, "en")
                rows.append(("piper joe", "en", found.language, found.probability))
    correct = [r for r in rows if r[1] == r[2]]
    return {"rows": rows, "items": len(rows), "correct": len(correct),
            "accuracy": round(len(correct) / len(rows), 3),
            "mean_probability_correct": round(float(np.mean([r[3] for r in correct])), 3) if correct else None}


def bench_speakers(checks: QualityChecks) -> dict:
    by_speaker: dict[str, list[np.ndarray]] = defaultdict(list)
    for name, audio, _tokens, _bounds in load_timit(timit_dir()):
        speaker = name.split("_")[0]
        if len(by_speaker[speaker]) < 3:
            by_speaker[speaker].append(checks.speaker.embed(audio, TIMIT_SAMPLE_RATE))
    clips = [(s, e) for s, es in by_speaker.items() for e in es]
    same, different = [], []
    for (s1, e1), (s2, e2) in itertools.combinations(clips, 2):
        (same if s1 == s2 else different).append(float(np.dot(e1, e2)))
    return {"speakers": len(by_speaker), "clips": len(clips),
            "same_pairs": len(same), "same_mean": round(float(np.mean(same)), 3), "same_min": round(min(same), 3),
            "different_pairs": len(different), "different_mean": round(float(np.mean(different)), 3),
            "different_max": round(max(different), 3),
            "overlapping_pairs": sum(1 for d in different if d >= min(same)) + sum(1 for s in same
                                                                                  if s <= max(different))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-speakers", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    checks = QualityChecks(get_settings(), QualitySettings(language_id=True, voice_similarity=not args.skip_speakers))
    checks.load()
    results: dict = {"load_s": round(time.perf_counter() - started, 2), "unavailable": checks.unavailable}
    if checks.language is not None:
        results["language"] = language = bench_language(checks)
        print("language identification (multilingual Whisper base, int8, first 30 s):")
        for source, want, got, p in language["rows"]:
            print(f"  {source:<14} requested {want}  detected {got}  p={p:.3f}{'' if want == got else '  WRONG'}")
        print(f"  accuracy {language['correct']}/{language['items']} = {language['accuracy']}, "
              f"mean probability when right {language['mean_probability_correct']}")
    if checks.speaker is not None and timit_dir().is_dir():
        results["speakers"] = sp = bench_speakers(checks)
        print(f"speaker encoder (resemblyzer GE2E) on TIMIT: {sp['clips']} clips of {sp['speakers']} speakers")
        print(f"  same speaker: {sp['same_pairs']} pairs, cosine mean {sp['same_mean']}, min {sp['same_min']}")
        print(f"  different:    {sp['different_pairs']} pairs, cosine mean {sp['different_mean']}, "
              f"max {sp['different_max']}; pairs inside the other set's range: {sp['overlapping_pairs']}")
    for note in checks.unavailable:
        print(f"not run: {note}")
    return results


if __name__ == "__main__":
    main()
