"""The worker contract: how a runner starts a step for one chunk and reads back its one JSON result line.

Both runners (a local process, a container) and the worker command line itself use this module, so the command,
the result line and what a failed result means are written once. Airflow-free: the operators adapt it.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TextIO

from narration.errors import ConfigurationFault, InfrastructureFault


class WorkerError(InfrastructureFault, RuntimeError):
    """The worker command failed; the message carries the error from its result line."""


class WorkerRefused(WorkerError, ConfigurationFault):
    """The worker failed on something no retry can change (S3 refused the request, an unknown backend)."""


def worker_command(step: str, chunk_key: str, extra_args: Sequence[str] = ()) -> list[str]:
    """The arguments of ``narration <step>`` for one chunk."""
    return [step, "--chunk", chunk_key, *extra_args]


def emit_result(result: dict, stdout: TextIO | None = None) -> None:
    """Print the result line: one compact JSON object, after everything logged so far, flushed."""
    stdout = stdout or sys.stdout
    sys.stderr.flush()
    stdout.write(json.dumps(result, separators=(",", ":"), default=str) + "\n")
    stdout.flush()


def error_result(command: str, exc: BaseException, retryable: bool | None = None) -> dict:
    """The result line of a failed command; ``retryable=False`` tells the runner a retry cannot help."""
    result = {"error": f"{type(exc).__name__}: {exc}", "command": command}
    if retryable is not None:
        result["retryable"] = retryable
    return result


def parse_result_line(output: str | None, step: str, refused: type[WorkerError] = WorkerRefused) -> dict[str, Any]:
    """The worker prints one JSON object, last on stdout; anything else means it died before reporting.

    A container's stdout and stderr reach the log through separate pipes, so a traceback can land after the
    result line: the last line that is a JSON object wins. An error result raises :class:`WorkerError`, or
    ``refused`` when the worker said no retry can change it.
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
        error = refused if result.get("retryable") is False else WorkerError
        raise error(f"narration {step} failed: {result['error']}")
    return result


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


def chunk_label(chunk: dict) -> str:
    """How logs and errors name a chunk (its plan label, else its id)."""
    return chunk.get("label") or chunk.get("chunk_id", "?")


def chunk_time_budget(chunk: dict) -> timedelta:
    """How long one step may take on this chunk: a fixed start-up allowance, a per-item budget, and for a long
    item a budget by its text's size (settings ``NARRATION_WORKER_TIMEOUT_BASE_S``,
    ``NARRATION_WORKER_TIMEOUT_PER_ITEM_S`` and ``NARRATION_WORKER_TIMEOUT_PER_KCHAR_S``; the chunk's
    ``longform_chars``), so a chunk holding a programme of an hour gets the time its text needs."""
    from narration.settings import Settings

    settings = Settings()
    items = len(chunk.get("item_ids") or ()) or 1
    by_text = settings.worker_timeout_per_kchar_s * int(chunk.get("longform_chars") or 0) / 1000
    return timedelta(seconds=settings.worker_timeout_base_s + settings.worker_timeout_per_item_s * items + by_text)
