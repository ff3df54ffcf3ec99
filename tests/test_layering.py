"""The layering rule: nothing kernel-side imports the agent (it may not be installed there)."""

from __future__ import annotations

import subprocess
import sys

KERNEL_SIDE = [
    "jupyter_remote",
    "jupyter_remote.kernel.magics",
    "jupyter_remote.kernel.widgets",
    "jupyter_remote.kernel.client",
    "jupyter_remote.kernel.api",
    "jupyter_remote.kernel.engine_states",
    "jupyter_remote.protocol",
]


def test_kernel_side_modules_do_not_import_the_agent():
    code = (
        "import importlib, sys\n"
        f"for name in {KERNEL_SIDE!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('jupyter_remote.agent')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
