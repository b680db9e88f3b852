"""The embedded default's S3: moto's server mode on 127.0.0.1, a real S3 HTTP endpoint in a child process.

Used by ``make demo`` and the tests; production points ``NARRATION_S3_ENDPOINT_URL`` (or the Airflow AWS
connection) at MinIO or AWS instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

LOCAL_ACCESS_KEY = "narration-local"
LOCAL_SECRET_KEY = "narration-local-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalS3Server:
    """Start/stop a moto S3 server process; ``env()`` gives what boto3, workers and Airflow need to reach it."""

    def __init__(self, port: int | None = None, log_path: str | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalS3Server:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto S3 server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto S3 server did not answer on {self.endpoint_url} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def env(self, bucket: str = "narration") -> dict[str, str]:
        conn = {"conn_type": "aws", "login": LOCAL_ACCESS_KEY, "password": LOCAL_SECRET_KEY,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"}}
        return {
            "NARRATION_S3_ENDPOINT_URL": self.endpoint_url,
            "NARRATION_BUCKET": bucket,
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn),
        }

    def apply_env(self, bucket: str = "narration") -> None:
        os.environ.update(self.env(bucket))

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
