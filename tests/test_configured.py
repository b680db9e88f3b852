"""The one lookup of an Airflow-side setting: environment first, then the Airflow Variable (here served by
Airflow's own environment-variable secrets backend, ``AIRFLOW_VAR_*``), then the default."""

from __future__ import annotations

import pytest

from operators.connections import SettingError, configured


def test_the_environment_wins_then_the_variable_then_the_default(monkeypatch):
    monkeypatch.delenv("NARRATION_DOCKER_NETWORK", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_NARRATION_DOCKER_NETWORK", raising=False)
    assert configured("docker_network", "host") == "host"
    monkeypatch.setenv("AIRFLOW_VAR_NARRATION_DOCKER_NETWORK", "from-variable")
    assert configured("docker_network", "host") == "from-variable"
    monkeypatch.setenv("NARRATION_DOCKER_NETWORK", "from-environment")
    assert configured("docker_network", "host") == "from-environment"
    monkeypatch.setenv("NARRATION_DOCKER_NETWORK", "")  # empty counts as unset
    assert configured("docker_network", "host") == "from-variable"


def test_a_value_outside_the_choices_fails_and_names_the_setting(monkeypatch):
    from operators.worker import selected_runner

    monkeypatch.delenv("NARRATION_RUNNER", raising=False)
    monkeypatch.setenv("AIRFLOW_VAR_NARRATION_RUNNER", "kubernetes")
    with pytest.raises(SettingError, match=r"NARRATION_RUNNER or Variable narration_runner is 'kubernetes'; "
                                           r"valid values: local, docker"):
        selected_runner()
    monkeypatch.setenv("NARRATION_RUNNER", "docker")
    assert selected_runner() == "docker"
