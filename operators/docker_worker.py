"""The Docker runner: one ``narration <step> --chunk KEY`` container per chunk, through DockerOperator.

WorkerOperator delegates to it when the runner is ``docker``; same keywords and result (the parsed JSON result line).
Image, GPUs, model cache, network and daemon come from ``NARRATION_*`` environment or ``narration_*`` Airflow
Variables when the task runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from docker.types import DeviceRequest, Mount

from narration.contract import exit_description
from operators.connections import configured, worker_environment
from operators.worker_step import WorkerError, WorkerStep

DEFAULT_IMAGE = "narration-worker-cpu:latest"
DEFAULT_NETWORK = "host"  # reaches an S3 endpoint on the host's loopback; use "bridge" or a compose network in prod
MODEL_MOUNT = "/models"
TRUE_WORDS = {"1", "true", "yes", "on"}

# Runner-side settings (or host paths) that mean nothing inside the container.
_RUNNER_ONLY_PREFIXES = ("NARRATION_IMAGE", "NARRATION_DOCKER_", "NARRATION_TEST_")
_RUNNER_ONLY = {"NARRATION_RUNNER", "NARRATION_MODEL_CACHE", "NARRATION_MODEL_DIR", "NARRATION_AWS_CONN_ID"}
_SECRET_MARKERS = ("SECRET", "PASSWORD", "TOKEN", "CREDENTIAL", "KEY")


def step_image(step: str) -> str:
    """Image for a step: NARRATION_IMAGE_<STEP>, else NARRATION_IMAGE, else the CPU image."""
    return configured(f"image_{step}") or configured("image") or DEFAULT_IMAGE


def model_cache_mount(source: str | None) -> Mount | None:
    """The model cache at /models, read-only: an absolute host path is bind-mounted, a bare name is a volume."""
    if not source:
        return None
    return Mount(MODEL_MOUNT, source, type="bind" if source.startswith("/") else "volume", read_only=True)


def container_environment(environ: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Core ``NARRATION_*`` settings to forward, split into (plain, secret-looking) dicts."""
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name, value in (os.environ if environ is None else environ).items():
        if not name.startswith("NARRATION_") or name in _RUNNER_ONLY or name.startswith(_RUNNER_ONLY_PREFIXES):
            continue
        (secret if any(marker in name for marker in _SECRET_MARKERS) else plain)[name] = value
    return plain, secret


class DockerWorkerOperator(WorkerStep, DockerOperator):
    """Run the worker CLI in the step's image; container output streams into the task log.

    Explicit ``image``, ``network_mode``, ``docker_url``, ``device_requests`` or ``mounts`` win over settings.
    S3 credentials go in ``private_environment`` (never rendered or shown); the XCom is the parsed result dict.
    """

    template_fields: Sequence[str] = (*DockerOperator.template_fields, "extra_args")
    ui_color = "#d1f2eb"

    def __init__(self, *, step: str, chunk: dict, extra_args: Sequence[str] = (), image: str | None = None,
                 network_mode: str | None = None, docker_url: str | None = None,
                 device_requests: list[DeviceRequest] | None = None, mount_tmp_dir: bool = False,
                 auto_remove: str = "success", **kwargs):
        super().__init__(step=step, chunk=chunk, extra_args=extra_args, image=image or "", network_mode=network_mode,
                         docker_url=docker_url, device_requests=device_requests, mount_tmp_dir=mount_tmp_dir,
                         auto_remove=auto_remove, **kwargs)
        self._explicit = {"image": image, "network_mode": network_mode, "docker_url": docker_url,
                          "device_requests": device_requests}

    def _configure(self) -> None:
        """Resolve settings now (not at DAG parse time) and build the container's command and environment."""
        explicit = self._explicit
        self.image = explicit["image"] or step_image(self.step)
        self.network_mode = explicit["network_mode"] or configured("docker_network", DEFAULT_NETWORK)
        self.docker_url = (explicit["docker_url"] or configured("docker_url")
                           or os.environ.get("DOCKER_HOST") or "unix://var/run/docker.sock")
        gpus = (configured("docker_gpus", "false") or "").strip().lower() in TRUE_WORDS
        if explicit["device_requests"] is None and gpus:
            self.device_requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        cache = model_cache_mount(configured("model_cache"))
        targets = {m.get("Target") or m.get("target") for m in self.mounts}  # Mount objects are dicts too
        if cache is not None and MODEL_MOUNT not in targets:
            self.mounts = [*self.mounts, cache]
        self.command = self.worker_command()
        plain, secret = container_environment()
        self.environment = {**plain, **self.environment}
        self._private_environment = {**secret, **worker_environment(), **self._private_environment}
        self.labels = {"org.narration.step": self.step, "org.narration.chunk": str(self.chunk.get("chunk_id")),
                       **(self.labels if isinstance(self.labels, dict) else {})}

    def execute(self, context) -> dict[str, Any]:
        self._configure()
        self.log.info("chunk %s: running %s in %s (network %s, gpus %s)", self.chunk_label,
                      " ".join(self.command), self.image, self.network_mode, bool(self.device_requests))
        # DockerOperator returns output only when pushing XCom, and the result line is needed anyway. All lines:
        # stdout and stderr share one stream, so a log line can arrive after the result line.
        wanted = self.do_xcom_push, self.xcom_all
        self.do_xcom_push, self.xcom_all = True, True
        try:
            lines = super().execute(context)
        except DockerContainerFailedException as exc:
            raise self._failure(exc) from exc
        finally:
            self.do_xcom_push, self.xcom_all = wanted
        result = self.parse_result("\n".join(str(line) for line in lines or []))
        self._log_result(result, f" in {self.image}")
        return result

    def _failure(self, exc: DockerContainerFailedException) -> WorkerError:
        """The worker's own error from its result line when it printed one, else the container's exit."""
        output = "\n".join(str(line) for line in (exc.logs or []))
        code = re.search(r"'StatusCode': (\d+)", str(exc))
        try:
            self.parse_result(output)
        except WorkerError as reported:
            if code and int(code.group(1)) > 128 and "printed no result line" in str(reported):
                return WorkerError(f"narration {self.step} container {exit_description(int(code.group(1)))} "
                                   "before it printed its result line")
            return type(reported)(f"{reported} [{exc}]")
        return WorkerError(f"narration {self.step} printed a result but its container failed: {exc}")
