"""The worker operator: runs one ``narration <step>`` command for one chunk and returns its JSON result line.

Two runners share this operator: ``local`` runs the command as a process on the Airflow worker (the embedded
default), ``docker`` runs it in the step's image through DockerOperator (GPU hosts). The runner is configuration
(``NARRATION_RUNNER`` or the ``narration_runner`` Variable), read when the task runs, never while the DAG file is
parsed; so is the chunk's time budget. This module imports nothing heavy: the DAG file imports it at parse time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from narration.contract import exit_description
from operators.worker_step import WorkerError, WorkerRefusedError, WorkerStep, chunk_time_budget, parse_result_line

RUNNERS = ("local", "docker")


def selected_runner() -> str:
    """``NARRATION_RUNNER``, else the ``narration_runner`` Variable, else ``local``; call it only in a task."""
    from operators.connections import configured

    return configured("runner", "local", choices=RUNNERS)


class WorkerOperator(WorkerStep, BaseOperator):
    """Run ``narration <step> --chunk KEY`` for one chunk on the configured runner; the XCom is the parsed
    result line. The execution timeout, unless given, is the chunk's time budget (see :func:`chunk_time_budget`).
    """

    # ``chunk`` is templated so that a mapped task group's argument is resolved before the task runs.
    template_fields: Sequence[str] = ("chunk", "extra_args")
    ui_color = "#d6eaf8"

    def __init__(self, *, step: str, chunk: dict, extra_args: Sequence[str] = (), **kwargs):
        super().__init__(step=step, chunk=chunk, extra_args=extra_args, **kwargs)
        self._process: subprocess.Popen | None = None
        self._delegate: BaseOperator | None = None

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
        result = self._run_local()
        self._log_result(result)
        return result

    def _run_local(self) -> dict[str, Any]:
        """Run the worker CLI as a child process; its stderr streams into the task log."""
        from operators.connections import worker_environment

        command = [sys.executable, "-m", "narration", *self.worker_command()]
        self.log.info("chunk %s: running %s", self.chunk_label, " ".join(command[1:]))
        self._process = process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **worker_environment()}, start_new_session=True)

        def pump():
            for line in process.stderr:
                self.log.info("%s", line.rstrip())

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        stdout = process.stdout.read()
        code = process.wait()
        pumper.join()
        if code < 0:
            raise WorkerError(f"narration {self.step} for chunk {self.chunk_label} {exit_description(code)} "
                              "before it printed its result line")
        result = self.parse_result(stdout)
        if code != 0:
            raise WorkerError(f"narration {self.step} exited with {code}")
        return result

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


# Imported from here by the DAG file and by callers that catch the worker's errors.
__all__ = ["RUNNERS", "WorkerError", "WorkerOperator", "WorkerRefusedError", "chunk_time_budget", "exit_description",
           "parse_result_line", "selected_runner"]
