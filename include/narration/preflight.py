"""Configuration checks a batch makes before it claims any manifest: the bucket exists and takes writes, the
backends are known, and the Google fallback is configured when the timing method needs it.

A mistake here is a :class:`ConfigurationError` naming the setting, where its value came from and the valid
values; the caller fails the run at once instead of retrying what no retry can fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from narration.align import ALIGNERS, FALLBACK_ALIGNER
from narration.errors import ConfigurationFault
from narration.layout import BatchLayout
from narration.plan import BatchOptions
from narration.storage import Storage, StorageRefused, StorageUnreachable
from narration.synth import SYNTHESIZERS

GOOGLE_SETTINGS = "NARRATION_GOOGLE_ENDPOINT, GOOGLE_APPLICATION_CREDENTIALS or the google_cloud_default connection"


@dataclass(frozen=True)
class Source:
    """A setting's name and where its value came from (environment, Variable, connection, Param, default)."""

    setting: str
    origin: str

    def __str__(self) -> str:
        return f"{self.setting} (from {self.origin})"


class ConfigurationError(ConfigurationFault, ValueError):
    def __init__(self, source: Source, problem: str, valid: str | None = None):
        self.source = source
        self.problem = problem
        self.valid = valid
        super().__init__(f"{source}: {problem}" + (f"; valid values: {valid}" if valid else ""))


def default_sources(environ: Mapping[str, str] | None = None) -> dict[str, Source]:
    """Where each checked setting comes from when only the environment is read (the worker's view)."""
    environ = os.environ if environ is None else environ

    def env(name: str) -> Source:
        return Source(name, "environment" if name in environ else "its default")

    return {"bucket": env("NARRATION_BUCKET"), "endpoint": env("NARRATION_S3_ENDPOINT_URL"),
            "credentials": Source("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY", "environment"),
            "synthesizer": env("NARRATION_SYNTHESIZER"), "aligner": env("NARRATION_ALIGNER"),
            "timing_method": Source("timing_method", "batch options")}


def primary_aligners() -> list[str]:
    return sorted(name for name in ALIGNERS if name != FALLBACK_ALIGNER)


def check_backends(options: BatchOptions, sources: Mapping[str, Source]) -> None:
    if options.synthesizer not in SYNTHESIZERS:
        raise ConfigurationError(sources["synthesizer"], f"unknown synthesizer {options.synthesizer!r}",
                                 ", ".join(sorted(SYNTHESIZERS)))
    primary = primary_aligners()
    if options.aligner not in primary:
        raise ConfigurationError(sources["aligner"], f"unknown primary aligner {options.aligner!r}", ", ".join(primary))


def check_google(options: BatchOptions, google_configured: bool, sources: Mapping[str, Source]) -> None:
    if options.timing_method == FALLBACK_ALIGNER and not google_configured:
        raise ConfigurationError(
            sources["timing_method"], f"'google' times every item with Google Speech-to-Text, which is not "
            f"configured (set {GOOGLE_SETTINGS})",
            f"auto, {', '.join(primary_aligners())} (or {FALLBACK_ALIGNER} once configured)")


def check_bucket(storage: Storage, batch_id: str, sources: Mapping[str, Source]) -> None:
    """The bucket answers, exists and takes a write (a small probe object, deleted again)."""
    where = f"S3 at {storage.endpoint}"
    try:
        exists = storage.head_bucket()
        if exists:
            probe = BatchLayout(batch_id).root + ".write-check"
            storage.put_bytes(probe, b"")
            storage.delete(probe)
    except StorageUnreachable as exc:
        raise ConfigurationError(
            sources["endpoint"], f"{where} did not answer within {storage.outage_retry_s:g} s: a wrong endpoint, "
            f"or S3 is down (then clear this run once it is back) [{exc}]",
            "the URL of an S3 endpoint this worker reaches") from exc
    except StorageRefused as exc:
        raise ConfigurationError(sources["credentials"], f"{where} refused access to bucket {storage.bucket!r}: "
                                 f"{exc}", "credentials allowed to read and write the bucket") from exc
    if not exists:
        raise ConfigurationError(sources["bucket"], f"bucket {storage.bucket!r} does not exist at {where}",
                                 _visible_buckets(storage))


def check_lexicons(storage: Storage, options: BatchOptions, sources: Mapping[str, Source]) -> None:
    """Every lexicon the batch names exists and reads clean (its file, line and entry named), before any manifest
    is claimed; the lexicons lines name are checked when planning reads the lines."""
    from narration.lexicons import LexiconError, LexiconLibrary

    library = LexiconLibrary(storage)
    for name in options.lexicons:
        try:
            library.load(name)
        except LexiconError as exc:
            raise ConfigurationError(sources.get("lexicons", Source("lexicons", "batch options")), str(exc)) from exc


def _visible_buckets(storage: Storage) -> str:
    try:
        names = [b["Name"] for b in storage.client.list_buckets().get("Buckets", [])]
    except Exception:  # noqa: BLE001 - listing is a courtesy; the credentials may not allow it
        return "the buckets these credentials can see (they may not list them)"
    return ", ".join(sorted(names)) or "none: no bucket is visible with these credentials"


def check_configuration(storage: Storage, options: BatchOptions, batch_id: str, *, google_configured: bool,
                        sources: Mapping[str, Source] | None = None) -> None:
    """Every check, cheapest first; raises the first :class:`ConfigurationError`."""
    sources = {**default_sources(), **(sources or {})}
    check_backends(options, sources)
    check_google(options, google_configured, sources)
    check_bucket(storage, batch_id, sources)
    check_lexicons(storage, options, sources)
