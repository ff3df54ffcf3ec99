"""Signals: cancelling and timing out cells (a soft signal, a hard kill after a grace),
the ``signal`` request, and stopping every cell when the runner itself is stopped.

A cell's ``engine`` delivers its signals: the shell signals the cell's process group, the
Python worker interrupts or kills its interpreter, both signal every process the cell
started (procs.py): ``interrupt(cell, signum)``, ``kill(cell, why)``, ``processes(cell)``,
``sweep(cell)``, ``soft_signal``. Once a stopped cell's own shell or code has ended, its
exit waits (``settle``) until nothing of it is left: what still runs when the grace is over
is killed, as the exec path's process tree is (agent/processes.py).
"""

from __future__ import annotations

import signal
import time

try:
    from .children import killpg_quietly
    from .wire import Refused, check_id
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    from children import killpg_quietly
    from wire import Refused, check_id

CANCEL_SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGQUIT")
DEFAULT_GRACE = 2.0  # seconds between the soft and the hard stop of a timed-out cell
STOP_GRACE = 0.5  # on SIGTERM, between TERM and KILL of the cells' process groups
SETTLE_POLL = 0.05  # how often a stopped cell looks for its processes before its exit


def signal_number(name) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        return int(signal.Signals(name))
    text = str(name).upper()
    if not text.startswith("SIG"):
        text = "SIG" + text
    return int(getattr(signal.Signals, text))


def stop(cell, reason: str, signum=None, grace=None) -> None:
    """Cancel or time out a cell: the soft signal now, to every process of the cell; after
    ``grace``, SIGKILL to whatever is left of it (its exit waits for that: settle)."""
    if signum is None:
        signum = cell.engine.soft_signal
    with cell.sweep_lock:  # a cell that ends now either is stopped or ends first (_end)
        if cell.done.is_set():
            return
        if reason == "timed_out" or cell.reason is None:
            cell.reason = reason
        if grace is not None and signum != signal.SIGKILL and cell.sweep_at is None:
            cell.sweep_at = time.monotonic() + float(grace)
            cell.later(float(grace), lambda: hard_kill(cell, grace))
    cell.engine.interrupt(cell, signum)
    if signum == signal.SIGKILL:
        with cell.sweep_lock:
            cell.sweep_at = time.monotonic()
            cell.engine.sweep(cell)
            cell.swept.set()


def time_out_after(cell, seconds: float) -> None:
    """A cell's own time limit: stopped as ``timed_out`` once it has run ``seconds``."""
    cell.later(seconds, lambda: stop(cell, "timed_out", None, DEFAULT_GRACE))


def hard_kill(cell, grace) -> None:
    """The grace is over: SIGKILL to the processes the cell still has; a Python cell still
    running loses its interpreter too (the engine says so in a notice)."""
    with cell.sweep_lock:  # settle sees the cell's processes before it, or its notice
        if cell.swept.is_set() or cell.done.is_set():
            return  # (a cell that ended meanwhile has nothing left: its successors' are not its)
        try:
            killed = cell.engine.sweep(cell)
            if not cell.ran.is_set():
                cell.engine.kill(
                    cell,
                    f"the cell did not stop within {grace:g} s; the Python interpreter was killed",
                )
            elif killed and grace:
                names = ", ".join(sorted(set(killed)))
                what = "1 process" if len(killed) == 1 else f"{len(killed)} processes"
                cell.emit(
                    {
                        "event": "notice",
                        "message": f"{what} of the cell did not stop within {grace:g} s and "
                        f"{'was' if len(killed) == 1 else 'were'} killed (SIGKILL): {names}",
                    }
                )
        finally:
            cell.swept.set()


def settle(cell) -> None:
    """Before a stopped cell's exit: wait until every process it started has ended, or
    for the hard kill at the end of the grace (SIGKILL to what is left). A stop without a
    grace does not wait."""
    if cell.sweep_at is None:
        return
    while True:
        with cell.sweep_lock:
            if cell.swept.is_set() or not cell.engine.processes(cell):
                return
        cell.swept.wait(min(SETTLE_POLL, max(0.0, cell.sweep_at - time.monotonic()) + 0.01))


def op_signal(cells, req: dict) -> dict:
    """``{"op":"signal","id","signal","grace"}``: a cancel signal stops the cell (with a
    hard kill after ``grace``), any other is delivered as it is."""
    cid = check_id(req.get("id"))
    try:
        signum = signal_number(req.get("signal", "SIGINT"))
    except (AttributeError, ValueError, TypeError):
        raise Refused("bad_request", f"unknown signal {req.get('signal')!r}") from None
    grace = req.get("grace")
    if grace is not None and (not isinstance(grace, (int, float)) or grace < 0):
        raise Refused("bad_request", "grace must be a non-negative number of seconds")
    cell = cells.get(cid)
    if cell is None:
        raise cells.known_not_running(cid)
    name = signal.Signals(signum).name
    if name in CANCEL_SIGNALS:
        stop(cell, "cancelled", signum, grace)
    else:
        cell.engine.interrupt(cell, signum)
    return {"ok": True, "id": cid, "signal": name, "pid": cell.pid}


def stop_all(cells: list, python) -> None:
    """The runner is stopping: SIGTERM to every running cell's process group and to the
    Python worker's, SIGKILL ``STOP_GRACE`` later, and a ``cancelled`` exit for each cell."""
    for cell in cells:
        cell.reason = "cancelled"
    groups = [c.pid for c in cells if c.kind == "shell" and c.pid]
    if python.child is not None and python.alive:
        groups.append(python.child.pid)
    for pgid in groups:
        killpg_quietly(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for cell in cells:
        cell.done.wait(max(0.0, deadline - time.monotonic()))
    for pgid in groups:
        killpg_quietly(pgid, signal.SIGKILL)
    for cell in cells:
        cell.emit(
            {
                "event": "exit",
                "returncode": 128 + signal.SIGTERM,
                "status": "cancelled",
                "message": "the runner was stopped",
            }
        )
