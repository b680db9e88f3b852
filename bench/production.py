"""Production-size speed of the GPU backends with full-size random models (``python -m bench.models --production``).

F5TTS_v1_Base + Vocos mel-24khz synthesis at several NFE steps and batch sizes, WhisperX alignment with a
wav2vec2-base-960h-sized model (one pass per sentence window, and batched whole-item emissions), and the derived
chunk size and workers per GPU. Random weights cost what the checkpoints cost (F5's duration comes from text length).
Configurations that would not finish inside ``--budget-s`` are printed as not measured, never estimated as figures.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.random_models import GATE_NOTE, build_all, cache_root

MIB = 1024 * 1024
# Short production-like lines (a few seconds each), so CPU runs stay small.
LINES = [
    "The river runs past the old mill.",
    "Please read the second chapter before Friday.",
    "Bright stars filled the cold winter sky.",
    "Where did the summer go?",
    "She sold three thousand tickets in two days.",
    "The committee approved the plan by a vote of seven to two.",
    "A light rain fell over the harbour all night.",
    "Nobody expected the old clock to chime again.",
]
REFERENCE_TEXT = "Some call me nature, others call me mother nature."
LOAD_SHARE = 0.05  # a chunk should spend at most this share of its time loading models


@dataclass
class SynthRow:
    nfe: int
    batch: int
    items: int
    audio_s: float = 0.0
    wall_s: float = 0.0
    peak_mib: float | None = None
    skipped: str = ""

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s

    @property
    def items_per_hour(self) -> float:
        return self.items / self.wall_s * 3600


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def _allocated(cuda: bool) -> float | None:
    if not cuda:
        return None
    import torch

    return torch.cuda.memory_allocated() / MIB


def run(device: str, items: int, nfe_steps: list[int], batches: list[int], budget_s: float,
        alignment_batches: list[int]) -> None:
    from bench.torch_host import device_description, use_soundfile_for_wav_if_torchaudio_cannot_read
    from narration.align.whisperx import WhisperXAligner, WhisperXSettings
    from narration.audio import to_wav_bytes
    from narration.devices import is_cuda
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.synth.base import SynthesisRequest, Voice
    from narration.synth.espeak import EspeakSynthesizer
    from narration.synth.f5tts import F5TTSSettings, F5TTSSynthesizer

    started = time.perf_counter()
    cuda = is_cuda(device)
    root = cache_root()
    t0 = time.perf_counter()
    build_all(root)
    load_average = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{device_description(device)}, load average {load_average} (other work on the host slows every figure); "
          f"random full-size models in {root} (built or found in {time.perf_counter() - t0:.0f} s); budget "
          f"{budget_s:.0f} s")

    espeak = EspeakSynthesizer(Settings())
    espeak.load()
    with tempfile.TemporaryDirectory(prefix="bench-production-") as tmp:
        reference = espeak.synthesize(normalize_script(REFERENCE_TEXT), Voice("espeak", "en", ""))
        ref_path = Path(tmp) / "ref.wav"
        ref_path.write_bytes(to_wav_bytes(reference.audio, reference.sample_rate))
        note = use_soundfile_for_wav_if_torchaudio_cannot_read(ref_path)
        voice = Voice("narrator", "en", REFERENCE_TEXT, reference_path=str(ref_path))

        # -- alignment ----------------------------------------------------------------------------------
        speech = []
        for n in range(max(items, max(alignment_batches))):
            tokens = normalize_script(LINES[n % len(LINES)])
            take = espeak.synthesize(tokens, Voice("espeak", "en", ""))
            speech.append((take.audio, take.sample_rate, tokens, "en"))
        audio_s = sum(len(a) / r for a, r, _, _ in speech)
        print(f"\nWhisperX alignment, wav2vec2-base-960h size ({len(speech)} items, {audio_s:.1f} s of speech):")
        for batch in alignment_batches:
            left = budget_s - (time.perf_counter() - started)
            if left < 30:
                print(f"  batch {batch}: not measured ({left:.0f} s of the budget left)")
                continue
            aligner = WhisperXAligner(
                Settings(device=device, alignment_batch_size=batch, max_untimed_ratio=1.0, min_mean_score=-1.0),
                WhisperXSettings(align_model=str(root / "wav2vec2-base-960h"), nltk_data=str(Path(tmp) / "nltk")))
            t0 = time.perf_counter()
            aligner.load()
            load = time.perf_counter() - t0
            aligner.align_many(speech[:1])  # warm-up
            t0 = time.perf_counter()
            results = aligner.align_many(speech)
            _sync(cuda)
            wall = time.perf_counter() - t0
            aligner.close()
            failed = sum(isinstance(r, Exception) for r in results)
            mode = "one pass per sentence window" if batch == 1 else f"whole-item emissions, {batch} items a pass"
            print(f"  batch {batch} ({mode}): load {load:.2f} s, RTF {wall / audio_s:.4f}"
                  + (f", {failed} items failed" if failed else ""))
        print(f"gate ASR RTF at real size: not measured ({GATE_NOTE}; bench.models prints tiny.en's)")

        # -- synthesis ----------------------------------------------------------------------------------
        settings = Settings(device=device, model_dir=str(root), synthesis_batch_size=max(batches),
                            synthesis_batch_frames=10**9)
        before_load = _allocated(cuda)
        synth = F5TTSSynthesizer(settings, F5TTSSettings())
        t0 = time.perf_counter()
        synth.load()
        _sync(cuda)
        load_s = time.perf_counter() - t0
        params = sum(p.numel() for p in synth.model.parameters()) / 1e6
        dtype = str(next(synth.model.parameters()).dtype).removeprefix("torch.")
        print(f"\nF5TTS_v1_Base ({params:.0f} M parameters, {dtype}) + Vocos mel-24khz on {device}: load "
              f"{load_s:.2f} s (safetensors {synth.model_files['checkpoint']})")
        if cuda:  # warm-up: the first call pays one-off kernel and allocator set-up (on CPU, minutes: skipped)
            synth.f5 = F5TTSSettings(nfe_step=2)
            synth.synthesize_many([SynthesisRequest(normalize_script("Warm up."), voice, 1.0, 0)])

        rows: list[SynthRow] = []
        cost_per_step: float | None = None  # seconds per (NFE step x item) at batch 1, measured
        for nfe in sorted(nfe_steps):
            for batch in sorted(batches):
                count = max(items, batch)
                row = SynthRow(nfe, batch, count)
                rows.append(row)
                left = budget_s - (time.perf_counter() - started)
                if cost_per_step is not None:
                    estimate = cost_per_step * nfe * count
                    if estimate > left:
                        row.skipped = f"not measured: about {estimate:.0f} s at batch 1 speed, {left:.0f} s left"
                        continue
                requests = [SynthesisRequest(normalize_script(LINES[n % len(LINES)]), voice, 1.0, n)
                            for n in range(count)]
                synth.f5 = F5TTSSettings(nfe_step=nfe)
                synth.settings = settings.model_copy(update={"synthesis_batch_size": batch})
                if cuda:
                    import torch

                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                takes = synth.synthesize_many(requests)
                _sync(cuda)
                row.wall_s = time.perf_counter() - t0
                failed = [t for t in takes if isinstance(t, Exception)]
                if failed:
                    row.skipped = f"FAILED: {failed[0]}"
                    continue
                row.audio_s = sum(len(t.audio) / t.sample_rate for t in takes)
                if cuda:
                    row.peak_mib = torch.cuda.max_memory_allocated() / MIB
                if batch == 1 and cost_per_step is None:
                    cost_per_step = row.wall_s / (nfe * count)
        synth.close()
        after_close = _allocated(cuda)

        print(f"{'NFE':>4} {'batch':>5} {'items':>5} {'audio s':>8} {'wall s':>8} {'RTF':>7} {'items/h':>8} "
              f"{'x batch 1':>9} {'peak MiB':>9}")
        for row in rows:
            if row.skipped:
                print(f"{row.nfe:>4} {row.batch:>5} {row.items:>5}  {row.skipped}")
                continue
            single = next((r for r in rows if r.nfe == row.nfe and r.batch == 1 and not r.skipped), None)
            gain = f"{single.rtf / row.rtf:.2f}" if single else "-"
            peak = f"{row.peak_mib:.0f}" if row.peak_mib is not None else "-"
            print(f"{row.nfe:>4} {row.batch:>5} {row.items:>5} {row.audio_s:>8.2f} {row.wall_s:>8.2f} "
                  f"{row.rtf:>7.3f} {row.items_per_hour:>8.0f} {gain:>9} {peak:>9}")
        print("RTF: wall seconds / audio seconds over the whole batch run (aggregate); items/h: one worker; "
              "x batch 1: audio seconds per wall second against batch 1 at the same NFE (items differ in length); "
              "peak: torch.cuda.max_memory_allocated")
        if cuda:
            print(f"GPU memory: {before_load:.1f} MiB before load, {after_close:.1f} MiB after close() "
                  f"({'back to its level' if after_close - before_load < 1 else 'NOT back to its level'})")
        else:
            print("peak GPU memory per worker: not measured (no GPU on this host)")
        if note:
            print(f"note: {note}")


    # -- what to run --------------------------------------------------------------------------------------
    measured = [r for r in rows if not r.skipped]
    print("\nRecommendation from these figures:")
    for nfe in sorted({r.nfe for r in measured}):
        best = min((r for r in measured if r.nfe == nfe), key=lambda r: r.rtf)
        per_item = best.wall_s / best.items
        chunk = math.ceil(load_s * (1 - LOAD_SHARE) / LOAD_SHARE / per_item)
        chunk = max(best.batch, math.ceil(chunk / best.batch) * best.batch)
        line = (f"  NFE {nfe}: batch {best.batch} ({best.items_per_hour:.0f} items/h per worker, RTF {best.rtf:.3f}); "
                f"chunk size >= {chunk} keeps model load under {LOAD_SHARE:.0%} of a chunk")
        if cuda and best.peak_mib:
            import torch

            total = torch.cuda.get_device_properties(device).total_memory / MIB
            line += (f"; memory allows {int(0.9 * total // best.peak_mib)} workers per GPU "
                     f"({best.peak_mib:.0f} MiB peak each); more than one only helps if one leaves the GPU idle: "
                     "measure by running two at once")
        else:
            line += "; workers per GPU: not measured (no GPU)"
        print(line)


def main(argv: list[str]) -> None:
    import argparse

    from narration.devices import is_cuda, resolve_device

    parser = argparse.ArgumentParser(prog="bench.models --production", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--items", type=int, default=None, help="items per configuration (default: 4 on CPU, "
                        "32 on CUDA; at least the batch size)")
    parser.add_argument("--nfe", default="7,16,32", help="NFE steps to measure (default 7,16,32)")
    parser.add_argument("--batches", default=None, help="batch sizes (default: 1,4 on CPU; 1,4,16,32 on CUDA)")
    parser.add_argument("--alignment-batches", default="1,4", help="alignment batch sizes (default 1,4)")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget; configurations that would "
                        "not fit are reported as not measured (default: 900 on CPU, 240 on CUDA)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = resolve_device(args.device)
    cuda = is_cuda(device)
    run(device, args.items or (32 if cuda else 4), [int(n) for n in args.nfe.split(",")],
        [int(b) for b in (args.batches or ("1,4,16,32" if cuda else "1,4")).split(",")],
        args.budget_s or (240.0 if cuda else 900.0), [int(b) for b in args.alignment_batches.split(",")])
