"""Parsing the worker's result line as both runners see it."""

from __future__ import annotations

import pytest

from operators.worker import WorkerError, parse_result_line


def test_last_json_line_wins_even_when_stderr_lands_after_it():
    output = 'progress\n{"chunk_id": "c0000", "items": []}\nTraceback (most recent call last):\nKeyError: x\n'
    assert parse_result_line(output, "synthesize") == {"chunk_id": "c0000", "items": []}


def test_an_error_result_raises_with_the_workers_message():
    with pytest.raises(WorkerError, match="narration align failed: KeyError: 's3://b/k'"):
        parse_result_line('KeyError: oops\n{"error": "KeyError: \'s3://b/k\'", "command": "align"}\n', "align")


@pytest.mark.parametrize("output", ["", "just logs\nno json here\n", "{not json\n"])
def test_no_result_line_is_an_error(output):
    with pytest.raises(WorkerError):
        parse_result_line(output, "render")


def test_an_error_no_retry_can_change_fails_the_task_without_retries():
    from airflow.sdk.exceptions import AirflowFailException

    from operators.worker import WorkerRefusedError

    line = '{"error": "StorageRefused: S3 refused to read s3://b/k", "command": "align", "retryable": false}\n'
    with pytest.raises(WorkerRefusedError, match="StorageRefused") as raised:
        parse_result_line(line, "align")
    assert isinstance(raised.value, AirflowFailException)
    retryable = '{"error": "StorageUnreachable: S3 at x unreachable", "command": "align", "retryable": true}\n'
    with pytest.raises(WorkerError) as raised:
        parse_result_line(retryable, "align")
    assert not isinstance(raised.value, AirflowFailException)


@pytest.mark.parametrize(("code", "words"), [
    (-9, "was killed by SIGKILL (out of memory, or killed from outside)"),
    (-15, "was killed by SIGTERM"),
    (137, "was killed by SIGKILL (out of memory, or killed from outside) (exit status 137)"),
    (1, "exited with status 1"),
])
def test_an_exit_is_described_by_the_signal_that_ended_it(code, words):
    from operators.worker import exit_description

    assert exit_description(code) == words
