"""What both runners of a worker step share: the step, its chunk and arguments, its time budget, and reading and
logging the worker's result line (the contract itself is :mod:`narration.contract`).

Imports nothing heavy: the DAG file imports the worker operator, and through it this module, at parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from narration.contract import WorkerError, WorkerRefused, chunk_label, chunk_time_budget, worker_command
from narration.contract import parse_result_line as parse_contract_line


class WorkerRefusedError(WorkerRefused, AirflowFailException):
    """A refusal no retry can change: Airflow fails the task without retrying it."""


def parse_result_line(output: str | None, step: str) -> dict[str, Any]:
    """The worker's result (see :func:`narration.contract.parse_result_line`); a refusal is a
    :class:`WorkerRefusedError`, so Airflow does not retry it."""
    return parse_contract_line(output, step, refused=WorkerRefusedError)


class WorkerStep:
    """Mixin for an operator that runs ``narration <step> --chunk KEY`` for one chunk; put it before the Airflow
    operator class it extends. The execution timeout, unless given, is the chunk's time budget
    (:func:`narration.contract.chunk_time_budget`)."""

    def __init__(self, *, step: str, chunk: dict, extra_args: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.step = step
        self.chunk = chunk
        self.extra_args = list(extra_args)

    @property
    def chunk_label(self) -> str:
        return chunk_label(self.chunk)

    def worker_command(self) -> list[str]:
        return worker_command(self.step, self.chunk["key"], self.extra_args)

    def pre_execute(self, context) -> None:
        if self.execution_timeout is None:  # read by the task runner after this hook, before execute()
            self.execution_timeout = chunk_time_budget(self.chunk)
        self.log.info("chunk %s: %s time budget %s", self.chunk_label, self.step, self.execution_timeout)
        super().pre_execute(context)

    def parse_result(self, output: str | None) -> dict[str, Any]:
        return parse_result_line(output, self.step)

    def _log_result(self, result: dict, where: str = "") -> None:
        statuses: dict[str, int] = {}
        for item in result.get("items", []):
            statuses[item["status"]] = statuses.get(item["status"], 0) + 1
        self.log.info("chunk %s via %s%s: %s; model loads %s (%.2f s), compute %.2f s, skipped %s",
                      result.get("chunk_id"), result.get("backend"), where, statuses, result.get("model_loads"),
                      result.get("model_load_s", 0.0), result.get("compute_s", 0.0), result.get("skipped", 0))


__all__ = ["WorkerError", "WorkerRefusedError", "WorkerStep", "chunk_time_budget", "parse_result_line"]
