"""The fixed S3 layout of manifests, voices and batch outputs; the only place keys are built.

Keys are built only from sanitised ids (``ID_PATTERN``), never from raw manifest text.
"""

from __future__ import annotations

import posixpath
import re

# SUBTITLE_FORMATS is re-exported: the subtitle files a batch lays out by default.
from narration.subtitles.formats import SUBTITLE_FORMATS, get_format  # noqa: F401

INCOMING = "incoming/"
PROCESSING = "processing/"
PROCESSED = "processed/"
INCOMPLETE = "incomplete/"
FAILED = "failed/"
VOICES = "voices/"
LEXICONS = "lexicons/"
BATCHES = "batches/"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEGMENT_RECORD = re.compile(r"/segments/(\d+)\.json$")

# An id is used verbatim as an S3 key component: it must survive layout.safe_component unchanged (so two ids never
# share a prefix), hence it starts and ends with a letter, digit or '_'; \Z, unlike $, refuses a trailing newline.
ID_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?\Z")
ID_RULE = ("id must be 1-96 characters of letters, digits, '.', '_' or '-', start with a letter or digit, "
           "end with a letter, digit or '_', and contain no '..'")



def safe_component(value: str, max_len: int = 96) -> str:
    """A key component that cannot escape its prefix: no '/', no '..', no control characters."""
    cleaned = _SAFE.sub("-", value).strip(".-")[:max_len]
    return cleaned or "unnamed"


def voice_prefix(voice_id: str) -> str:
    return f"{VOICES}{safe_component(voice_id)}/"


def voice_reference_key(voice_id: str) -> str:
    return voice_prefix(voice_id) + "reference.wav"


def voice_meta_key(voice_id: str) -> str:
    return voice_prefix(voice_id) + "voice.json"


def lexicon_key(name: str, suffix: str) -> str:
    """``lexicons/<name>.pls`` (W3C PLS) or ``lexicons/<name>.csv`` (the simple form)."""
    return f"{LEXICONS}{safe_component(name)}{suffix}"


class BatchLayout:
    """Where one batch's plan, chunks, per-item outputs and reports live."""

    def __init__(self, batch_id: str):
        self.batch_id = safe_component(batch_id)
        self.root = f"{BATCHES}{self.batch_id}/"

    @property
    def plan(self) -> str:
        return self.root + "plan.json"

    @property
    def quarantine(self) -> str:
        return self.root + "quarantine.jsonl"

    @property
    def report_csv(self) -> str:
        return self.root + "report.csv"

    @property
    def report_html(self) -> str:
        return self.root + "report.html"

    @property
    def summary(self) -> str:
        return self.root + "summary.json"

    def chunk(self, chunk_id: str) -> str:
        return f"{self.root}chunks/{safe_component(chunk_id)}.json"

    def item_prefix(self, item_id: str) -> str:
        return f"{self.root}items/{safe_component(item_id)}/"

    def audio(self, item_id: str) -> str:
        return self.item_prefix(item_id) + "audio.wav"

    def segment_audio(self, item_id: str, index: int) -> str:
        """A long item's synthesis segment (its audio before joining into the master)."""
        return self.item_prefix(item_id) + f"segments/{index:05d}.wav"

    def segment_record(self, item_id: str, index: int) -> str:
        """The segment's record: written after its audio, it says the segment is done and from what inputs."""
        return self.item_prefix(item_id) + f"segments/{index:05d}.json"

    @staticmethod
    def segment_record_index(key: str) -> int | None:
        """The segment index of a key that is a segment record (:meth:`segment_record`), else None."""
        match = _SEGMENT_RECORD.search(key)
        return int(match.group(1)) if match else None

    def segments_prefix(self, item_id: str) -> str:
        return self.item_prefix(item_id) + "segments/"

    def synthesis(self, item_id: str) -> str:
        return self.item_prefix(item_id) + "synthesis.json"

    def timing(self, item_id: str, backend: str) -> str:
        return self.item_prefix(item_id) + f"timing-{safe_component(backend)}.json"

    def subtitle(self, item_id: str, fmt: str) -> str:
        return self.item_prefix(item_id) + get_format(fmt).file_name

    def delivery_audio(self, item_id: str, encoding: str) -> str:
        """The delivered audio: ``narration.wav`` (the loudness-normalised master) and its encodings."""
        from narration.encodings import ENCODINGS

        return self.item_prefix(item_id) + f"narration.{ENCODINGS[encoding].extension}"

    def delivery(self, item_id: str) -> str:
        """Loudness before and after normalisation, and the encoders of the delivered audio."""
        return self.item_prefix(item_id) + "delivery.json"

    def result(self, item_id: str) -> str:
        """Written last for an item: its presence means every output of the item is in place."""
        return self.item_prefix(item_id) + "result.json"


def manifest_name(key: str, incoming_prefix: str = INCOMING) -> str:
    """How messages and default ids name a manifest: its path below incoming/ or processing/<batch>/ (folders
    included, ``teamA/news.txt``), so two same-named files in different folders are told apart."""
    if key.startswith(PROCESSING):
        _, _, relative = key[len(PROCESSING):].partition("/")
        return relative or posixpath.basename(key)
    if key.startswith(incoming_prefix):
        return key[len(incoming_prefix):].lstrip("/") or posixpath.basename(key)
    return key
