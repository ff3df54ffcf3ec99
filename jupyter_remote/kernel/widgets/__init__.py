"""ipywidgets for the pool, for jobs and for engine states. They take a client and refresh
on a thread of their own, so they never block the kernel, and they stop refreshing when
closed."""

from __future__ import annotations

from jupyter_remote.kernel.widgets.base import Refreshing, close_all
from jupyter_remote.kernel.widgets.engines import ENGINE_COLUMNS, EngineStateWidget
from jupyter_remote.kernel.widgets.job_list import JobListWidget
from jupyter_remote.kernel.widgets.jobs import JOB_COLORS, JobWidget, wait_with_progress
from jupyter_remote.kernel.widgets.nodes import (
    STATE_COLORS,
    NodeRow,
    NodesWidget,
    health_problems,
)

__all__ = [
    "ENGINE_COLUMNS",
    "JOB_COLORS",
    "STATE_COLORS",
    "EngineStateWidget",
    "JobListWidget",
    "JobWidget",
    "NodeRow",
    "NodesWidget",
    "Refreshing",
    "close_all",
    "health_problems",
    "wait_with_progress",
]
