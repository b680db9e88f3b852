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
