"""The processes a cell started, read from /proc, so that a stop reaches all of them.

A shell cell runs in a session and process group of its own: its processes are those of
that session or group (a background job, a pipeline, a job that bash's ``set -m`` put in a
group of its own). A Python cell runs in the persistent interpreter, whose session also
holds what earlier cells left running on purpose: its processes are those of the
interpreter's session that started during the cell, less the children of processes that
were there before it. A process that starts a session of its own (``setsid``) leaves the
cell, as it leaves a terminal.
"""

from __future__ import annotations

import os
import signal
import time

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def mark() -> tuple:
    """Now, to tell later processes from earlier ones: (clock ticks since boot, as /proc's
    start times count, rounded down; the last pid given out in this pid namespace, which
    orders the processes started within one tick, or None where the kernel hides it)."""
    ticks = int(time.clock_gettime(time.CLOCK_BOOTTIME) * TICKS)
    try:
        with open("/proc/sys/kernel/ns_last_pid", "rb") as f:
            return ticks, int(f.read())
    except (OSError, ValueError):
        return ticks, None


def started_since(pid: int, start: int, since: tuple) -> bool:
    """Did the process start after ``since`` (a ``mark()``)?"""
    ticks, last_pid = since
    if start != ticks:
        return start > ticks
    return last_pid is None or pid > last_pid


def table() -> dict:
    """pid -> (ppid, pgrp, session, start ticks, name) of every live process (no zombies)."""
    procs = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return procs
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        close = raw.rfind(b")")
        fields = raw[close + 2 :].split()
        if len(fields) < 20 or fields[0] in (b"Z", b"X"):
            continue
        comm = raw[raw.find(b"(") + 1 : close].decode("utf-8", "replace")
        procs[int(name)] = (int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), comm)
    return procs


def of_shell(leader: int, leader_gone: bool = False, group: bool = True, procs=None) -> dict:
    """A shell cell's processes: its session's and its process group's (pid -> name);
    with ``group=False`` only those of its session outside its group.

    Once the shell is reaped its pid is not reused while its group or session has a member
    (the kernel holds the id), so a live process with that pid means nothing is left."""
    procs = table() if procs is None else procs
    if leader_gone and leader in procs:
        return {}
    if not group:
        return {p: v[4] for p, v in procs.items() if v[2] == leader and v[1] != leader}
    return {p: v[4] for p, v in procs.items() if leader in (v[1], v[2])}


def of_python(worker: int, since: tuple, worker_gone: bool = False, procs=None) -> dict:
    """A Python cell's processes (pid -> name): of the interpreter's session, started
    after ``since`` (a ``mark()``), not under a process that was there before."""
    procs = table() if procs is None else procs
    if worker_gone and worker in procs:
        return {}  # the id was reused: the dead interpreter's session is empty (of_shell)
    mine = {}
    for pid, info in procs.items():
        if pid == worker or info[2] != worker or not started_since(pid, info[3], since):
            continue
        parent, seen = info[0], 0
        while parent in procs and parent != worker and seen < 64:
            up = procs[parent]
            if up[2] == worker and not started_since(parent, up[3], since):
                break  # an earlier cell's process started it
            parent, seen = up[0], seen + 1
        else:
            mine[pid] = info[4]
    return mine


def send(pids, signum: int, spare=()) -> None:
    """Signal each process that is still there (never one of ``spare``)."""
    for pid in pids:
        if pid in spare or pid <= 1:
            continue
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def kill_all(find, spare=(), rounds: int = 5) -> list:
    """SIGKILL what ``find()`` lists, again while it lists more (a fork in between); the
    names of the processes killed."""
    killed = []
    for _ in range(rounds):
        found = {p: n for p, n in find().items() if p not in spare}
        if not found:
            break
        send(found, signal.SIGKILL, spare)
        killed.extend(found.values())
        time.sleep(0.01)
    return killed
