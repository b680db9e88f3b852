"""Airflow connections and Variables -> core-library settings and worker environment.

The worker environment carries S3 credentials; it goes to subprocesses and to DockerOperator's
``private_environment``, never into XCom, logs or rendered fields.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from narration.settings import Settings

if TYPE_CHECKING:
    from narration.storage import Storage

AWS_CONN_ID = os.environ.get("NARRATION_AWS_CONN_ID", "aws_default")


def _s3_hook():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID)


def s3_endpoint_url() -> str | None:
    return _s3_hook().conn_config.get_service_endpoint_url("s3")


def core_settings() -> Settings:
    """Settings as the Airflow side sees them: NARRATION_* environment plus the AWS connection's endpoint."""
    settings = Settings()
    endpoint = s3_endpoint_url()
    if endpoint and not settings.s3_endpoint_url:
        settings = settings.model_copy(update={"s3_endpoint_url": endpoint})
    return settings


def storage(settings: Settings | None = None) -> Storage:
    """Storage on the bucket through the Airflow AWS connection (S3Hook's boto3 session and endpoint); ``settings``
    (default: :func:`core_settings`) may shorten the retries, as the configuration checks do."""
    from narration.storage import Storage

    settings = settings or core_settings()
    hook = _s3_hook()
    session = hook.get_session()
    return Storage(settings.bucket, settings=settings, session=session)


def worker_environment() -> dict[str, str]:
    """Environment a worker process or container needs to reach S3 as this connection does."""
    hook = _s3_hook()
    creds = hook.get_credentials()
    settings = core_settings()
    env = {
        "NARRATION_BUCKET": settings.bucket,
        "AWS_DEFAULT_REGION": hook.conn_config.region_name or settings.s3_region,
    }
    if settings.s3_endpoint_url:
        env["NARRATION_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    if creds.access_key:
        env["AWS_ACCESS_KEY_ID"] = creds.access_key
        env["AWS_SECRET_ACCESS_KEY"] = creds.secret_key
    if creds.token:
        env["AWS_SESSION_TOKEN"] = creds.token
    return env
