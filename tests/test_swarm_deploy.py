"""`jupyter-remote swarm deploy|remove`: bad input is one line and exit 2 with nothing made;
the service it makes is the stack file's (deploy/swarm/). Deploying on a real swarm is
tests/test_swarm.py's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jupyter_remote.swarm.spec import AgentService, BadSetting, service_spec

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "swarm" / "jupyter-remote-agent.yml"


def swarm_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_remote", "swarm", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret-token\n")
    return str(path)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--token-file", "TOKEN"], "--image is required"),
        (["--image", "a/b:1"], "--token-file is required"),
        (["--image", "a/b:1", "--token-file", "/nonexistent/t"], "cannot read --token-file"),
        (["--image", "Not An Image", "--token-file", "TOKEN"], "--image must be"),
        (["--image", "a/b:1", "--token-file", "TOKEN", "--port", "0"], "--port must be 1-65535"),
        (["--image", "a/b:1", "--token-file", "TOKEN", "--data-dir", "rel"], "--data-dir must"),
        (
            ["--image", "a/b:1", "--token-file", "TOKEN", "--data-dir", "/a/../etc"],
            "--data-dir must",
        ),
        (["--image", "a/b:1", "--token-file", "TOKEN", "--service", "a b"], "--service must"),
        (
            ["--image", "a/b:1", "--token-file", "TOKEN", "--constraint", "zone=eu"],
            "--constraint must be like node.labels.zone==eu-1",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(token_file, args, says):
    args = [token_file if a == "TOKEN" else a for a in args]
    # no engine is named: a refusal here comes before anything is asked of one
    result = swarm_cmd("deploy", "--docker-host", "unix:///nonexistent/docker.sock", *args)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and says in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_token_file_and_a_bad_remove_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = swarm_cmd("deploy", "--image", "a/b:1", "--token-file", str(empty))
    assert result.returncode == 2 and "the token (first line of --token-file)" in result.stderr
    result = swarm_cmd("remove", "--service", "bad name")
    assert result.returncode == 2 and "--service must" in result.stderr


def test_an_engine_that_is_no_swarm_manager_is_one_line_and_exit_1(token_file, tmp_path):
    host = f"unix://{tmp_path}/no-engine.sock"
    result = swarm_cmd(
        "deploy", "--docker-host", host, "--image", "a/b:1", "--token-file", token_file
    )
    assert result.returncode == 1 and result.stderr.startswith("error: cannot reach")
    assert "Traceback" not in result.stderr
    assert swarm_cmd("remove", "--docker-host", host).returncode == 1


def test_the_service_is_global_and_the_stack_files_twin():
    agent = AgentService(image="jupyter-remote/agent:latest", token="t")
    spec = service_spec(agent, "secret-id")
    stack = yaml.safe_load(STACK.read_text())["services"]["agent"]
    assert (
        spec["command"]
        == stack["entrypoint"]
        == [
            "jupyter-remote",
            "agent",
            "--listen",
            "0.0.0.0:9527",
            "--token-file",
            "/run/secrets/jupyter-remote-agent-token",
        ]
    )
    assert spec["env"] == [f"{k}={v}" for k, v in stack["environment"].items()]
    assert "JUPYTER_REMOTE_AGENT_NODE_ID={{.Node.Hostname}}" in spec["env"]  # Swarm expands it
    assert [(m["Source"], m["Target"], m["Type"]) for m in spec["mounts"]] == [
        (v["source"], v["target"], v["type"]) for v in stack["volumes"]
    ]
    assert spec["mode"] == {"global": {}} and stack["deploy"]["mode"] == "global"
    assert spec["networks"] == ["host"] and stack["networks"] == ["hostnet"]
    restart, update = spec["restart_policy"], spec["update_config"]
    assert restart["Condition"] == stack["deploy"]["restart_policy"]["condition"] == "any"
    assert (update["Parallelism"], update["Order"]) == (1, "stop-first")
    assert stack["deploy"]["update_config"]["parallelism"] == 1
    assert stack["deploy"]["update_config"]["order"] == "stop-first"
    secret = spec["secrets"][0]
    assert secret["SecretName"] == "jupyter-remote-agent-token"
    assert secret["File"]["Name"] == stack["secrets"][0]["target"]
    assert secret["File"]["Mode"] == stack["secrets"][0]["mode"] == 0o400


def test_settings_carry_into_the_service():
    agent = AgentService(
        image="registry.example:5000/jr/agent:2",
        token="t",
        port=9600,
        data_dir="/srv/jr/{{.Node.Hostname}}",
        service="jr",
        constraints=("node.labels.gpu==yes", "node.role != manager"),
    )
    spec = service_spec(agent, "sid")
    assert spec["name"] == "jr" and spec["command"][3] == "0.0.0.0:9600"
    assert spec["command"][5] == "/run/secrets/jr-token"
    assert "JUPYTER_REMOTE_AGENT_DATA_DIR=/srv/jr/{{.Node.Hostname}}" in spec["env"]
    assert spec["constraints"] == ["node.labels.gpu==yes", "node.role != manager"]
    with pytest.raises(BadSetting, match="token"):
        AgentService(image="a/b", token="two words")
