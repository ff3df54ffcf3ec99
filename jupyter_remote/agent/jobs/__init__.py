"""Detached jobs: tasks in containers of their own that outlive the agent's process.

`manager` runs them, `store` keeps their records, `plan` turns a request into one.
"""

from __future__ import annotations

from jupyter_remote.agent.jobs.manager import JobManager
from jupyter_remote.agent.jobs.plan import job_status

__all__ = ["JobManager", "job_status"]
