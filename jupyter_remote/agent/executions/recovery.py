"""After a restart: close the records of executions the agent was running when it died,
or re-attach to session cells their runner kept running (nothing is run twice)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from jupyter_remote.agent.eventlog import EventLog, encode
from jupyter_remote.agent.executions.record import Execution, RunnerGone, runner_id
from jupyter_remote.agent.executions.runner_path import client
from jupyter_remote.agent.state import read_json, write_json
from jupyter_remote.protocol import records
from jupyter_remote.protocol.common import EXECUTION_FINAL

log = logging.getLogger("jupyter_remote.agent")


def recover(mgr) -> int:
    """Re-attach what can be, mark the rest lost; how many were lost. `mgr`: the
    ExecutionManager."""
    lost = 0
    for name in os.listdir(mgr.root):
        meta = read_json(os.path.join(mgr.record_dir(name), "meta.json"))
        if not meta or meta.get("status") in EXECUTION_FINAL:
            continue
        try:
            if resume(mgr, name, meta):
                continue
        except Exception:  # noqa: BLE001 - cannot resume: it is lost, as before
            log.exception("could not re-attach to execution %s", name)
        meta.update(
            status="lost",
            returncode=-1,
            finished_at=time.time(),
            message=f"the agent on node {mgr.node_id!r} stopped while this "
            "execution ran; its output up to then is in the log",
        )
        close_log(
            mgr.log_path(name),
            {"event": "exit", "returncode": -1, "status": "lost", "message": meta["message"]},
        )
        write_json(os.path.join(mgr.record_dir(name), "meta.json"), meta)
        lost += 1
    return lost


def close_log(path: str, event: dict) -> None:
    """End a log its writer left: after its last whole record (a torn one is cut)."""
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o640), "rb+") as fh:
        try:
            whole, _ = records.scan_file(fh)
        except records.BadRecord:
            whole = fh.seek(0, os.SEEK_END)
        fh.truncate(whole)
        fh.seek(whole)
        fh.write(encode(event))


def resume(mgr, name: str, meta: dict) -> bool:
    """Re-attach to a session cell the runner kept running (or finished) while the agent
    was down: the log continues from the runner's spool, nothing twice."""
    # Where it would be is known without a record of its own: the session's runner
    # directory, the id the runner knows it by; a spool there means it was sent.
    session = mgr.sessions.sessions.get(meta.get("session_id") or "")
    if session is None or session.path != "runner":
        return False
    rid = runner_id(meta["execution_id"])
    spool = os.path.join(session.runner_dir, "spool", f"{rid}.ndjson")
    path = mgr.log_path(name)
    with open(path, "rb") as fh:
        first = len(fh.readline())  # the agent's own started line
        whole, last = records.scan_file(fh)
        size = fh.seek(0, os.SEEK_END)
    if not first or not os.path.exists(spool):
        return False  # never reached the runner (or already forgotten)
    if last is not None and last.startswith(b'{"event":"exit"'):
        # it ended; only the record was not saved
        end = json.loads(last)
        meta.update({k: end[k] for k in end if k in meta and k != "event"})
        meta["finished_at"] = meta.get("finished_at") or time.time()
        write_json(os.path.join(mgr.record_dir(name), "meta.json"), meta)
        return True
    kept, offset = _in_spool(spool, whole - first)
    if first + kept != size:  # a torn last record: cut it, the attach sends it again
        log.warning("execution %s: log cut from %d to %d bytes", name, size, first + kept)
        os.truncate(path, first + kept)
    ex = Execution(
        meta["execution_id"],
        mgr.node_id,
        meta.get("argv") or [],
        "session",
        meta["image"],
        session_id=session.session_id,
        container_id=meta.get("container_id"),
        timeout=meta.get("timeout"),
        started_at=meta.get("started_at") or time.time(),
        input_bytes=meta.get("input_bytes") or 0,
        path="runner",
        runner_dir=session.runner_dir,
        runner_started=True,
        tenant=meta.get("tenant"),
    )
    stream = client(ex).attach(rid, offset)
    ex.log = EventLog(path, mgr.loop)
    mgr.running[ex.execution_id] = ex
    mgr.sessions.begin(session.session_id)
    threading.Thread(
        target=_resumed, args=(mgr, ex, stream), daemon=True, name=f"exec-{name}"
    ).start()
    log.info("execution %s: re-attached to the runner at spool offset %d", name, offset)
    return True


def _in_spool(spool: str, have: int) -> tuple[int, int]:
    """How much of the `have` bytes of our log's records the spool accounts for, and the
    spool offset reached there (where the attach picks up)."""
    kept, offset = 0, 0
    with open(spool, "rb") as fh:
        for length, line in records.scan(fh):
            if line is not None and line.startswith(b'{"event":"exit"'):
                break
            # as RunnerPath.pump copies them: every record but the runner's started, as is
            taken = 0 if line is not None and line.startswith(b'{"event":"started"') else length
            if kept + taken > have:
                break
            kept += taken
            offset += length
    return kept, offset


def _resumed(mgr, ex: Execution, stream) -> None:
    timer = None
    try:
        timer = mgr.run_on_runner(ex, mgr.oom.count(ex.container_id), stream)
    except RunnerGone as exc:
        ex.returncode, ex.status, ex.message = -1, "lost", str(exc)
    except Exception as exc:  # noqa: BLE001 - the client gets an exit event whatever broke
        log.exception("execution %s failed inside the agent", ex.execution_id)
        ex.returncode, ex.status = -1, "failed"
        ex.message = f"agent error on node {mgr.node_id!r}: {exc}"
    finally:
        if timer:
            timer.cancel()
        mgr.finish(ex, time.time() - ex.started_at)
