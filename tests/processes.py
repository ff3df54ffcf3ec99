"""Real processes the tests and benchmarks start: agents (and, in server_process.py, servers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import requests

from jupyter_remote.agent.client import AgentClient

BUSYBOX = "jupyter-remote/busybox:local"
PYTHON = "jupyter-remote/python:local"
SCIPY = "jupyter-remote/scipy:local"  # numpy, pandas, matplotlib
RUN_ID = uuid.uuid4().hex[:6]
# BENCH_TLS=1 benchmarks/run.sh ...: every agent serves https (a CA made for the run, trusted
# through REQUESTS_CA_BUNDLE by this process and the servers it starts)
TLS = os.environ.get("BENCH_TLS") == "1"
_run_ca = None


def run_ca():
    """The run's own certificate authority (trustme), trusted from now on."""
    global _run_ca
    if _run_ca is None:
        import trustme

        _run_ca = trustme.CA()
        bundle = os.path.join(tempfile.mkdtemp(prefix="jr-ca-"), "ca.pem")
        _run_ca.cert_pem.write_to_path(bundle)
        os.environ["REQUESTS_CA_BUNDLE"] = bundle
    return _run_ca


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ChildProcess:
    """A real process of ours that a test can kill -9 or stop."""

    proc: subprocess.Popen | None = None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class AgentProcess(ChildProcess):
    """A real `jupyter-remote agent` process that tests can kill, stop and restart."""

    def __init__(
        self,
        data_dir: str,
        host: str = "127.0.0.1",
        token: str | None = "t0ken",
        extra: tuple[str, ...] = (),
        ca=None,
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self.token = token
        self.data_dir = data_dir
        self.node_id = f"pytest-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        ca = ca or (run_ca() if TLS else None)
        if ca is not None:  # serve https with a certificate for this host from `ca`
            extra = (*extra, *tls_options(ca, host))
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.url = f"{'https' if ca else 'http'}://{host}:{self.port}"
        self.client = AgentClient(self.url, token)

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "jupyter_remote",
            "agent",
            "--listen",
            f"{self.host}:{self.port}",
            "--data-dir",
            self.data_dir,
            "--node-id",
            self.node_id,
            "--default-image",
            BUSYBOX,
            "--sample-interval",
            "0.5",
            *self.extra,
        ]
        if self.token:
            argv += ["--token", self.token]
        return argv

    def start(self) -> AgentProcess:
        log = open(os.path.join(self.data_dir, "test-agent.log"), "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}; see {log.name}")
            try:
                requests.get(
                    self.url + "/v1", timeout=1, headers={"Authorization": f"Bearer {self.token}"}
                )
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("agent did not start listening within 30 s")

    def containers(self, docker_client, **labels) -> list:
        wanted = [f"jupyter-remote.node={self.node_id}"]
        wanted += [f"jupyter-remote.{k}={v}" for k, v in labels.items()]
        return docker_client.containers.list(
            all=True, filters={"label": wanted}, ignore_removed=True
        )


def tls_options(ca, host: str) -> tuple[str, ...]:
    """--certfile/--keyfile of a certificate for `host` signed by `ca` (a trustme.CA)."""
    where = tempfile.mkdtemp(prefix="jr-tls-")
    cert = ca.issue_cert(host)
    chain, key = os.path.join(where, "chain.pem"), os.path.join(where, "key.pem")
    cert.private_key_pem.write_to_path(key)
    with open(chain, "wb") as fh:
        fh.write(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return ("--certfile", chain, "--keyfile", key)


FAST = {"poll_interval": 0.3, "suspect_after": 1.5, "lost_after": 4.0}


def node_config(agents: list[AgentProcess]) -> list[dict]:
    return [{"url": a.url, "token": a.token, "node_id": a.node_id} for a in agents]


class UnsharedAgentProcess(AgentProcess):
    """An agent in its own PID namespace (`unshare --pid --fork --mount-proc`, root): it
    cannot see the host's processes, so no container PID either. SIGTERM reaches it
    through unshare's --kill-child."""

    def argv(self) -> list[str]:
        return ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"] + (
            super().argv()
        )


def data_dir_bytes(path: str) -> int:
    """An agent's data dir on disk, as `du` counts blocks, without its top-level *.log files
    (the process's own output, which retention does not count)."""
    total = os.stat(path).st_blocks * 512
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            if top == path and name.endswith(".log"):
                continue
            try:
                total += os.lstat(os.path.join(top, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total
