"""A real `jupyter server` process with the extension, for restart tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import requests

from processes import FAST, ChildProcess, free_port, node_config


class ServerProcess(ChildProcess):
    """`python -m jupyter_server` with our extension, as a user would run it."""

    module = "jupyter_server"

    def __init__(self, tmp_path, agents, **remote) -> None:
        self.port = free_port("127.0.0.1")
        self.token = "restart-test-token"
        self.url = f"http://127.0.0.1:{self.port}/remote/api"
        self.config = tmp_path / "jupyter_server_config.json"
        self.config.write_text(
            json.dumps(
                {
                    "ServerApp": {
                        "ip": "127.0.0.1",
                        "port": self.port,
                        "open_browser": False,
                        "root_dir": str(tmp_path),
                        "port_retries": 0,
                        "allow_root": True,
                    },
                    "IdentityProvider": {"token": self.token},
                    "RemoteApp": {
                        "nodes": node_config(agents),
                        "db_path": str(tmp_path / "remote.sqlite"),
                        "local_agent_url": "",
                        **FAST,
                        **remote,
                    },
                }
            )
        )
        self.env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
            "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
            "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        }
        self.log = tmp_path / "server.log"
        self.proc: subprocess.Popen | None = None
        self.expect_nodes = len(agents)

    def start(self) -> ServerProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, f"--config={self.config}"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_for(
            lambda: (
                sum(n["state"] in ("healthy", "busy") for n in self.get("nodes")["nodes"])
                == self.expect_nodes
            ),
            60,
        )
        return self

    def get(self, *path, **params):
        resp = requests.get(
            "/".join([self.url, *path]),
            params=params,
            timeout=60,
            headers={"Authorization": f"token {self.token}"},
        )
        resp.raise_for_status()
        return resp.json()

    def post(self, *path, body=None):
        resp = requests.post(
            "/".join([self.url, *path]),
            json=body or {},
            timeout=60,
            headers={"Authorization": f"token {self.token}"},
        )
        resp.raise_for_status()
        return resp.json() if "json" in resp.headers["Content-Type"] else resp.text

    def delete(self, *path):
        resp = requests.delete(
            "/".join([self.url, *path]),
            timeout=60,
            headers={"Authorization": f"token {self.token}"},
        )
        resp.raise_for_status()
        return resp.json()

    def wait_for(self, check, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited; see {self.log}")
            try:
                if check():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not within {timeout} s; see {self.log}")


class LabProcess(ServerProcess):
    """`jupyter lab` itself, with its own settings dir (no news popup over screenshots)."""

    module = "jupyterlab"

    def __init__(self, tmp_path, agents, **remote) -> None:
        super().__init__(tmp_path, agents, **remote)
        settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        self.env.update(
            JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
        )
        self.lab_url = f"http://127.0.0.1:{self.port}/lab"
