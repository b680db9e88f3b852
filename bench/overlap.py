"""WriteBehind and Prefetch measured on their own: a worker step's item loop with its S3 reads and writes in the
background, against the same loop with plain sequential storage calls.

The loop is the synthesize and align steps' own shape, with the model replaced by a fixed per-item delay standing
for GPU-speed work (a sleep: like a GPU call it leaves the CPU to the S3 threads). Objects are production-sized:
a synthesized take is 8 s of 24 kHz 16-bit mono audio (384 KB) plus its record, an alignment reads that audio and
writes a timing record. S3 is moto's server on loopback, so its round trips are shorter than a real bucket's: the
gain measured here is a lower bound. Per configuration: the median of ``--repeats`` runs, in ms per item.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

AUDIO_BYTES = 8 * 24_000 * 2  # 8 s of 24 kHz 16-bit mono
RECORD = {"tokens": [{"index": n, "original": f"word{n}", "spoken": [f"word{n}"]} for n in range(40)],
          "params": {"cache_key": "0" * 32}, "words": [{"index": n, "start_ms": 10 * n, "end_ms": 10 * n + 9,
                                                         "score": 0.9} for n in range(40)]}


def synthesize_loop(storage, items: int, delay_s: float, background: bool) -> None:
    """Per item: the model speaks (the delay), then its audio and its record go to S3."""
    from narration.storage import WriteBehind

    audio = os.urandom(AUDIO_BYTES)

    def write(n: int) -> None:
        storage.put_bytes(f"bench/items/{n}/audio.wav", audio)
        storage.put_json(f"bench/items/{n}/synthesis.json", RECORD)

    if not background:
        for n in range(items):
            time.sleep(delay_s)
            write(n)
        return
    with WriteBehind() as writer:
        for n in range(items):
            time.sleep(delay_s)
            writer.submit(lambda n=n: write(n))


def align_loop(storage, items: int, delay_s: float, prefetch: bool, write_behind: bool) -> None:
    """Per item: its audio is read, the model aligns it (the delay), its timing record goes to S3."""
    import contextlib

    from narration.storage import Prefetch, WriteBehind

    keys = [f"bench/items/{n}/audio.wav" for n in range(items)]
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(Prefetch(storage.get_bytes, keys)) if prefetch else None
        writer = stack.enter_context(WriteBehind()) if write_behind else None
        for n, key in enumerate(keys):
            audio = reader.get(n) if reader else storage.get_bytes(key)
            assert len(audio) == AUDIO_BYTES
            time.sleep(delay_s)
            write = lambda n=n: storage.put_json(f"bench/items/{n}/timing.json", RECORD)  # noqa: E731
            writer.submit(write) if writer else write()


def timed(run: Callable[[], None], items: int, repeats: int) -> float:
    """Median ms per item over ``repeats`` runs."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        runs.append((time.perf_counter() - started) * 1000 / items)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--delays-ms", default="50,100,200", help="per-item model time standing for a GPU backend")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from narration.dev.local_s3 import LocalS3Server
    from narration.settings import Settings
    from narration.storage import Storage

    with LocalS3Server() as server:
        server.apply_env("bench-overlap")
        storage = Storage.from_settings(Settings())
        storage.ensure_bucket()
        synthesize_loop(storage, args.items, 0.0, background=False)  # the objects the align loop reads; warm-up
        figures = []
        for delay_ms in [int(d) for d in args.delays_ms.split(",")]:
            delay = delay_ms / 1000
            row = {"model_ms": delay_ms}
            row["synthesize_sequential"] = timed(lambda: synthesize_loop(storage, args.items, delay, False),
                                                 args.items, args.repeats)
            row["synthesize_write_behind"] = timed(lambda: synthesize_loop(storage, args.items, delay, True),
                                                   args.items, args.repeats)
            for name, prefetch, behind in (("align_sequential", False, False), ("align_prefetch", True, False),
                                           ("align_write_behind", False, True), ("align_both", True, True)):
                row[name] = timed(lambda p=prefetch, b=behind: align_loop(storage, args.items, delay, p, b),
                                  args.items, args.repeats)
            figures.append(row)

    print(f"{args.items} items, {AUDIO_BYTES // 1000} KB audio per item, moto S3 on loopback, median of "
          f"{args.repeats}; ms per item (S3 share = time beyond the model's)")
    header = f"{'model ms':>8}  {'step':<10} {'variant':<22} {'ms/item':>8} {'S3 ms':>6} {'saved':>6}"
    print(header)
    for row in figures:
        model = row["model_ms"]
        for step, base, variants in (("synthesize", "synthesize_sequential", ["synthesize_write_behind"]),
                                     ("align", "align_sequential", ["align_prefetch", "align_write_behind",
                                                                    "align_both"])):
            for name in [base, *variants]:
                saved = "" if name == base else f"{row[base] - row[name]:6.1f}"
                print(f"{model:>8}  {step:<10} {name.split('_', 1)[1]:<22} {row[name]:8.1f} "
                      f"{row[name] - model:6.1f} {saved:>6}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
