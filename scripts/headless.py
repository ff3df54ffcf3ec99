"""Run a notebook through a real Jupyter server with jupyter-remote, and print it.

The server is started here (loopback, a fresh token) with the local agent as its node;
the notebook's kernel finds it through JUPYTER_REMOTE_SERVER_URL/TOKEN, as the server's
own kernels do. Exit status 1 when a cell failed unexpectedly.
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
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(path: str) -> int:
    port, token = free_port(), secrets.token_hex(16)
    work = tempfile.mkdtemp(prefix="jupyter-remote-headless-")
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
        ],
        stdout=open(os.path.join(work, "server.log"), "w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                nodes = requests.get(
                    f"{url}/remote/api/nodes",
                    timeout=2,
                    headers={"Authorization": f"token {token}"},
                ).json()
                if any(n["state"] == "healthy" for n in nodes["nodes"]):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            print(f"error: the server or its local agent did not come up; see {work}/server.log")
            return 1
        os.environ.update(JUPYTER_REMOTE_SERVER_URL=url, JUPYTER_REMOTE_SERVER_TOKEN=token)
        book = nbformat.read(path, as_version=4)
        failed = False
        try:
            NotebookClient(
                book, timeout=600, allow_errors=False, resources={"metadata": {"path": work}}
            ).execute()
        except CellExecutionError as exc:
            failed = "nbval-raises-exception" not in str(exc)
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
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "notebooks/quickstart.ipynb"))
