"""The output-format registry: every subtitle and word-timing file an item can ship with, declared once.

An identifier maps to its declaration (file name, content type, writer module), in pysubs2's style; each writer
is its own small module (``srt.py``, ``vtt.py``...) with a ``write(document)`` function, imported only when a file
is written, so the DAG file, the CLI and the layout read this registry without pysubs2 or pandas. How to add a
format: see :mod:`narration.subtitles.formats.base`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from narration.errors import ConfigurationFault


@dataclass(frozen=True)
class OutputFormat:
    """One output format: its identifier, the file it is written to under the item's prefix, the content type S3
    serves it with, and the module (in this package) whose ``write(document)`` makes its text."""

    name: str
    file_name: str
    content_type: str
    writer: str

    @property
    def suffix(self) -> str:
        return "." + self.file_name.rpartition(".")[2]

    def write(self, document) -> str:
        """The format's text of ``document`` (a :class:`~narration.subtitles.formats.base.SubtitleDocument`)."""
        return import_module(f"{__name__}.{self.writer}").write(document)


FORMATS: dict[str, OutputFormat] = {fmt.name: fmt for fmt in (
    OutputFormat("srt", "subtitles.srt", "application/x-subrip; charset=utf-8", "srt"),
    OutputFormat("vtt", "subtitles.vtt", "text/vtt; charset=utf-8", "vtt"),
    OutputFormat("ass", "subtitles.ass", "text/x-ssa; charset=utf-8", "ass"),
    OutputFormat("ttml", "subtitles.ttml", "application/ttml+xml; charset=utf-8", "ttml"),
    OutputFormat("json", "words.json", "application/json", "words_json"),
    OutputFormat("csv", "words.csv", "text/csv; charset=utf-8", "words_csv"),
    OutputFormat("chapters", "chapters.vtt", "text/vtt; charset=utf-8", "chapters_vtt"),
)}
SUBTITLE_FORMATS = tuple(FORMATS)  # every format a batch writes by default, in the report's column order


class UnknownFormatError(ConfigurationFault, ValueError):
    def __init__(self, name: str):
        super().__init__(f"unknown output format {name!r}; valid formats: {', '.join(FORMATS)}")


def get_format(name: str) -> OutputFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownFormatError(name) from None


def check_formats(names: list[str]) -> list[str]:
    """``names`` when every one is a registered format, else :class:`UnknownFormatError` for the first that is not."""
    for name in names:
        get_format(name)
    return names


__all__ = ["FORMATS", "SUBTITLE_FORMATS", "OutputFormat", "UnknownFormatError", "check_formats", "get_format"]
