"""scripts/headless.py runs a notebook in a kernel the real server started, as Lab does."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat

from conftest import BUSYBOX

ROOT = Path(__file__).resolve().parents[1]


def test_headless_runs_the_notebook_in_a_kernel_the_server_knows(make_agent, tmp_path):
    agent = make_agent(host="127.0.0.12", token=None)
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_remote"),
        nbformat.v4.new_code_cell("%remote_config"),
        nbformat.v4.new_code_cell(f"%%remote --image {BUSYBOX}\necho hello from the node"),
    ]
    path = tmp_path / "book.ipynb"
    nbformat.write(book, path)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "headless.py"),
            str(path),
            f"--RemoteApp.local_agent_url={agent.url}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kernel = re.search(r"^kernel: (\S+) \((.*)\)$", done.stdout, re.MULTILINE)
    assert kernel, done.stdout
    assert re.fullmatch(r"[0-9a-f-]{36}", kernel.group(1)), kernel.group(0)
    assert kernel.group(2).startswith("started by this server"), kernel.group(0)
    assert "hello from the node" in done.stdout
