"""The installed distribution: console script and the server extension enabled on install."""

from __future__ import annotations

import os
import subprocess
import sys


def bin_path(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def test_console_script_lists_its_subcommands():
    result = subprocess.run(
        [bin_path("jupyter-remote"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "agent" in result.stdout


def test_server_extension_is_enabled_by_install():
    result = subprocess.run(
        [bin_path("jupyter"), "server", "extension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = result.stdout + result.stderr
    line = next(ln for ln in text.splitlines() if "jupyter_remote_server" in ln)
    assert "enabled" in line
    assert "jupyter_remote_server  \x1b[32mOK" in text or "jupyter_remote_server  OK" in text
