"""Memory of the report step against the batch size: ``write_batch_report`` over batches of N items (local S3).

One real item is synthesised, aligned and rendered; its outputs are copied (server-side) to N item ids, so every
item the report reads is a real 4-6 s WAV with real timings and cues. Prints, per batch size, the peak of Python's
traced allocations (numpy's included) while the report is written, and how long it took.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc


def build_batch(storage, settings, items: int) -> str:
    from narration.layout import BatchLayout
    from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
    from narration.plan import BatchOptions, plan_batch
    from narration.render import render_chunk
    from narration.subtitles.formats import SUBTITLE_FORMATS

    batch = f"report-bench-{items}"
    manifest = "\n".join(json.dumps({"id": f"i{n:04d}", "text": "The council approved a budget of $4.5 million "
                                     "on Tuesday."}) for n in range(items))
    storage.put_text(f"incoming/{batch}.jsonl", manifest)
    plan = plan_batch(storage, settings, batch, [f"incoming/{batch}.jsonl"], BatchOptions(chunk_size=1),
                      {"narrator"})
    first = load_chunk(storage, plan.chunks[0].key)
    synthesize_chunk(storage, settings, first)
    align_chunk(storage, settings, first)
    render_chunk(storage, settings, first.model_copy(update={"formats": list(SUBTITLE_FORMATS)}))
    layout = BatchLayout(batch)
    source = layout.item_prefix("i0000")
    row = storage.get_json(layout.result("i0000"))
    names = [key.removeprefix(source) for key in storage.list_keys(source) if not key.endswith("result.json")]

    def copy(n: int) -> None:
        item_id = f"i{n:04d}"
        for name in names:
            storage.copy(source + name, layout.item_prefix(item_id) + name)
        moved = {k: (v.replace(source, layout.item_prefix(item_id)) if k.endswith("_key") and v else v)
                 for k, v in row.items()}
        storage.put_json(layout.result(item_id), {**moved, "item_id": item_id, "line": n + 1})

    storage.map(copy, range(1, items))
    return batch


def measure(storage, settings, batch: str) -> dict:
    from narration.deliver import write_batch_report

    tracemalloc.start()
    started = time.perf_counter()
    summary = write_batch_report(storage, settings, batch)
    wall = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary["by_status"] == {"done": summary["items"]}, summary["by_status"]
    return {"items": summary["items"], "peak_mib": round(peak / 2**20, 1), "wall_s": round(wall, 2),
            "html_kib": round(len(storage.get_bytes(summary["report_html"])) / 1024)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[25, 100, 400])
    args = parser.parse_args(argv)

    from narration.audio import to_wav_bytes
    from narration.dev.local_s3 import LocalS3Server
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.storage import Storage
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer
    from narration.voices import upload_voice

    figures = []
    with LocalS3Server() as server:
        server.apply_env()
        settings = Settings()
        storage = Storage.from_settings(settings)
        storage.ensure_bucket()
        text = "This is the narrator's reference voice."
        synth = EspeakSynthesizer(settings)
        synth.load()
        ref = synth.synthesize(normalize_script(text), Voice("narrator", "en", text))
        upload_voice(storage, "narrator", to_wav_bytes(ref.audio, ref.sample_rate), text)
        for items in args.items:
            figures.append(measure(storage, settings, build_batch(storage, settings, items)))
    print(f"report step memory (S3 concurrency {settings.s3_concurrency}):")
    print("| items | peak traced memory MiB | wall s | report.html KiB |")
    print("| --- | --- | --- | --- |")
    for f in figures:
        print(f"| {f['items']} | {f['peak_mib']} | {f['wall_s']} | {f['html_kib']} |")
    return figures


if __name__ == "__main__":
    main()
