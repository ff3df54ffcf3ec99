"""Lean installs: `pip install '.[agent]'` / `'.[gateway]'` into empty venvs, started by the
systemd units in deploy/systemd the way systemd starts them (docs/deployment.md)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from processes import BUSYBOX, RUN_ID, free_port
from test_gateway import state as valid_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(ROOT, "deploy", "systemd")
INSTALL_PREFIX = "/opt/jupyter-remote"  # the venv the units' ExecStart names
# What a Jupyter user needs and a Docker host or a gateway host does not.
JUPYTER_ONLY = {"jupyterlab", "jupyter-server", "pyarrow", "ipywidgets", "pandas", "ipython"}
# systemd starts a service with this environment plus its Environment=/EnvironmentFile=.
SYSTEMD_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def make_venv(path: str, extra: str) -> str:
    """An empty venv with only `jupyter-remote[extra]` installed from this checkout."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", path], check=True, timeout=120)
    result = subprocess.run(
        [os.path.join(path, "bin", "pip"), "install", "-q", f".[{extra}]"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def installed(venv: str) -> set[str]:
    out = subprocess.run(
        [os.path.join(venv, "bin", "pip"), "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {p["name"].lower().replace("_", "-") for p in json.loads(out)}


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory):
    return make_venv(str(tmp_path_factory.mktemp("lean") / "agent-venv"), "agent")


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory):
    return make_venv(str(tmp_path_factory.mktemp("lean") / "gateway-venv"), "gateway")


class Unit:
    """The [Service] settings of a unit file that decide how its process starts and stops."""

    def __init__(self, name: str) -> None:
        self.path = os.path.join(UNITS, name)
        self.service: dict[str, list[str]] = {}
        section = None
        for raw in open(self.path).read().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "Service":
                key, _, value = line.partition("=")
                self.service.setdefault(key, []).append(value)

    def one(self, key: str) -> str:
        (value,) = self.service[key]
        return value

    def environment(self, env_file: str) -> dict[str, str]:
        """Environment= then EnvironmentFile= (whose settings win), as systemd.exec(5) says."""
        env = dict(SYSTEMD_BASE_ENV)
        for assignment in self.service.get("Environment", []):
            for word in shlex.split(assignment):
                key, _, value = word.partition("=")
                env[key] = value
        (declared,) = self.service["EnvironmentFile"]
        assert declared.startswith("-/etc/jupyter-remote/"), declared  # optional, under /etc
        for line in open(env_file).read().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip()
        return env

    def start(self, venv: str, env_file: str, log_path: str) -> subprocess.Popen:
        assert self.one("Type") == "exec"
        argv = shlex.split(self.one("ExecStart"))
        assert argv[0].startswith(INSTALL_PREFIX + "/"), argv
        argv[0] = venv + argv[0][len(INSTALL_PREFIX) :]
        log = open(log_path, "ab")
        return subprocess.Popen(
            argv, env=self.environment(env_file), stdout=log, stderr=subprocess.STDOUT
        )

    def stop(self, proc: subprocess.Popen) -> int:
        """KillSignal (SIGTERM by default), then TimeoutStopSec for the process to exit."""
        proc.send_signal(getattr(signal, self.service.get("KillSignal", ["SIGTERM"])[0]))
        try:
            return proc.wait(float(self.one("TimeoutStopSec")))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            pytest.fail(f"{os.path.basename(self.path)}: no exit within TimeoutStopSec")


def write_env_file(path, settings: dict[str, str]) -> str:
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    os.chmod(path, 0o600)
    return str(path)


def wait_until(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_the_agent_extra_has_no_jupyter_parts(agent_venv):
    packages = installed(agent_venv)
    assert not packages & JUPYTER_ONLY, packages & JUPYTER_ONLY
    assert {"docker", "pydantic", "tornado", "jupyter-remote"} <= packages


def test_the_gateway_extra_has_neither_jupyter_nor_docker(gateway_venv):
    packages = installed(gateway_venv)
    assert not packages & (JUPYTER_ONLY | {"docker", "pydantic"}), packages


def test_the_agent_unit_starts_an_agent_that_runs_a_command(agent_venv, docker_client, tmp_path):
    unit = Unit("jupyter-remote-agent.service")
    port = free_port("127.0.0.1")
    node_id = f"pytest-{RUN_ID}-unit"
    env_file = write_env_file(
        tmp_path / "agent.env",
        {
            "JUPYTER_REMOTE_AGENT_LISTEN": f"127.0.0.1:{port}",
            "JUPYTER_REMOTE_AGENT_DATA_DIR": str(tmp_path / "data"),
            "JUPYTER_REMOTE_AGENT_NODE_ID": node_id,
            "JUPYTER_REMOTE_AGENT_DEFAULT_IMAGE": BUSYBOX,
        },
    )
    proc = unit.start(agent_venv, env_file, str(tmp_path / "agent.log"))
    try:
        url = f"http://127.0.0.1:{port}"

        def answering():
            assert proc.poll() is None, open(tmp_path / "agent.log").read()[-2000:]
            try:
                return requests.get(url + "/v1/health", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_until(answering, "the agent started by its unit to answer")
        events = requests.post(
            url + "/v1/executions",
            json={"execution_id": f"unit-{RUN_ID}", "command": "echo from-a-lean-agent"},
            stream=True,
            timeout=60,
        )
        lines = [json.loads(line) for line in events.iter_lines() if line]
        assert any("from-a-lean-agent" in e.get("data", "") for e in lines), lines
        assert lines[-1]["event"] == "exit" and lines[-1]["status"] == "completed", lines[-1]
        assert unit.stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for container in docker_client.containers.list(
            all=True, filters={"label": f"jupyter-remote.node={node_id}"}, ignore_removed=True
        ):
            container.remove(force=True)


def test_the_gateway_unit_starts_a_gateway_that_logs_states(gateway_venv, tmp_path):
    unit = Unit("jupyter-remote-gateway.service")
    port = free_port("127.0.0.1")
    log_file = tmp_path / "states.jsonl"
    env_file = write_env_file(
        tmp_path / "gateway.env",
        {"VLLM_STATE_GATEWAY_UDP_PORT": str(port), "VLLM_STATE_GATEWAY_LOG_FILE": str(log_file)},
    )
    proc = unit.start(gateway_venv, env_file, str(tmp_path / "gateway.log"))
    try:
        state = valid_state("unit-e1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:

            def logged():
                assert proc.poll() is None, open(tmp_path / "gateway.log").read()[-2000:]
                sock.sendto(json.dumps(state).encode(), ("127.0.0.1", port))
                time.sleep(0.1)
                return log_file.exists() and "unit-e1" in log_file.read_text()

            wait_until(logged, "the gateway started by its unit to log a state")
        assert unit.stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_the_jupyter_parts_name_the_extra_they_need(gateway_venv):
    python = os.path.join(gateway_venv, "bin", "python")
    result = subprocess.run(
        [python, "-c", "import jupyter_remote; jupyter_remote.load_ipython_extension(None)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "pip install 'jupyter-remote[jupyter]'" in result.stderr
    agent = subprocess.run(
        [os.path.join(gateway_venv, "bin", "jupyter-remote"), "agent", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agent.returncode == 2, agent
    assert "pip install 'jupyter-remote[agent]'" in agent.stderr
    assert "Traceback" not in agent.stderr


@pytest.mark.parametrize("name", ["jupyter-remote-agent.service", "jupyter-remote-gateway.service"])
def test_the_units_pass_systemd_analyze_verify(agent_venv, tmp_path, name):
    """systemd's own checker, with ExecStart pointing at a real install (it checks the path)."""
    text = open(os.path.join(UNITS, name)).read().replace(INSTALL_PREFIX + "/", agent_venv + "/")
    (tmp_path / name).write_text(text)
    result = subprocess.run(
        [shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("name", ["jupyter-remote-agent.service", "jupyter-remote-gateway.service"])
def test_the_deployment_doc_shows_each_unit_as_shipped(name):
    doc = open(os.path.join(ROOT, "docs", "deployment.md")).read()
    assert open(os.path.join(UNITS, name)).read().strip() in doc
