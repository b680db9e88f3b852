"""S3 storage for manifests, voices and batch outputs, through boto3 with a configurable endpoint.

Every write is a single PutObject (or a completed multipart upload), which S3 makes visible all at once, so no
reader ever sees a half-written object. Per-item records are written after the files they describe, so a record's
presence means the item's outputs are complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from narration.settings import Settings

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".csv": "text/csv; charset=utf-8",
    ".srt": "application/x-subrip; charset=utf-8",
    ".vtt": "text/vtt; charset=utf-8",
    ".ass": "text/x-ssa; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


class StorageError(RuntimeError):
    """S3 could not be reached or refused a request after the configured retries."""


def _content_type(key: str) -> str:
    for suffix, content_type in CONTENT_TYPES.items():
        if key.endswith(suffix):
            return content_type
    return "application/octet-stream"


def make_client(settings: Settings, session=None):
    """A boto3 S3 client with bounded, exponentially backed-off retries (botocore's adaptive mode)."""
    config = Config(
        retries={"max_attempts": settings.s3_max_attempts, "mode": "adaptive"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"},
    )
    return (session or boto3).client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, config=config
    )


class Storage:
    """A bucket seen as a key-value store of bytes and JSON documents."""

    def __init__(self, bucket: str, client=None, settings: Settings | None = None):
        self.bucket = bucket
        self.client = client if client is not None else make_client(settings or Settings())

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        return cls(settings.bucket, make_client(settings))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- writes ------------------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type or _content_type(key)
            )
        except ClientError as exc:
            raise StorageError(f"cannot write {self.uri(key)}: {exc}") from exc
        return key

    def put_text(self, key: str, text: str) -> str:
        return self.put_bytes(key, text.encode("utf-8"))

    def put_json(self, key: str, document: Any) -> str:
        if hasattr(document, "model_dump_json"):
            body = document.model_dump_json(indent=1)
        else:
            body = json.dumps(document, indent=1, ensure_ascii=False, default=str)
        return self.put_text(key, body)

    def upload_file(self, key: str, path: str) -> str:
        # upload_file switches to multipart for big files; the object appears only when the upload completes.
        self.client.upload_file(path, self.bucket, key, ExtraArgs={"ContentType": _content_type(key)})
        return key

    def copy(self, source_key: str, dest_key: str) -> None:
        self.client.copy_object(
            Bucket=self.bucket, Key=dest_key, CopySource={"Bucket": self.bucket, "Key": source_key}
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist (S3 conditional write); False when it already existed."""
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*", ContentType=_content_type(key)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "ConditionalRequestConflict"}:
                return False
            raise StorageError(f"cannot write {self.uri(key)}: {exc}") from exc
        return True

    # -- reads -------------------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise KeyError(self.uri(key)) from exc
            raise StorageError(f"cannot read {self.uri(key)}: {exc}") from exc

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode("utf-8")

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def get_json_or_none(self, key: str) -> Any | None:
        try:
            return self.get_json(key)
        except KeyError:
            return None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise StorageError(f"cannot check {self.uri(key)}: {exc}") from exc
        return True

    def etag(self, key: str) -> str | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(f"cannot check {self.uri(key)}: {exc}") from exc

    def list_keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def download_file(self, key: str, path: str) -> str:
        self.client.download_file(self.bucket, key, path)
        return path

    def presign(self, key: str, expires_s: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(expires_s)
        )

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)
