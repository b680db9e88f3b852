"""The worker operator: runs one ``narration <step>`` command for one chunk and returns its JSON result line.

Two runners share this operator: ``local`` runs the command as a process on the Airflow worker (the embedded
default), ``docker`` runs it in the step's image through DockerOperator (GPU hosts). The runner is configuration
(``NARRATION_RUNNER`` or the ``narration_runner`` Variable), read when the task runs, never while the DAG file is
parsed; so is the chunk's time budget. This module imports nothing heavy: the DAG file imports it at parse time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from narration.errors import ConfigurationFault, InfrastructureFault

RUNNERS = ("local", "docker")


class WorkerError(InfrastructureFault, RuntimeError):
    """The worker command failed; the message carries the error from its result line."""


class WorkerRefusedError(WorkerError, ConfigurationFault, AirflowFailException):
    """The worker failed on something no retry can change (S3 refused the request, an unknown backend): Airflow
    fails the task without retrying it."""


def exit_description(code: int) -> str:
    """How a worker process or container ended, in words: a negative code (a local process) or 128 + N (a
    container's shell convention) is the signal N that killed it."""
    number = -code if code < 0 else code - 128 if code > 128 else None
    if number is None:
        return f"exited with status {code}"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    hint = " (out of memory, or killed from outside)" if number == signal.SIGKILL else ""
    return f"was killed by {name}{hint}" + (f" (exit status {code})" if code > 0 else "")


def worker_command(step: str, chunk_key: str, extra_args: Sequence[str] = ()) -> list[str]:
    return [step, "--chunk", chunk_key, *extra_args]


def parse_result_line(output: str | None, step: str) -> dict[str, Any]:
    """The worker prints one JSON object, last on stdout; anything else means it died before reporting.

    A container's stdout and stderr reach the log through separate pipes, so a traceback can land after the
    result line: the last line that is a JSON object wins.
    """
    lines = [line.strip() for line in (output or "").strip().splitlines() if line.strip()]
    if not lines:
        raise WorkerError(f"narration {step} printed no result line")
    result = None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if not isinstance(result, dict):
        raise WorkerError(f"narration {step}: last output line is not a JSON result: {lines[-1][:200]!r}")
    if "error" in result:
        error = WorkerRefusedError if result.get("retryable") is False else WorkerError
        raise error(f"narration {step} failed: {result['error']}")
    return result


def chunk_label(chunk: dict) -> str:
    return chunk.get("label") or chunk.get("chunk_id", "?")


def chunk_time_budget(chunk: dict) -> timedelta:
    """How long one step may take on this chunk: a fixed start-up allowance plus a per-item budget (settings
    ``NARRATION_WORKER_TIMEOUT_BASE_S`` and ``NARRATION_WORKER_TIMEOUT_PER_ITEM_S``)."""
    from narration.settings import Settings

    settings = Settings()
    items = len(chunk.get("item_ids") or ()) or 1
    return timedelta(seconds=settings.worker_timeout_base_s + settings.worker_timeout_per_item_s * items)


def log_chunk_result(log, result: dict, where: str = "") -> None:
    statuses: dict[str, int] = {}
    for item in result.get("items", []):
        statuses[item["status"]] = statuses.get(item["status"], 0) + 1
    log.info("chunk %s via %s%s: %s; model loads %s (%.2f s), compute %.2f s, skipped %s",
             result.get("chunk_id"), result.get("backend"), where, statuses, result.get("model_loads"),
             result.get("model_load_s", 0.0), result.get("compute_s", 0.0), result.get("skipped", 0))


def selected_runner() -> str:
    """``NARRATION_RUNNER``, else the ``narration_runner`` Variable, else ``local``; call it only in a task."""
    runner = os.environ.get("NARRATION_RUNNER")
    if not runner:
        try:
            from airflow.sdk import Variable

            runner = Variable.get("narration_runner", default="local")
        except Exception:  # noqa: BLE001 - outside a task (no API server to ask): the embedded default
            runner = "local"
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r} (NARRATION_RUNNER or Variable narration_runner); "
                         f"valid runners: {', '.join(RUNNERS)}")
    return runner


def run_local_worker(log, step: str, chunk: dict, extra_args: Sequence[str], on_start=None) -> dict[str, Any]:
    """Run the worker CLI as a child process; its stderr streams into the task log."""
    from operators.connections import worker_environment

    command = [sys.executable, "-m", "narration", *worker_command(step, chunk["key"], extra_args)]
    log.info("chunk %s: running %s", chunk_label(chunk), " ".join(command[1:]))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **worker_environment()}, start_new_session=True)
    if on_start:
        on_start(process)

    def pump():
        for line in process.stderr:
            log.info("%s", line.rstrip())

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    stdout = process.stdout.read()
    code = process.wait()
    pumper.join()
    if code < 0:
        raise WorkerError(f"narration {step} for chunk {chunk_label(chunk)} {exit_description(code)} "
                          "before it printed its result line")
    result = parse_result_line(stdout, step)
    if code != 0:
        raise WorkerError(f"narration {step} exited with {code}")
    return result


class WorkerOperator(BaseOperator):
    """Run ``narration <step> --chunk KEY`` for one chunk on the configured runner; the XCom is the parsed
    result line. The execution timeout, unless given, is the chunk's time budget (see :func:`chunk_time_budget`).
    """

    # ``chunk`` is templated so that a mapped task group's argument is resolved before the task runs.
    template_fields: Sequence[str] = ("chunk", "extra_args")
    ui_color = "#d6eaf8"

    def __init__(self, *, step: str, chunk: dict, extra_args: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.step = step
        self.chunk = chunk
        self.extra_args = list(extra_args)
        self._process: subprocess.Popen | None = None
        self._delegate: BaseOperator | None = None

    def pre_execute(self, context) -> None:
        if self.execution_timeout is None:  # read by the task runner after this hook, before execute()
            self.execution_timeout = chunk_time_budget(self.chunk)
        self.log.info("chunk %s: %s time budget %s", chunk_label(self.chunk), self.step, self.execution_timeout)

    def execute(self, context) -> dict[str, Any]:
        if selected_runner() == "docker":
            from airflow.sdk.bases.operator import ExecutorSafeguard

            from operators.docker_worker import DockerWorkerOperator

            self._delegate = DockerWorkerOperator(task_id=self.task_id, step=self.step, chunk=self.chunk,
                                                  extra_args=self.extra_args)
            # This task's runner is the one running the delegate: say so, or it warns of a nested operator.
            token = ExecutorSafeguard.tracker.set(self._delegate)
            try:
                return self._delegate.execute(context)
            finally:
                ExecutorSafeguard.tracker.reset(token)
        result = run_local_worker(self.log, self.step, self.chunk, self.extra_args, on_start=self._started)
        log_chunk_result(self.log, result)
        return result

    def _started(self, process: subprocess.Popen) -> None:
        self._process = process

    def on_kill(self) -> None:
        """Called on timeout or when the task is stopped: stop the worker and everything it started."""
        if self._delegate is not None:
            self._delegate.on_kill()
        if self._process and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
