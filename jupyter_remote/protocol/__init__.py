"""The wire protocol of the agent API and the server API, in one place.

Typed pydantic models of every request body, the statuses and their rules, the signal
names, the id rule and the limits. The agent, the server extension, the clients, the
magics and the widgets import it; kernel-side code never imports `jupyter_remote.agent`.

Rule for unknown fields: request bodies refuse them (400 naming the field), so a typo such
as `timout` never passes silently; responses may grow new fields, and clients ignore what
they do not know.
"""

from jupyter_remote.protocol.common import (
    EXECUTION_FINAL,
    ID_PATTERN,
    JOB_FINAL,
    MAX_TIMEOUT,
    SIGNALS,
    TASK_FINAL,
    job_status,
)

__all__ = [
    "EXECUTION_FINAL",
    "ID_PATTERN",
    "JOB_FINAL",
    "MAX_TIMEOUT",
    "SIGNALS",
    "TASK_FINAL",
    "job_status",
]
