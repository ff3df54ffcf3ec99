"""Run a notebook through a real Jupyter server with jupyter-remote, and print it.

The server is started here (loopback, a fresh token) with the local agent as its node,
and so is the notebook's kernel, as JupyterLab does: the server knows the kernel by its
id (it keeps the kernel's session and removes it with the kernel), and the kernel finds
the server through the JUPYTER_REMOTE_SERVER_URL/TOKEN the server gave it. Arguments after
the notebook go to the server (e.g. --RemoteApp.local_agent_url=...). Exit status 1 when
a cell failed unexpectedly.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

import nbformat
import requests
from jupyter_client import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


class ServerKernel(AsyncKernelManager):
    """A kernel the Jupyter server started, driven by nbclient through its connection file
    (nbclient's own kernels are unknown to the server: %%remote could not use its session)."""

    interrupt_url = ""
    kernel_url = ""
    headers: dict = {}

    @property
    def has_kernel(self) -> bool:
        return True

    async def _async_is_alive(self) -> bool:
        """The server owns the process (this manager has no provisioner): alive while the
        server lists it. nbclient asks when the first kernel_info is slow to come."""
        return requests.get(self.kernel_url, headers=self.headers, timeout=30).ok

    is_alive = _async_is_alive

    async def interrupt_kernel(self) -> None:
        requests.post(self.interrupt_url, headers=self.headers, timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(path: str, server_args: list[str]) -> int:
    port, token = free_port(), secrets.token_hex(16)
    work = tempfile.mkdtemp(prefix="jupyter-remote-headless-")
    runtime = os.path.join(work, "runtime")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            "--ServerApp.allow_root=True",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={work}",
            f"--RemoteApp.db_path={work}/remote.sqlite",
            *server_args,
        ],
        stdout=open(os.path.join(work, "server.log"), "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": runtime},
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}
    kernel = None
    try:
        for _ in range(300):
            try:
                nodes = requests.get(
                    f"{url}/remote/api/nodes",
                    timeout=2,
                    headers={"Authorization": f"token {token}"},
                ).json()
                if any(n["state"] in ("healthy", "busy") for n in nodes["nodes"]):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            print(f"error: the server or its local agent did not come up; see {work}/server.log")
            return 1
        kernel = requests.post(
            f"{url}/api/kernels", json={"name": "python3"}, headers=headers, timeout=60
        ).json()["id"]
        km = ServerKernel(connection_file=os.path.join(runtime, f"kernel-{kernel}.json"))
        km.load_connection_file()
        km.kernel_url, km.headers = f"{url}/api/kernels/{kernel}", headers
        km.interrupt_url = f"{km.kernel_url}/interrupt"
        book = nbformat.read(path, as_version=4)
        failed = False
        client = NotebookClient(book, km=km, timeout=600, allow_errors=False)
        try:
            client.execute()
        except CellExecutionError as exc:
            failed = "nbval-raises-exception" not in str(exc)
        finally:
            if client.kc is not None:
                client.kc.stop_channels()
        for cell in book.cells:
            if cell.cell_type != "code":
                continue
            print(f"\n>>> {cell.source}")
            for out in cell.get("outputs", []):
                if out.output_type == "stream":
                    print(out.text, end="" if out.text.endswith("\n") else "\n")
                elif out.output_type in ("execute_result", "display_data"):
                    print(out.data.get("text/plain", ""))
                elif out.output_type == "error":
                    print(f"{out.ename}: {out.evalue}")
        print(
            f"\n==> {path}: {'ran to the end' if not failed else 'a cell failed'}; "
            f"server {url}, nodes: {', '.join(n['node_id'] for n in nodes['nodes'])}"
        )
        return 1 if failed else 0
    finally:
        if kernel:  # the server removes the kernel's session containers with it
            requests.delete(f"{url}/api/kernels/{kernel}", headers=headers, timeout=60)
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    args = sys.argv[1:] or ["notebooks/quickstart.ipynb"]
    sys.exit(main(args[0], args[1:]))
