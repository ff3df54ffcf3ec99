"""The protocol's rules that the runner needs too, in the standard library only.

The agent mounts this directory beside the runner in each session container, so the
runner checks ids and paths with these very functions (docs/architecture.md).
"""

from __future__ import annotations

import re

# An id made by a client (execution, session, job): letters, digits, `_.-`, 1..128,
# matched in full (re.fullmatch: `$` would accept a trailing newline).
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}"
_ID = re.compile(ID_PATTERN)

# Final statuses: once there, a record never changes again.
EXECUTION_FINAL = frozenset({"completed", "failed", "cancelled", "timeout", "not_started"})
TASK_FINAL = frozenset({"completed", "failed", "stopped", "not_started"})
JOB_FINAL = frozenset({"completed", "failed", "stopped"})

# A command's time limit when none is asked for, and the most one may ask for.
DEFAULT_COMMAND_TIMEOUT = 1800.0


def valid_id(value: object) -> bool:
    """True for a well-formed client-made id (no trailing newline, no path characters)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


# A container path as every hop takes it (the agent, the server, the runner): 1..MAX_PATH
# characters, no NUL (a C string ends there).
MAX_PATH = 4096


def valid_path(value: object) -> bool:
    """True for a path text every hop accepts (absolute or not: each hop says which it wants)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_PATH and "\0" not in value


# The most ids one runner `run` request may ask it to forget (docs/runner.md, "run").
MAX_FORGET = 1000


def incomplete_tail(data: bytes) -> int:
    """How many trailing bytes of ``data`` begin a UTF-8 character not ended yet (0-3):
    they wait for the next read, so an output record never splits a character."""
    if not data or data[-1] < 0x80:
        return 0
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte >= 0xC0:  # a lead byte: how long its character is
            return back if (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4) > back else 0
        if byte < 0x80:
            return 0
    return 0
