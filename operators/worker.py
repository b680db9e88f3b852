"""The worker operator: runs one ``narration <step>`` command for one chunk and returns its JSON result line.

Two runners share this interface: ``local`` runs the command as a process on the Airflow worker (the embedded
default), ``docker`` runs it in the step's image through DockerOperator (GPU hosts). Choosing one is configuration:
the ``narration_runner`` Airflow Variable or ``NARRATION_RUNNER``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from operators.connections import worker_environment

RUNNERS = ("local", "docker")


class WorkerError(RuntimeError):
    """The worker command failed; the message carries the error from its result line."""


class WorkerRefusedError(WorkerError, AirflowFailException):
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


class LocalWorkerOperator(BaseOperator):
    """Run the worker CLI as a local process; its stderr streams into the task log."""

    template_fields: Sequence[str] = ("extra_args",)
    ui_color = "#d6eaf8"

    def __init__(self, *, step: str, chunk: dict, extra_args: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.step = step
        self.chunk = chunk
        self.extra_args = list(extra_args)
        self._process: subprocess.Popen | None = None

    def execute(self, context) -> dict[str, Any]:
        command = [sys.executable, "-m", "narration", *worker_command(self.step, self.chunk["key"], self.extra_args)]
        env = {**os.environ, **worker_environment()}
        self.log.info("chunk %s: running %s", chunk_label(self.chunk), " ".join(command[1:]))
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         env=env, start_new_session=True)
        stderr_lines: list[str] = []

        def pump():
            for line in self._process.stderr:
                stderr_lines.append(line)
                self.log.info("%s", line.rstrip())

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        stdout = self._process.stdout.read()
        code = self._process.wait()
        pumper.join()
        if code < 0:
            raise WorkerError(f"narration {self.step} for chunk {chunk_label(self.chunk)} {exit_description(code)} "
                              "before it printed its result line")
        result = parse_result_line(stdout, self.step)
        if code != 0:
            raise WorkerError(f"narration {self.step} exited with {code}")
        self._log_result(result)
        return result

    def _log_result(self, result: dict) -> None:
        statuses: dict[str, int] = {}
        for item in result.get("items", []):
            statuses[item["status"]] = statuses.get(item["status"], 0) + 1
        self.log.info("chunk %s via %s: %s; model loads %s (%.2f s), compute %.2f s, skipped %s",
                      result.get("chunk_id"), result.get("backend"), statuses, result.get("model_loads"),
                      result.get("model_load_s", 0.0), result.get("compute_s", 0.0), result.get("skipped", 0))

    def on_kill(self) -> None:
        if self._process and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)


def selected_runner() -> str:
    runner = os.environ.get("NARRATION_RUNNER")
    if not runner:
        try:
            from airflow.sdk import Variable

            runner = Variable.get("narration_runner", default="local")
        except Exception:  # no metadata DB at parse time (e.g. linting): fall back to the embedded default
            runner = "local"
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; valid runners: {', '.join(RUNNERS)}")
    return runner


def worker_operator_class(runner: str | None = None) -> type[BaseOperator]:
    runner = runner or selected_runner()
    if runner == "docker":
        from operators.docker_worker import DockerWorkerOperator

        return DockerWorkerOperator
    return LocalWorkerOperator
