"""Stopping a command's process tree on the host: how cancel and timeout reach an exec."""

from __future__ import annotations

import signal
from collections.abc import Callable

import psutil

SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL")


def kill_tree(
    pid: int,
    grace: float,
    first: signal.Signals = signal.SIGTERM,
    on_escalate: Callable[[], None] = lambda: None,
) -> bool:
    """Signal the process and its descendants (`first`, SIGTERM by default), then SIGKILL
    what is left after `grace` seconds (calling `on_escalate` first).

    Like Ctrl-C in a terminal, the whole tree hears the signal; a command that traps it
    has `grace` seconds to write its last lines and exit with a code of its own.
    Docker has no API to kill an exec'd process; its host PID (exec_inspect) is visible to
    an agent that runs beside the engine. Returns False when the process was already gone.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for proc in procs:
        try:
            proc.send_signal(first)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    if alive:
        on_escalate()
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return True
