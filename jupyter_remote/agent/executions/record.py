"""One execution's record: what was asked, how it runs, how it ended; its API model."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

from jupyter_remote.agent.eventlog import EventLog
from jupyter_remote.agent.specs import ContainerSpec
from jupyter_remote.protocol.rules import valid_id


def runner_id(execution_id: str) -> str:
    """The id a cell has in the runner (which takes no ':'): the execution id when it can."""
    if valid_id(execution_id):  # the runner checks ids with this very rule
        return execution_id
    return "x-" + hashlib.sha256(execution_id.encode()).hexdigest()[:40]


class Killed(Exception):
    """Cancelled before the command was started."""


class RunnerGone(Exception):
    """The runner cannot be reached (the container died) or refused the cell."""


@dataclass
class Execution:
    """The record of one execution; `to_json` is its API model and its file on disk."""

    execution_id: str
    node_id: str
    argv: list[str]
    mode: str  # "session" or "fresh"
    image: str
    session_id: str | None = None
    container_id: str | None = None
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    status: str = "running"
    returncode: int | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    duration: float | None = None
    timed_out: bool = False
    cancelled: bool = False
    oom_killed: bool = False
    message: str | None = None
    spec: ContainerSpec | None = None
    kill_reason: str | None = None
    kill_signal: str | None = None  # what cancel or timeout sent first
    escalated: bool = False  # it outlived the grace and got SIGKILL
    exec_id: str | None = None
    stdin: bytes | None = None  # the cell's source, sent on stdin; dropped once sent
    input_bytes: int = 0
    path: str = "exec"  # "runner": over the container's runner; "exec": one docker exec
    runner_kind: str | None = None  # shell | python when the body can go to a runner
    code: str | None = None  # the cell for the runner; dropped once sent
    runner_dir: str | None = None
    runner_started: bool = False  # the run request went to the runner
    execution_count: int | None = None  # the kernel's In[N]: a Python traceback names it
    tenant: str | None = None  # who asked for it (tenants.py); None: the operator
    log: EventLog | None = None
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to_json(self) -> dict:
        return {
            "execution_id": self.execution_id,
            "node_id": self.node_id,
            "argv": self.argv,
            "input_bytes": self.input_bytes,
            "mode": self.mode,
            "path": self.path,
            "image": self.image,
            "session_id": self.session_id,
            "container_id": self.container_id,
            "timeout": self.timeout,
            "status": self.status,
            "returncode": self.returncode,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "timed_out": self.timed_out,
            "cancelled": self.cancelled,
            "oom_killed": self.oom_killed,
            "message": self.message,
            "log_size": self.log.size if self.log else None,
            "tenant": self.tenant,
        }
