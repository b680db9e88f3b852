"""S3 storage for manifests, voices and batch outputs, through boto3 with a configurable endpoint.

Every write is a single PutObject (or a completed multipart upload), which S3 makes visible all at once, so no
reader ever sees a half-written object. Per-item records are written after the files they describe, so a record's
presence means the item's outputs are complete.

An unreachable S3 (connection refused or dropped, timeouts, 5xx) is retried: botocore's own quick retries first,
then exponential backoff for up to ``s3_outage_retry_s`` seconds, then a :class:`StorageUnreachable` that says so.
A request S3 answered with a refusal (no such bucket, access denied, bad credentials) is not retried: it raises
:class:`StorageRefused` at once, since asking again cannot change the answer.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
import boto3.exceptions
import botocore.exceptions
from botocore.config import Config
from botocore.exceptions import ClientError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_before_delay, wait_exponential

from narration.errors import ConfigurationFault, InfrastructureFault
from narration.settings import Settings
from narration.subtitles.formats import FORMATS

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

DEFAULT_OUTAGE_RETRY_S = 30.0
RETRY_FIRST_WAIT_S = 0.5
RETRY_MAX_WAIT_S = 8.0
TRANSIENT_ERROR_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "503", "500", "502",
                         "504"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}

CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".opus": "audio/ogg; codecs=opus",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".csv": "text/csv; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".pls": "application/pls+xml",  # W3C pronunciation lexicons (RFC 4267)
    **{fmt.suffix: fmt.content_type for fmt in FORMATS.values()},  # the subtitle and word files
}


class StorageError(InfrastructureFault, RuntimeError):
    """S3 could not be reached or refused a request after the configured retries."""


class StorageUnreachable(StorageError):
    """S3 did not answer (no connection, dropped connections, timeouts, 5xx) for the whole outage window: a later
    attempt may succeed."""


class StorageRefused(StorageError, ConfigurationFault):
    """S3 answered and refused the request (the bucket does not exist, access is denied, the credentials are
    wrong): retrying cannot help, the configuration must change. ``code`` is S3's error code."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


REFUSAL_MEANINGS = {"NoSuchBucket": "the bucket does not exist", "AccessDenied": "access is denied (forbidden)",
                    "403": "access is denied (forbidden)", "InvalidAccessKeyId": "the access key is not known",
                    "SignatureDoesNotMatch": "the secret key does not match the access key",
                    "AllAccessDisabled": "access is disabled", "InvalidBucketName": "the bucket name is invalid"}


def _error_chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__


def is_transient(exc: BaseException) -> bool:
    """True for failures a later attempt can cure: no connection, a dropped connection, a timeout, a 5xx."""
    for err in _error_chain(exc):
        if isinstance(err, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError,
                            ConnectionError, TimeoutError)):
            return True
        if isinstance(err, ClientError):
            error = err.response.get("Error", {})
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return error.get("Code") in TRANSIENT_ERROR_CODES or status >= 500
    return False


def _is_missing(exc: BaseException) -> bool:
    """A "no such object" (or an empty object's range) answer: the caller's to interpret, not a refusal."""
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in MISSING_CODES | {
        "InvalidRange"}


def _content_type(key: str) -> str:
    for suffix, content_type in CONTENT_TYPES.items():
        if key.endswith(suffix):
            return content_type
    return "application/octet-stream"


def make_client(settings: Settings, session=None, endpoint_url: str | None = None):
    """A boto3 S3 client with bounded, exponentially backed-off retries (botocore's adaptive mode)."""
    config = Config(
        retries={"max_attempts": settings.s3_max_attempts, "mode": "adaptive"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
        signature_version="s3v4",  # presigned URLs carry X-Amz-Expires (SigV2 links are deprecated)
        max_pool_connections=max(10, settings.s3_concurrency),
    )
    return (session or boto3).client(
        "s3", endpoint_url=endpoint_url or settings.s3_endpoint_url, region_name=settings.s3_region, config=config
    )


class Storage:
    """A bucket seen as a key-value store of bytes and JSON documents."""

    def __init__(self, bucket: str, client=None, settings: Settings | None = None, *,
                 outage_retry_s: float | None = None, session=None):
        settings = settings or Settings()
        self.bucket = bucket
        self.client = client if client is not None else make_client(settings, session)
        # SigV4 signs the host, so links for another address need a client of their own (same credentials).
        public = settings.s3_public_endpoint_url
        self.presign_client = (make_client(settings, session, endpoint_url=public)
                               if public and public != settings.s3_endpoint_url else self.client)
        # How long an unreachable S3 is waited for before a step fails (then Airflow's task retries take over).
        self.outage_retry_s = (outage_retry_s if outage_retry_s is not None
                               else float(getattr(settings, "s3_outage_retry_s", DEFAULT_OUTAGE_RETRY_S)))
        self.concurrency = settings.s3_concurrency

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> Storage:
        return cls(settings.bucket, settings=settings, **kwargs)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(item) for item in items]`` with up to ``concurrency`` items in flight: per-item work here is S3
        round trips, which wait on the network, not the CPU (boto3 clients are thread-safe). Results keep the
        input order. The first failure (in input order) cancels the items not yet started and is raised once
        those in flight have finished, so an unreachable S3 fails the task in one outage window, not one per item."""
        items = list(items)
        if self.concurrency <= 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)), thread_name_prefix="s3") as pool:
            futures = [pool.submit(fn, item) for item in items]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def imap(self, fn: Callable[[T], R], items: Iterable[T], ahead: int | None = None) -> Iterator[R]:
        """Like :meth:`map`, but yields results in input order as they come, with at most ``ahead`` (default
        twice ``concurrency``) items started and not yet consumed: memory stays bounded whatever the number of
        items. A failure is raised when its item's turn comes; items not yet started are then not started."""
        ahead = ahead or 2 * self.concurrency
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="s3") as pool:
            pending: collections.deque[Future] = collections.deque()
            try:
                for item in items:
                    if len(pending) >= ahead:
                        yield pending.popleft().result()
                    pending.append(pool.submit(fn, item))
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def endpoint(self) -> str:
        return getattr(self.client.meta, "endpoint_url", None) or "S3"

    def _call(self, action: str, key: str, fn: Callable[[], T]) -> T:
        """Run one S3 request, riding out transient failures with exponential backoff for ``outage_retry_s``."""
        started = time.monotonic()

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("S3 at %s unavailable (%s) while trying to %s %s; attempt %d, retrying in %.1f s",
                        self.endpoint, type(exc).__name__, action, self.uri(key), state.attempt_number,
                        state.next_action.sleep if state.next_action else 0.0)

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=RETRY_FIRST_WAIT_S, max=RETRY_MAX_WAIT_S),
            stop=stop_before_delay(self.outage_retry_s),  # no wait that would end past the window
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            return retrying(fn)
        except (ClientError, botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error, OSError) as exc:
            if _is_missing(exc):
                raise
            attempts = retrying.statistics.get("attempt_number", 1)
            if is_transient(exc):
                raise StorageUnreachable(
                    f"S3 at {self.endpoint} unreachable: could not {action} {self.uri(key)} in {attempts} "
                    f"attempt(s) over {time.monotonic() - started:.1f} s ({type(exc).__name__}: {exc})") from exc
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
            meaning = REFUSAL_MEANINGS.get(str(code), "S3 refused the request")
            raise StorageRefused(f"S3 at {self.endpoint} refused to {action} {self.uri(key)}: {meaning} "
                                 f"({type(exc).__name__}: {exc})", code=code) from exc

    # -- writes ------------------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None,
                  metadata: dict[str, str] | None = None) -> str:
        extra = {"Metadata": metadata} if metadata else {}
        self._call("write", key, lambda: self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type or _content_type(key), **extra))
        return key

    def put_text(self, key: str, text: str, metadata: dict[str, str] | None = None) -> str:
        return self.put_bytes(key, text.encode("utf-8"), metadata=metadata)

    def put_json(self, key: str, document: Any, metadata: dict[str, str] | None = None) -> str:
        if hasattr(document, "model_dump_json"):
            body = document.model_dump_json(indent=1)
        else:
            body = json.dumps(document, indent=1, ensure_ascii=False, default=str)
        return self.put_text(key, body, metadata=metadata)

    def upload_file(self, key: str, path: str) -> str:
        # upload_file switches to multipart for big files; the object appears only when the upload completes.
        self._call("upload", key, lambda: self.client.upload_file(
            path, self.bucket, key, ExtraArgs={"ContentType": _content_type(key)}))
        return key

    def copy(self, source_key: str, dest_key: str) -> None:
        """Server-side copy (bytes unchanged); KeyError when the source does not exist."""
        try:
            self._call("copy", source_key, lambda: self.client.copy_object(
                Bucket=self.bucket, Key=dest_key, CopySource={"Bucket": self.bucket, "Key": source_key}))
        except ClientError as exc:
            raise KeyError(self.uri(source_key)) from exc

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist (S3 conditional write); False when it already existed."""
        def put():
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*", ContentType=_content_type(key)
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "ConditionalRequestConflict"}:
                    return False
                raise
            return True

        return self._call("write", key, put)

    # -- reads -------------------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._call("read", key, lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            raise KeyError(self.uri(key)) from exc

    def get_prefix(self, key: str, length: int) -> tuple[bytes, int]:
        """The object's first ``length`` bytes (one ranged GET) and its whole size; KeyError when it is missing."""
        def read() -> tuple[bytes, int]:
            response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{length - 1}")
            data = response["Body"].read()
            total = response.get("ContentRange", "").rpartition("/")[2]
            return data, int(total) if total.isdigit() else len(data)

        try:
            return self._call("read", key, read)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # an empty object
                return b"", 0
            raise KeyError(self.uri(key)) from exc

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode("utf-8")

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def get_json_or_none(self, key: str) -> Any | None:
        try:
            return self.get_json(key)
        except KeyError:
            return None

    def head(self, key: str) -> dict | None:
        """The object's HEAD response (ETag, LastModified, Metadata...), or None when it does not exist."""
        try:
            return self._call("check", key, lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError:
            return None

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def etag(self, key: str) -> str | None:
        head = self.head(key)
        return head["ETag"].strip('"') if head else None

    def metadata(self, key: str) -> dict[str, str] | None:
        """The object's user metadata (x-amz-meta-*), or None when it does not exist."""
        head = self.head(key)
        return dict(head.get("Metadata") or {}) if head else None

    def list_keys(self, prefix: str) -> Iterator[str]:
        def listing() -> list[str]:
            paginator = self.client.get_paginator("list_objects_v2")
            return [obj["Key"] for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                    for obj in page.get("Contents", [])]

        return iter(self._call("list", prefix, listing))

    def list_sizes(self, prefix: str) -> dict[str, int]:
        """Key -> size in bytes of every object under ``prefix`` (one listing request per thousand keys)."""
        def listing() -> dict[str, int]:
            paginator = self.client.get_paginator("list_objects_v2")
            return {obj["Key"]: obj["Size"] for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                    for obj in page.get("Contents", [])}

        return self._call("list", prefix, listing)

    def download_file(self, key: str, path: str) -> str:
        # s3transfer writes to a temporary name and renames it on completion: no partial file at ``path``.
        try:
            self._call("download", key, lambda: self.client.download_file(self.bucket, key, path))
        except ClientError as exc:
            raise KeyError(self.uri(key)) from exc
        return path

    def presign(self, key: str, expires_s: int) -> str:
        """A GET link that needs no credentials, for the public endpoint when one is configured."""
        return self.presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(expires_s)
        )

    def ensure_bucket(self) -> None:
        if self.head_bucket():
            return
        self._call("create bucket", "", lambda: self.client.create_bucket(Bucket=self.bucket))

    def head_bucket(self) -> bool:
        try:
            self._call("check bucket", "", lambda: self.client.head_bucket(Bucket=self.bucket))
        except ClientError:
            return False
        return True


class WriteBehind:
    """A worker step's per-item S3 writes on one background thread, in submission order, while the model works on
    the next item. Each submitted write is one item's outputs, record last, so order within an item is kept.

    The first failed write stops every later one (nothing is written after a failure) and is raised in the
    submitting thread: at the next ``submit``, at ``flush`` or on leaving the ``with`` block. At most ``depth``
    writes wait, so a slow S3 slows the model down instead of filling memory with audio.
    """

    def __init__(self, depth: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-write")
        self._pending: collections.deque[Future] = collections.deque()
        self._depth = depth
        self._failed = threading.Event()

    def _guarded(self, write: Callable[[], object]) -> None:
        if self._failed.is_set():
            return  # an earlier item's write failed: write nothing after it
        try:
            write()
        except BaseException:
            self._failed.set()
            raise

    def submit(self, write: Callable[[], object]) -> None:
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._depth):
            self._pending.popleft().result()  # raises the first failure here, in the worker's thread
        self._pending.append(self._pool.submit(self._guarded, write))

    def flush(self) -> None:
        """Wait until every submitted write is in S3; raises the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.flush()
            else:  # already failing: let queued writes finish (each is atomic) but keep the original error
                for future in self._pending:
                    future.exception()
        finally:
            self._pool.shutdown(wait=True)


class Prefetch:
    """Reads the next few items' inputs in the background while the model works on the current one.

    ``get(n)`` returns what ``read(keys[n])`` returned, or raises what it raised, so a failed read is the item's
    own failure exactly as a direct read would have been.
    """

    def __init__(self, read: Callable[[str], T], keys: list[str], ahead: int = 2):
        self._read = read
        self._keys = keys
        self._ahead = ahead
        self._futures: dict[int, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="s3-read")

    def get(self, n: int) -> T:
        for k in range(n, min(n + self._ahead + 1, len(self._keys))):
            if k not in self._futures:
                self._futures[k] = self._pool.submit(self._read, self._keys[k])
        for done in [k for k in self._futures if k < n]:  # skipped items: drop what was read for them
            self._futures.pop(done).cancel()
        return self._futures.pop(n).result()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        for future in self._futures.values():
            future.cancel()
        self._pool.shutdown(wait=True)
