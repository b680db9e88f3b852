"""The worker command line, the one contract both runners use (a local process or a container).

A step reads its chunk description from S3, writes per-item outputs to S3, logs progress on stderr and prints
exactly one JSON result line on stdout, last.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from narration.settings import Settings


def _emit(result: dict) -> None:
    sys.stderr.flush()
    sys.stdout.write(json.dumps(result, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def _storage(settings: Settings):
    from narration.storage import Storage

    return Storage.from_settings(settings)


def cmd_synthesize(args, settings: Settings) -> dict:
    from narration.pipeline import load_chunk, synthesize_chunk

    storage = _storage(settings)
    return synthesize_chunk(storage, settings, load_chunk(storage, args.chunk)).model_dump(mode="json")


def cmd_align(args, settings: Settings) -> dict:
    from narration.pipeline import align_chunk, load_chunk

    storage = _storage(settings)
    return align_chunk(storage, settings, load_chunk(storage, args.chunk), backend=args.backend).model_dump(
        mode="json")


def cmd_render(args, settings: Settings) -> dict:
    from narration.pipeline import load_chunk
    from narration.render import render_chunk

    storage = _storage(settings)
    result = render_chunk(storage, settings, load_chunk(storage, args.chunk), formats=args.formats.split(","),
                          profile_name=args.profile, vtt_word_timestamps=args.vtt_word_timestamps,
                          fallback_unavailable=args.fallback_unavailable)
    return result.model_dump(mode="json")


def cmd_report(args, settings: Settings) -> dict:
    from narration.deliver import write_batch_report

    summary = write_batch_report(_storage(settings), settings, args.batch)
    return {k: v for k, v in summary.items() if k != "downloads"}


def _add_voice_commands(sub) -> None:
    voices = sub.add_parser("voices", help="manage the reference voice library in S3")
    vsub = voices.add_subparsers(dest="voice_command", required=True)
    up = vsub.add_parser("upload", help="validate and store a reference voice")
    up.add_argument("voice_id")
    up.add_argument("wav", help="reference recording (WAV, 1-12 s)")
    up.add_argument("--transcript", required=True, help="exactly what the reference says")
    up.add_argument("--language", default="en")
    up.add_argument("--espeak-voice", default="en-us", help="espeak-ng voice used by the CPU synthesizer")
    vsub.add_parser("list", help="list the voices in the library")
    show = vsub.add_parser("show", help="print one voice's metadata")
    show.add_argument("voice_id")
    down = vsub.add_parser("download", help="print a presigned link to a voice's reference audio")
    down.add_argument("voice_id")
    delete = vsub.add_parser("delete", help="remove a voice from the library")
    delete.add_argument("voice_id")


def cmd_voices(args, settings: Settings) -> dict:
    from narration import voices
    from narration.layout import voice_reference_key

    storage = _storage(settings)
    if args.voice_command == "upload":
        with open(args.wav, "rb") as fh:
            info = voices.upload_voice(storage, args.voice_id, fh.read(), args.transcript, language=args.language,
                                       espeak_voice=args.espeak_voice)
        return {"uploaded": info.model_dump(mode="json")}
    if args.voice_command == "list":
        listed = voices.list_voices(storage)
        print(f"{'voice':<20} {'lang':<5} {'secs':>5} {'dBFS':>6}  transcript", file=sys.stderr)
        for v in listed:
            print(f"{v.voice_id:<20} {v.language:<5} {v.duration_s:>5.1f} {v.loudness_dbfs:>6.1f}  "
                  f"{v.transcript[:60]}", file=sys.stderr)
        return {"voices": [v.voice_id for v in listed]}
    if args.voice_command == "show":
        return voices.get_voice_info(storage, args.voice_id).model_dump(mode="json")
    if args.voice_command == "download":
        voices.get_voice_info(storage, args.voice_id)
        return {"voice_id": args.voice_id,
                "url": storage.presign(voice_reference_key(args.voice_id), settings.presign_expiry_s)}
    voices.delete_voice(storage, args.voice_id)
    return {"deleted": args.voice_id}


COMMANDS: dict[str, Callable] = {
    "synthesize": cmd_synthesize, "align": cmd_align, "render": cmd_render, "report": cmd_report,
    "voices": cmd_voices,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="narration", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synthesize", help="synthesise every item of a chunk")
    synth.add_argument("--chunk", required=True, help="S3 key of the chunk description")
    align = sub.add_parser("align", help="time every item of a chunk against its known script")
    align.add_argument("--chunk", required=True)
    align.add_argument("--backend", default=None, help="aligner to use (default: the chunk's primary aligner)")
    render = sub.add_parser("render", help="write subtitles and word timings for a chunk")
    render.add_argument("--chunk", required=True)
    render.add_argument("--formats", default="srt,vtt,ass,json,csv")
    render.add_argument("--profile", default="netflix-adult")
    render.add_argument("--vtt-word-timestamps", action="store_true")
    render.add_argument("--fallback-unavailable", default=None)
    report = sub.add_parser("report", help="write the batch report and summary")
    report.add_argument("--batch", required=True)
    _add_voice_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        result = COMMANDS[args.command](args, settings)
    except Exception as exc:  # the result line still comes last, so the runner can show why
        logging.getLogger("narration").exception("%s failed", args.command)
        _emit({"error": f"{type(exc).__name__}: {exc}", "command": args.command})
        return 1
    _emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
