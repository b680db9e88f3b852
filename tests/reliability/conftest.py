"""Reliability suite fixtures: the outage proxy in front of the S3 server, the ``dag_run`` marker, and the
bad-input table printed at the end of the run (whatever ``-s`` says)."""

from __future__ import annotations

import pytest

from tests.reliability.badinput import RESULTS_KEY, format_table
from tests.reliability.s3proxy import OutageProxy


def pytest_configure(config):
    config.addinivalue_line("markers", "dag_run: runs the whole narration DAG with dag.test() (30-90 s each)")
    config.stash[RESULTS_KEY] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(RESULTS_KEY, [])
    if results:
        terminalreporter.section("bad-input corpus: each case and the answer it got")
        terminalreporter.write_line(format_table(results))


@pytest.fixture()
def s3_proxy(s3_server):
    """A proxy in front of the S3 server that tests can take down and bring back."""
    proxy = OutageProxy(s3_server.port).start()
    yield proxy
    proxy.stop()
