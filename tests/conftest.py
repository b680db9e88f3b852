"""Shared fixtures: a real S3 server on loopback (moto server mode), a real Airflow metadata DB on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="narration-airflow-")

# Airflow reads its configuration at import time: point it at a private home before any test imports it.
os.environ.setdefault("AIRFLOW_HOME", _AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("NARRATION_RUNNER", "local")
# Language ID costs ~2 s an item on CI's 2 cores: off by default here, on in the tests of the checks themselves.
os.environ.setdefault("NARRATION_QUALITY_LANGUAGE_ID", "false")
os.environ.setdefault("NARRATION_QUALITY_VOICE_SIMILARITY", "false")


@pytest.fixture(scope="session")
def s3_server():
    from narration.dev.local_s3 import LocalS3Server

    server = LocalS3Server().start()
    saved = {k: os.environ.get(k) for k in server.env()}
    server.apply_env()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def bucket(s3_server, monkeypatch) -> str:
    """A fresh bucket per test; NARRATION_BUCKET points at it for code that reads settings."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("NARRATION_BUCKET", name)
    from narration.settings import Settings
    from narration.storage import Storage

    Storage.from_settings(Settings()).ensure_bucket()
    return name


@pytest.fixture()
def storage(bucket):
    from narration.settings import Settings
    from narration.storage import Storage

    return Storage.from_settings(Settings())


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata DB with the worker pool, made through Airflow's own command line and the
    documented setup step."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "operators.pools"], check=True, capture_output=True)
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture(scope="session")
def narrator_wav() -> bytes:
    """A real 3-5 s reference recording made with espeak-ng."""
    from narration.audio import to_wav_bytes
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer

    text = "This is the narrator's reference voice for the tests."
    synth = EspeakSynthesizer(Settings())
    synth.load()
    out = synth.synthesize(normalize_script(text), Voice("narrator", "en", text))
    return to_wav_bytes(out.audio, out.sample_rate)


@pytest.fixture()
def narrator(storage, narrator_wav):
    from narration.voices import upload_voice

    return upload_voice(storage, "narrator", narrator_wav, "This is the narrator's reference voice for the tests.")
