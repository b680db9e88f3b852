"""The worker command line, the one contract both runners use (a local process or a container).

A step reads its chunk description from S3, writes per-item outputs to S3, logs progress on stderr and prints
exactly one JSON result line on stdout, last. ``narration voices ...`` and ``narration lexicons ...`` manage the
voice and lexicon libraries for people: text on stdout (``--json`` for the result line instead).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from narration.contract import emit_result, error_result
from narration.errors import ConfigurationFault, InfrastructureFault
from narration.languages import DEFAULT_LANGUAGE
from narration.settings import Settings


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
    chunk = load_chunk(storage, args.chunk)
    if args.backend and args.backend != chunk.aligner:  # another aligner than the primary: a fallback run
        chunk = chunk.model_copy(update={"fallback": True, "fallback_aligner": args.backend})
    return align_chunk(storage, settings, chunk).model_dump(mode="json")


def cmd_render(args, settings: Settings) -> dict:
    from narration.pipeline import load_chunk
    from narration.render import render_chunk

    storage = _storage(settings)
    return render_chunk(storage, settings, load_chunk(storage, args.chunk)).model_dump(mode="json")


def cmd_report(args, settings: Settings) -> dict:
    from narration.deliver import write_batch_report

    summary = write_batch_report(_storage(settings), settings, args.batch)
    return {k: v for k, v in summary.items() if k != "downloads"}


def _json_option() -> argparse.ArgumentParser:
    """The ``--json`` option every library command takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON result line instead of text")
    return common


def _add_voice_commands(sub) -> None:
    voices = sub.add_parser("voices", help="manage the reference voice library in S3",
                            description="Manage the reference voices in s3://<bucket>/voices/. Output is for people "
                                        "(a table, a link); --json prints one JSON result line instead.")
    vsub = voices.add_subparsers(dest="voice_command", required=True)
    common = _json_option()
    up = vsub.add_parser("upload", parents=[common], help="validate and store a reference voice")
    up.add_argument("voice_id")
    up.add_argument("wav", help="reference recording (WAV of any sample format or FLAC, 1-12 s, at least 16 kHz; "
                    "several channels are down-mixed to mono)")
    up.add_argument("--force", action="store_true", help="replace the voice if it already exists")
    up.add_argument("--transcript", default=None,
                    help="exactly what the reference says; without it ASR (the whisperx extra) transcribes it")
    up.add_argument("--language", default=DEFAULT_LANGUAGE)
    up.add_argument("--espeak-voice", default="en-us", help="espeak-ng voice used by the CPU synthesizer")
    vsub.add_parser("list", parents=[common], help="list the voices in the library as a table")
    show = vsub.add_parser("show", parents=[common], help="print one voice's metadata")
    show.add_argument("voice_id")
    down = vsub.add_parser("download", parents=[common], help="print a presigned link to a voice's reference audio")
    down.add_argument("voice_id")
    down.add_argument("--expires", type=int, default=None, metavar="SECONDS",
                      help="link lifetime (default NARRATION_PRESIGN_EXPIRY_S)")
    delete = vsub.add_parser("delete", parents=[common], help="remove a voice from the library")
    delete.add_argument("voice_id")


def voices_table(listed) -> str:
    header = f"{'VOICE':<20} {'LANG':<6} {'SECONDS':>7} {'DBFS':>6} {'HZ':>6}  {'ESPEAK':<8} TRANSCRIPT"
    rows = [f"{v.voice_id:<20} {v.language:<6} {v.duration_s:>7.2f} {v.loudness_dbfs:>6.1f} {v.sample_rate:>6}  "
            f"{v.espeak_voice:<8} {_shorten(v.transcript, 50)}" for v in listed]
    return "\n".join([header, *rows])


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _read_input(path: str, refused: Callable[[str], Exception]) -> bytes:
    """The bytes of a file a library command uploads; an unreadable file is the command's refusal, not a crash."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise refused(exc.strerror) from exc


def cmd_voices(args, settings: Settings) -> tuple[dict, str]:
    """(JSON result, text for people) of one ``narration voices`` command."""
    from narration import voices

    storage = _storage(settings)
    if args.voice_command == "upload":
        wav = _read_input(args.wav, lambda why: voices.VoiceError(f"cannot read {args.wav}: {why}"))
        info = voices.upload_voice(storage, args.voice_id, wav, args.transcript, language=args.language,
                                   espeak_voice=args.espeak_voice, settings=settings, replace=args.force)
        text = (f"uploaded voice {info.voice_id}: {info.duration_s:.2f} s, {info.loudness_dbfs:.1f} dBFS, "
                f"transcript ({info.transcript_source}): {info.transcript}")
        if info.downmixed_from_channels:
            text += f"\nnote: the reference had {info.downmixed_from_channels} channels; it was down-mixed to mono"
        return {"uploaded": info.model_dump(mode="json")}, text
    if args.voice_command == "list":
        listed = voices.list_voices(storage)
        text = voices_table(listed) if listed else f"no voices under {storage.uri('voices/')}"
        return {"voices": [v.model_dump(mode="json") for v in listed]}, text
    if args.voice_command == "show":
        info = voices.get_voice_info(storage, args.voice_id).model_dump(mode="json")
        width = max(len(k) for k in info)
        return info, "\n".join(f"{k:<{width}}  {v}" for k, v in info.items())
    if args.voice_command == "download":
        expires = args.expires or settings.presign_expiry_s
        url = voices.presign_voice(storage, args.voice_id, expires)
        return {"voice_id": args.voice_id, "url": url, "expires_s": expires}, url
    voices.delete_voice(storage, args.voice_id)
    return {"deleted": args.voice_id}, f"deleted voice {args.voice_id}"


def _run_for_people(group: str, command: str, as_json: bool, run: Callable[[], tuple[dict, str]],
                    refused: type[Exception]) -> int:
    """A library command (voices, lexicons) speaks to people: text on stdout, one error line on stderr (exit 2 for a
    refused request, 1 when S3 or the machine failed: an InfrastructureFault); ``--json``: one result line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        result, text = run()
    except (refused, InfrastructureFault, BotoCoreError, ClientError) as exc:
        if as_json:
            emit_result(error_result(group, exc))
        print(f"narration {group} {command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, refused) else 1
    if as_json:
        emit_result(result)
    else:
        print(text)
    return 0


def _run_voices(args, settings: Settings) -> int:
    from narration.voices import VoiceError

    return _run_for_people("voices", args.voice_command, args.json, lambda: cmd_voices(args, settings), VoiceError)


def _add_lexicon_commands(sub) -> None:
    lexicons = sub.add_parser("lexicons", help="manage the pronunciation lexicons in S3",
                              description="Manage the pronunciation lexicons in s3://<bucket>/lexicons/ (W3C PLS 1.0 "
                                          "or the simple CSV form). Output is for people; --json prints one JSON "
                                          "result line instead.")
    lsub = lexicons.add_subparsers(dest="lexicon_command", required=True)
    common = _json_option()
    up = lsub.add_parser("upload", parents=[common], help="check a lexicon file whole and store it")
    up.add_argument("name")
    up.add_argument("file", help="a .pls (W3C PLS 1.0) or .csv (grapheme,alias,phoneme,alphabet) file")
    up.add_argument("--force", action="store_true", help="replace the lexicon if it already exists")
    lsub.add_parser("list", parents=[common], help="list the lexicons in the library as a table")
    show = lsub.add_parser("show", parents=[common], help="print one lexicon's entries")
    show.add_argument("name")
    delete = lsub.add_parser("delete", parents=[common], help="remove a lexicon from the library")
    delete.add_argument("name")


def lexicons_table(listed) -> str:
    header = f"{'LEXICON':<20} {'FORMAT':<6} {'ALPHABET':<8} {'LANG':<6} {'ENTRIES':>7} {'ALIASES':>7} {'PHONEMES':>8}"
    rows = [f"{x.name:<20} {x.format:<6} {x.alphabet or '-':<8} {x.language or '-':<6} {x.entries:>7} "
            f"{x.aliases:>7} {x.phonemes:>8}" + (f"  unusable: {x.error}" if x.error else "") for x in listed]
    return "\n".join([header, *rows])


def cmd_lexicons(args, settings: Settings) -> tuple[dict, str]:
    """(JSON result, text for people) of one ``narration lexicons`` command."""
    from narration import lexicons

    storage = _storage(settings)
    if args.lexicon_command == "upload":
        data = _read_input(args.file, lambda why: lexicons.LexiconError(args.file, None, None,
                                                                         f"cannot read the file: {why}"))
        info = lexicons.upload_lexicon(storage, args.name, data, args.file, replace=args.force)
        return ({"uploaded": info.model_dump(mode="json")},
                f"uploaded lexicon {info.name} to {storage.uri(info.key)}: {info.entries} entries "
                f"({info.aliases} aliases, {info.phonemes} phonemes)")
    if args.lexicon_command == "list":
        listed = lexicons.list_lexicons(storage)
        text = lexicons_table(listed) if listed else f"no lexicons under {storage.uri('lexicons/')}"
        return {"lexicons": [x.model_dump(mode="json") for x in listed]}, text
    if args.lexicon_command == "show":
        lexicon, key = lexicons.get_lexicon(storage, args.name)
        entries = [{"grapheme": e.grapheme, "alias": e.alias, "phonemes": e.phonemes, "line": e.line}
                   for e in lexicon.entries.values()]
        summary = lexicons.info(lexicon, key)
        lines = [f"{storage.uri(key)} ({summary.format}, alphabet {summary.alphabet or '-'}, "
                 f"language {summary.language or '-'})"]
        lines += [f"{e['grapheme']:<24} " + (f"alias {e['alias']}" if e["alias"] is not None
                                               else f"phonemes /{e['phonemes']}/") for e in entries]
        return {**summary.model_dump(mode="json"), "entries": entries}, "\n".join(lines)
    key = lexicons.delete_lexicon(storage, args.name)
    return {"deleted": args.name, "key": key}, f"deleted lexicon {args.name} ({storage.uri(key)})"


def _run_lexicons(args, settings: Settings) -> int:
    from narration.lexicons import LexiconError

    return _run_for_people("lexicons", args.lexicon_command, args.json, lambda: cmd_lexicons(args, settings),
                           LexiconError)


def _retryable(exc: BaseException) -> bool:
    """False for failures a retry cannot change (a ConfigurationFault: S3 refused the request, the chunk names an
    unknown backend or profile)."""
    return not isinstance(exc, ConfigurationFault)


COMMANDS: dict[str, Callable] = {
    "synthesize": cmd_synthesize, "align": cmd_align, "render": cmd_render, "report": cmd_report,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="narration", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synthesize", help="synthesise every item of a chunk")
    synth.add_argument("--chunk", required=True, help="S3 key of the chunk description")
    align = sub.add_parser("align", help="time every item of a chunk against its known script")
    align.add_argument("--chunk", required=True)
    align.add_argument("--backend", default=None, help="aligner to use (default: the chunk's own: its primary, or "
                       "its fallback aligner for a fallback chunk); another than the primary runs as a fallback")
    render = sub.add_parser("render", help="deliver the audio and write subtitles and word timings for a chunk, "
                            "as the run's choices in the chunk say")
    render.add_argument("--chunk", required=True)
    report = sub.add_parser("report", help="write the batch report and summary")
    report.add_argument("--batch", required=True)
    _add_voice_commands(sub)
    _add_lexicon_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.command in ("voices", "lexicons") else logging.INFO  # people read their stderr
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if args.command == "voices":
        return _run_voices(args, settings)
    if args.command == "lexicons":
        return _run_lexicons(args, settings)
    try:
        result = COMMANDS[args.command](args, settings)
    except Exception as exc:  # the result line still comes last, so the runner can show why
        logging.getLogger("narration").exception("%s failed", args.command)
        emit_result(error_result(args.command, exc, retryable=_retryable(exc)))
        return 1
    emit_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
