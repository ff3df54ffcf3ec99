"""One agent per data directory: a lock held for the agent's whole life.

Two agents on one data directory would both recover its executions and jobs. That happens
under Swarm after a partition: the manager starts a new agent task on the node while the
cut-off one still runs for a few seconds (notes/swarm.md). The newcomer waits for the lock,
so it recovers only what the old one left, and once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time

log = logging.getLogger("jupyter_remote.agent")

LOCK_FILE = "agent.lock"
WAIT = float(os.environ.get("JUPYTER_REMOTE_AGENT_LOCK_WAIT") or 60.0)


class DataDirBusy(Exception):
    """Another agent kept the data directory for longer than WAIT seconds."""


def hold(data_dir: str, wait: float = WAIT) -> int:
    """Take the data directory's lock, waiting up to `wait` seconds for another agent to
    end; returns the descriptor, which the process keeps open (closing it releases)."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise DataDirBusy(
                    f"another agent has used data directory {data_dir} for over {wait:g} s; "
                    "stop it first (jupyter-remote agent stop --data-dir ...)"
                ) from None
            if not said:
                log.warning("another agent holds data directory %s: waiting for it", data_dir)
                said = True
            time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
