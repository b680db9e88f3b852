"""Airflow connections and Variables -> core-library settings and worker environment.

:func:`configured` is the one lookup of an Airflow-side setting: environment first, then Variable.

The worker environment carries S3 credentials; it goes to subprocesses and to DockerOperator's
``private_environment``, never into XCom, logs or rendered fields.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from narration.errors import ConfigurationFault
from narration.settings import Settings

if TYPE_CHECKING:
    from narration.storage import Storage

AWS_CONN_ID = os.environ.get("NARRATION_AWS_CONN_ID", "aws_default")


class SettingError(ConfigurationFault, ValueError):
    """An Airflow-side setting has a value it cannot have; the message names the setting."""


def setting_names(name: str) -> str:
    """How people set ``name``: its environment variable and its Airflow Variable."""
    return f"NARRATION_{name.upper()} or Variable narration_{name.lower()}"


def configured(name: str, default: str | None = None, *, choices: Sequence[str] | None = None) -> str | None:
    """Setting ``name``: ``NARRATION_<NAME>`` from the environment, else the ``narration_<name>`` Airflow Variable,
    else ``default``; an empty value counts as unset. Read it only when a task runs, never at DAG parse time.
    With ``choices``, any other value is a :class:`SettingError` naming the setting."""
    value = os.environ.get(f"NARRATION_{name.upper()}")
    if not value:
        try:
            from airflow.sdk import Variable

            value = Variable.get(f"narration_{name.lower()}", default=None)
        except Exception:  # noqa: BLE001 - outside a task (no API server to ask): environment and default only
            value = None
    value = value or default
    if choices is not None and value not in choices:
        raise SettingError(f"{setting_names(name)} is {value!r}; valid values: {', '.join(choices)}")
    return value


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
