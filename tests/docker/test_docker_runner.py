"""The Docker runner end to end: real images built here, real containers, the real DAG against S3 on loopback.

Tests marked ``docker`` need an engine (``bash images/docker-engine.sh``); they build the debootstrap base and the
CPU image once (reused while the source hash label matches). GPU images build only with NARRATION_TEST_GPU_IMAGES=1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from narration.layout import BatchLayout
from tests.dag_runs import jsonl, load_dag, results, states, task_instances
from tests.reliability.runs import ITEM_FILES

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("NARRATION_TEST_BASE_IMAGE", "narration-base:bookworm")
CPU_IMAGE = "narration-worker-cpu:latest"
CRASH_IMAGE = "narration-worker-cpu:crash-on-c0001"
HASH_LABEL = "org.narration.source-hash"
# What the .dockerignore lets into the build context, and so what an image is built from.
CONTEXT_PATHS = ("pyproject.toml", "README.md", ".dockerignore", "include", "operators", "images")

ITEMS = [
    {"id": "d1", "text": "The ferry leaves at 7:15 every morning."},
    {"id": "d2", "text": "Tickets cost $3.50 at the gate."},
    {"id": "d3", "text": "Bring a coat, it gets windy on deck."},
]


def docker_engine():
    import docker
    import requests

    try:
        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        pytest.skip(f"no Docker engine answers ({type(exc).__name__}); start one with `bash images/docker-engine.sh`")


def source_hash(dockerfile: str, base_id: str, build_args: dict[str, str]) -> str:
    """Hash of everything the image is built from: the context files, its base image and build arguments."""
    digest = hashlib.sha256(f"{dockerfile}\n{base_id}\n{sorted(build_args.items())}\n".encode())
    for top in CONTEXT_PATHS:
        path = REPO / top
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def image_label(client, tag: str, label: str) -> str | None:
    import docker.errors

    try:
        return (client.images.get(tag).labels or {}).get(label)
    except docker.errors.ImageNotFound:
        return None


def trust_build_host_ca() -> None:
    """Builds on machines behind a TLS-inspecting proxy need its CA: hand pip the bundle this machine's pip uses."""
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    target = REPO / "images" / "extra-ca" / "build-host.pem"
    if bundle and Path(bundle).is_file() and (not target.exists() or target.read_bytes() != Path(bundle).read_bytes()):
        shutil.copyfile(bundle, target)


def ensure_base_image(client) -> str:
    """The debootstrap base (images/build-base.sh makes it once; it is a no-op when the tag exists)."""
    subprocess.run(["bash", str(REPO / "images" / "build-base.sh"), BASE_IMAGE], check=True, cwd=REPO)
    return client.images.get(BASE_IMAGE).id


def ensure_image(client, name: str, tag: str, log_dir: Path, **build_args: str) -> dict:
    """Build images/<name>/Dockerfile as ``tag`` unless an image with the same source hash is already there."""
    trust_build_host_ca()
    base_id = ensure_base_image(client)
    dockerfile = f"images/{name}/Dockerfile"
    args = {"BASE_IMAGE": BASE_IMAGE, **build_args}
    wanted = source_hash(dockerfile, base_id, args)
    if image_label(client, tag, HASH_LABEL) == wanted:
        return {"tag": tag, "built": False, "seconds": 0.0}
    command = ["docker", "build", "--network", "host", "-f", dockerfile, "-t", tag, "--label", f"{HASH_LABEL}={wanted}"]
    for key, value in args.items():
        command += ["--build-arg", f"{key}={value}"]
    log_path = log_dir / f"build-{name}.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        done = subprocess.run([*command, "."], check=False, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log_path.read_text()[-4000:]
        pytest.fail(f"docker build of {dockerfile} failed ({done.returncode}); last output:\n{tail}")
    return {"tag": tag, "built": True, "seconds": round(time.monotonic() - started, 1)}


@pytest.fixture(scope="session")
def engine():
    return docker_engine()


@pytest.fixture(scope="session")
def cpu_image(engine, tmp_path_factory) -> str:
    build = ensure_image(engine, "cpu", CPU_IMAGE, tmp_path_factory.mktemp("docker-builds"))
    print(f"cpu image: {build}")
    return CPU_IMAGE


@pytest.fixture(scope="session")
def crash_image(engine, cpu_image) -> str:
    """The real worker image, except that its command dies (exit 3, no result line) for chunk c0001."""
    dockerfile = f"""FROM {cpu_image}
ENTRYPOINT ["sh", "-c", "case \\"$*\\" in *c0001*) echo 'simulated worker crash' >&2; exit 3;; esac; \
exec narration \\"$@\\"", "narration"]
"""
    subprocess.run(["docker", "build", "-q", "-t", CRASH_IMAGE, "-"], input=dockerfile.encode(), check=True,
                   capture_output=True)
    return CRASH_IMAGE


@pytest.fixture()
def docker_runner(monkeypatch, cpu_image, tmp_path):
    """Environment that makes the DAG use the Docker runner with the CPU image for every step."""
    cache = tmp_path / "models"
    cache.mkdir()
    monkeypatch.setenv("NARRATION_RUNNER", "docker")
    monkeypatch.setenv("NARRATION_IMAGE", cpu_image)
    monkeypatch.setenv("NARRATION_DOCKER_NETWORK", "host")
    monkeypatch.setenv("NARRATION_MODEL_CACHE", str(cache))
    for name in ("NARRATION_GOOGLE_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS", "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    return cpu_image


def run_dag_without_retries(conf: dict):
    """The real DAG, with retries off so a failing task fails at once instead of waiting out its back-off."""
    dag = load_dag()
    for task in dag.tasks:
        task.retries = 0
    return dag.test(run_conf=conf)


def batch_ids(storage) -> set[str]:
    return {k.split("/")[1] for k in storage.list_keys("batches/")}


def item_output_layout(storage, batch_id: str) -> set[str]:
    """Every key under the batch's items/ with the batch id taken out: what a runner must produce."""
    prefix = BatchLayout(batch_id).root + "items/"
    return {k[len(prefix):] for k in storage.list_keys(prefix)}


def test_operator_resolves_settings_when_it_runs(s3_server, monkeypatch, tmp_path):
    """Image per step, GPUs, read-only model cache, network and secrets split: decided at execute time."""
    from docker.types import DeviceRequest, Mount

    from operators.docker_worker import DockerWorkerOperator

    chunk = {"chunk_id": "c0000", "key": "batches/b/chunks/c0000.json", "label": "c0000 a", "item_ids": ["a"]}
    operator = DockerWorkerOperator(task_id="align", step="align", chunk=chunk, extra_args=["--backend", "whisperx"])
    monkeypatch.setenv("NARRATION_IMAGE", "narration-worker-cpu:test")
    monkeypatch.setenv("NARRATION_IMAGE_ALIGN", "narration-worker-whisperx:test")
    monkeypatch.setenv("NARRATION_DOCKER_GPUS", "true")
    monkeypatch.setenv("NARRATION_MODEL_CACHE", str(tmp_path))
    monkeypatch.setenv("NARRATION_DOCKER_NETWORK", "narration_default")
    monkeypatch.setenv("NARRATION_ALIGNER", "whisperx")
    monkeypatch.setenv("NARRATION_MODEL_DIR", "/srv/host-models")
    monkeypatch.setenv("NARRATION_GOOGLE_API_KEY", "not-for-the-ui")
    operator._configure()
    assert operator.image == "narration-worker-whisperx:test"
    assert operator.command == ["align", "--chunk", "batches/b/chunks/c0000.json", "--backend", "whisperx"]
    assert operator.network_mode == "narration_default" and operator.mount_tmp_dir is False
    assert operator.auto_remove == "success"
    assert operator.device_requests == [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    assert operator.mounts == [Mount("/models", str(tmp_path), type="bind", read_only=True)]
    # Plain settings are visible; credentials and secret-looking settings only in private_environment.
    assert operator.environment["NARRATION_ALIGNER"] == "whisperx"
    assert "NARRATION_MODEL_DIR" not in operator.environment  # a host path: the image's /models applies
    assert not {k for k in operator.environment if k.startswith("AWS_") or "KEY" in k}
    assert operator._private_environment["AWS_SECRET_ACCESS_KEY"] == os.environ["AWS_SECRET_ACCESS_KEY"]
    assert operator._private_environment["NARRATION_GOOGLE_API_KEY"] == "not-for-the-ui"
    assert operator._private_environment["NARRATION_S3_ENDPOINT_URL"] == s3_server.endpoint_url

    monkeypatch.setenv("NARRATION_DOCKER_GPUS", "false")
    monkeypatch.setenv("NARRATION_MODEL_CACHE", "narration-models")
    render = DockerWorkerOperator(task_id="render", step="render", chunk=chunk, image="pinned:1", network_mode="host")
    render._configure()
    assert render.image == "pinned:1" and render.network_mode == "host" and render.device_requests is None
    assert render.mounts == [Mount("/models", "narration-models", type="volume", read_only=True)]


def operator_log_lines(capfd) -> list[str]:
    """What the task's operator logger wrote (Airflow 3's structlog task logger writes to the task's output)."""
    captured = capfd.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if "DockerWorkerOperator" in line]


@pytest.mark.docker
def test_cpu_image_runs_the_cli_as_non_root_with_no_secrets(engine, cpu_image):
    image = engine.images.get(cpu_image)
    config = image.attrs["Config"]
    assert config["Entrypoint"] == ["narration"] and config["User"] == "narration"
    assert not [e for e in config["Env"] if e.startswith(("AWS_", "NARRATION_S3", "AIRFLOW_"))], config["Env"]
    assert "NARRATION_MODEL_DIR=/models" in config["Env"]
    out = engine.containers.run(cpu_image, ["--help"], network_mode="none", remove=True).decode()
    assert "synthesize" in out and "align" in out and "render" in out
    who = engine.containers.run(cpu_image, ["-c", "id -u; ls -d /models"], entrypoint=["sh"], network_mode="none",
                                remove=True).decode().split()
    assert who == ["10001", "/models"]


@pytest.mark.docker
def test_a_log_line_after_the_result_line_does_not_hide_it(engine, cpu_image, storage, docker_runner):
    """stdout and stderr share the container's log stream: a late stderr line must not fail a finished chunk."""
    from operators.docker_worker import DockerWorkerOperator

    result = {"chunk_id": "c0000", "step": "synthesize", "backend": "espeak", "model_loads": 1,
              "items": [{"item_id": "d1", "status": "synthesized", "error": None}]}
    script = f"echo '{json.dumps(result)}'; sleep 0.5; echo 'INFO narration.pipeline: a late log line' >&2"
    chunk = {"chunk_id": "c0000", "key": "batches/b/chunks/c0000.json", "label": "c0000 d1", "item_ids": ["d1"]}
    operator = DockerWorkerOperator(task_id="synthesize", step="synthesize", chunk=chunk,
                                    entrypoint=["sh", "-c", script, "sh"])
    assert operator.execute(context={}) == result


@pytest.mark.docker
def test_missing_chunk_fails_the_task_with_the_workers_own_error(storage, docker_runner, capfd):
    from operators.docker_worker import DockerWorkerOperator
    from operators.worker import WorkerError

    chunk = {"chunk_id": "c0009", "key": "batches/nope/chunks/c0009.json", "label": "c0009 ghost", "item_ids": []}
    operator = DockerWorkerOperator(task_id="synthesize", step="synthesize", chunk=chunk)
    with pytest.raises(WorkerError) as failure:
        operator.execute(context={})
    message = str(failure.value)
    assert "narration synthesize failed" in message and "c0009.json" in message, message
    assert "StatusCode': 1" in message, message
    # The container's stderr (the worker's traceback) reached the operator's log.
    logged = "\n".join(operator_log_lines(capfd))
    assert "Traceback" in logged and "NoSuchKey" in logged and '{"error":"KeyError' in logged
    # auto_remove="success" removed the container after the failure too (DockerOperator removes in `finally`).
    import docker

    left = docker.from_env().containers.list(all=True, filters={"label": "org.narration.chunk=c0009"})
    assert left == []


@pytest.mark.docker
def test_dag_in_containers_matches_the_local_runner_layout(storage, narrator, airflow_db, docker_runner, capfd,
                                                           monkeypatch):
    storage.put_bytes("incoming/ferry.jsonl", jsonl(*ITEMS))
    dag_run = run_dag_without_retries({"chunk_size": 2})
    assert "success" in str(dag_run.state).lower()
    tis = task_instances(dag_run)
    assert states(tis["synthesize"]) == ["success", "success"]
    assert states(tis["align"]) == ["success", "success"]
    (docker_batch,) = batch_ids(storage)
    rows = results(storage, docker_batch)
    assert {item_id: row["status"] for item_id, row in rows.items()} == {"d1": "done", "d2": "done", "d3": "done"}
    assert {row["synthesizer"] for row in rows.values()} == {"espeak"}
    assert {row["timing_method"] for row in rows.values()} == {"pocketsphinx"}

    # The containers' own log lines (the worker's stderr) are in the task log, one container per chunk.
    logged = "\n".join(operator_log_lines(capfd))
    assert "Starting docker container from image narration-worker-cpu:latest" in logged
    for item in ITEMS:
        assert f"synthesized {item['id']}: synthesized" in logged, item["id"]
    assert "chunk c0000 via espeak in narration-worker-cpu:latest" in logged

    # The same manifest through the local runner writes exactly the same keys per item.
    monkeypatch.setenv("NARRATION_RUNNER", "local")
    storage.put_bytes("incoming/ferry.jsonl", jsonl(*ITEMS))
    local_run = run_dag_without_retries({"chunk_size": 2, "force_rerender": True})
    assert "success" in str(local_run.state).lower()
    (local_batch,) = batch_ids(storage) - {docker_batch}
    docker_keys = item_output_layout(storage, docker_batch)
    assert docker_keys == item_output_layout(storage, local_batch)
    assert docker_keys == {f"{item['id']}/{name}" for item in ITEMS for name in ITEM_FILES}


@pytest.mark.docker
def test_crashing_container_fails_only_its_chunk_and_the_report_accounts_for_it(storage, narrator, airflow_db,
                                                                                docker_runner, crash_image,
                                                                                monkeypatch, capfd):
    monkeypatch.setenv("NARRATION_IMAGE_SYNTHESIZE", crash_image)
    storage.put_bytes("incoming/ferry.jsonl", jsonl(*ITEMS))
    dag_run = run_dag_without_retries({"chunk_size": 2})
    tis = task_instances(dag_run)
    # Chunk c0000 (d1, d2) synthesised; chunk c0001 (d3) crashed: only its task failed.
    assert states(tis["synthesize"]) == ["success", "failed"]
    assert states(tis["align"]) == ["success", "success"]
    assert states(tis["render_subtitles"]) == ["success", "success"]
    assert states(tis["write_report"]) == ["success"] and states(tis["finish_manifests"]) == ["success"]
    assert "failed" in str(dag_run.state).lower()  # the batch finished, and the run shows that part of it failed
    assert "simulated worker crash" in "\n".join(operator_log_lines(capfd))

    (batch_id,) = batch_ids(storage)
    layout = BatchLayout(batch_id)
    report = {r["item_id"]: r for r in csv.DictReader(io.StringIO(storage.get_text(layout.report_csv)))}
    assert report["d1"]["status"] == "done" and report["d2"]["status"] == "done"
    assert report["d3"]["status"] == "synthesis_failed", report["d3"]
    assert "no synthesis record" in report["d3"]["error"] and not report["d3"]["audio_key"]
    assert storage.get_json(layout.summary)["by_status"].get("done") == 2


GPU_IMAGES = [("f5tts", "synth", "f5tts", "f5_tts.infer.utils_infer"), ("whisperx", "align", "whisperx", "whisperx")]


@pytest.mark.docker
@pytest.mark.skipif(os.environ.get("NARRATION_TEST_GPU_IMAGES") != "1",
                    reason="GPU images are ~8 GB each; set NARRATION_TEST_GPU_IMAGES=1 to build them")
@pytest.mark.parametrize(("name", "kind", "backend", "module"), GPU_IMAGES)
def test_gpu_image_builds_from_the_local_base(engine, tmp_path_factory, name, kind, backend, module):
    tag = f"narration-worker-{name}:latest"
    build = ensure_image(engine, name, tag, tmp_path_factory.mktemp(f"docker-build-{name}"))
    print(f"{name} image: {build}, {engine.images.get(tag).attrs['Size'] / 1e9:.2f} GB")
    config = engine.images.get(tag).attrs["Config"]
    assert config["Entrypoint"] == ["narration"] and config["User"] == "narration"
    assert "HF_HUB_OFFLINE=1" in config["Env"] and "NARRATION_MODEL_DIR=/models" in config["Env"]
    registry = "get_synthesizer_class" if kind == "synth" else "get_aligner_class"
    probe = (f"import torch, {module}; from narration.{kind} import {registry} as get; "
             f"print(torch.__version__, get('{backend}').__name__)")
    out = engine.containers.run(tag, ["-c", probe], entrypoint=["python"], network_mode="none",
                                remove=True).decode().split()
    assert out[0].startswith("2.8.0") and out[1], out
