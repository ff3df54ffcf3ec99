"""Executions: one command, run once, its output on disk before anyone reads it.

`manager` starts and stops them, `store` keeps their records, `plan` turns a request into
one, `runner_path` and `exec_path` run it, `outcome` words how it ended, `recovery` picks
them up after a restart.
"""

from __future__ import annotations

from jupyter_remote.agent.executions.manager import ExecutionManager
from jupyter_remote.agent.executions.record import Execution, runner_id
from jupyter_remote.agent.executions.runner_path import FORGET_AFTER

__all__ = ["FORGET_AFTER", "Execution", "ExecutionManager", "runner_id"]
