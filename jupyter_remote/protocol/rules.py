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
