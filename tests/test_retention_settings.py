"""One retention setting, one rule: the agent and the server refuse the same bad values."""

from __future__ import annotations

import subprocess
import sys

import pytest
from traitlets import TraitError

from jupyter_remote.agent.app import AgentApp
from jupyter_remote_server.app import RemoteApp


@pytest.mark.parametrize("cls", [AgentApp, RemoteApp])
@pytest.mark.parametrize(
    "name, value, says",
    [
        ("retention_interval", 0.0, "between 0.1 and 86400"),
        ("retention_interval", 1e9, "between 0.1 and 86400"),
        ("retention_per_pass", 0, "between 1 and 1e+06"),
        ("retention_max_age", float("nan"), ">= 0"),
        ("retention_max_bytes", -1, ">= 0"),
        ("expired_keep", float("inf"), ">= 0"),
    ],
)
def test_both_apps_refuse_the_same_bad_values(cls, name, value, says):
    app = cls()
    before = getattr(app, name)
    with pytest.raises(TraitError, match=f"c.{cls.__name__}.{name} must be") as err:
        setattr(app, name, value)
    assert says in str(err.value)
    assert getattr(app, name) == before  # nothing changed


def test_each_app_keeps_its_own_byte_budget_and_shows_it():
    assert AgentApp().retention_max_bytes == 4 << 30
    assert RemoteApp().retention_max_bytes == 1 << 30
    assert AgentApp.class_traits()["retention_max_bytes"].default_value == 4 << 30


def test_the_agent_cli_refuses_a_bad_retention_value_in_one_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_remote",
            "agent",
            "--data-dir",
            str(tmp_path),
            "--retention-interval",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "retention_interval" in out.stderr and "between 0.1 and 86400" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
