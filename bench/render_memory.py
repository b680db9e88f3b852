"""Render's and the report's memory on long masters: a synthetic programme (espeak-ng speech, repeated with varying
level and pauses) of 20 and 60 minutes at 22.05 kHz is delivered (loudness normalisation, the WAV master, the
chosen encodings) and drawn as the report's waveform, each in its own child process, and each child's peak RSS and
wall time are printed.

``--code DIR`` runs the children on another checkout's ``include`` directory (e.g. the code before streaming), so
the same masters measure both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RATE = 22050
VOICE_TEXT = ("In the beginning the narrator read the long programme aloud, sentence after sentence, with a pause "
              "between the paragraphs, so that the whole hour could be measured.")
WRITE_BLOCK_S = 60


def write_master(path: str, minutes: float) -> None:
    """A 16-bit mono master of espeak-ng speech, each repetition at its own level and followed by a pause."""
    import soundfile

    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer

    speaker = EspeakSynthesizer(Settings())
    speaker.load()
    take = speaker.synthesize(normalize_script(VOICE_TEXT), Voice("narrator", "en", VOICE_TEXT))
    assert take.sample_rate == RATE, take.sample_rate
    speech = np.asarray(take.audio, dtype=np.float32)
    rng = np.random.default_rng(11)
    total, written = int(minutes * 60 * RATE), 0
    with soundfile.SoundFile(path, "w", RATE, 1, format="WAV", subtype="PCM_16") as out:
        while written < total:
            block = []
            while sum(map(len, block)) < WRITE_BLOCK_S * RATE:
                block += [speech * rng.uniform(0.3, 0.9), np.zeros(int(rng.uniform(0.2, 1.2) * RATE), np.float32)]
            samples = np.concatenate(block)[: total - written]
            out.write(samples)
            written += len(samples)


CHILD = """
import json, sys
from narration.layout import BatchLayout
from narration.render import AudioDelivery, deliver_audio
from narration.schema import ItemStatus, SynthesisRecord
from narration.settings import Settings
from narration.storage import Storage
step, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
encodings = [name for name in sys.argv[4].split(",") if name]
storage = Storage.from_settings(Settings())
layout = BatchLayout("render-memory")
if step == "render":
    synthesis = SynthesisRecord(item_id="programme", status=ItemStatus.SYNTHESIZED, backend="espeak-ng",
                                audio_key=key, sample_rate=22050, audio_seconds=seconds)
    outputs, fields = deliver_audio(storage, layout, "programme", synthesis, AudioDelivery(-16.0, -1.0, encodings))
    print(json.dumps({"outputs": outputs, "loudness_lufs": fields.get("loudness_lufs")}))
else:
    from narration.deliver import _read_audio
    from narration.report import ItemMedia, ItemReportRow
    row = ItemReportRow(item_id="programme", manifest="bench.jsonl", line=1, status="done", audio_seconds=seconds)
    _read_audio(storage, key, row, ItemMedia())
    print(json.dumps({}))
"""


def run_child(code: str, step: str, key: str, seconds: float, encodings: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([code, os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, step, key, str(seconds), ",".join(encodings)], env=env,
                            stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the {step} child failed (exit {os.waitstatus_to_exitcode(status)})")
    lines = [line for line in stdout.splitlines() if line.strip()]
    return {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            **(json.loads(lines[-1]) if lines else {})}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="20,60", help="comma-separated master lengths")
    parser.add_argument("--encodings", default="mp3", help="comma-separated delivery encodings beside the WAV")
    parser.add_argument("--code", default="include", help="the include directory the children import")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    encodings = [name for name in args.encodings.split(",") if name]

    from narration.dev.local_s3 import LocalS3Server
    from narration.layout import BatchLayout
    from narration.settings import Settings
    from narration.storage import Storage

    rows = []
    with LocalS3Server() as server, tempfile.TemporaryDirectory(prefix="narration-render-memory-") as work:
        server.apply_env("bench-render-memory")
        storage = Storage.from_settings(Settings())
        storage.ensure_bucket()
        layout = BatchLayout("render-memory")
        for minutes in sorted(float(m) for m in args.minutes.split(",")):
            path = os.path.join(work, "master.wav")
            write_master(path, minutes)
            size_mb = os.path.getsize(path) / 2**20
            key = storage.upload_file(layout.audio("programme"), path)
            os.remove(path)
            seconds = round(minutes * 60, 3)
            row = {"minutes": minutes, "master_mb": round(size_mb, 1), "encodings": ["wav", *encodings]}
            row["render"] = run_child(args.code, "render", key, seconds, encodings)
            print(f"{minutes:g} min master ({size_mb:.0f} MB, 16-bit 22.05 kHz): render peak RSS "
                  f"{row['render']['peak_rss_mb']} MB, {row['render']['wall_s']} s", flush=True)
            # the report reads the delivered master (24-bit), as it does in a batch
            row["report"] = run_child(args.code, "report", row["render"]["outputs"]["audio"], seconds, encodings)
            print(f"{minutes:g} min delivered master: report waveform peak RSS {row['report']['peak_rss_mb']} MB, "
                  f"{row['report']['wall_s']} s", flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
