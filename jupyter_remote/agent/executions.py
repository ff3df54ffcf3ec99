"""Executions: one command, run once, its output on disk before anyone reads it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field

from docker.errors import DockerException

from jupyter_remote.agent.containers import ContainerFactory, OomWatcher
from jupyter_remote.agent.deadlines import Deadline, Deadlines
from jupyter_remote.agent.eventlog import EventLog, encode
from jupyter_remote.agent.execio import exec_output
from jupyter_remote.agent.expiry import expiry_label
from jupyter_remote.agent.processes import kill_tree
from jupyter_remote.agent.index import ExecutionIndex
from jupyter_remote.agent.specs import (
    ContainerSpec,
    check_id,
    command_of,
    container_spec,
    safe_name,
)
from jupyter_remote.agent.state import read_json, write_json
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound
from jupyter_remote.protocol.bodies import ExecutionBody
from jupyter_remote.protocol.queries import PageQuery, page
from jupyter_remote.protocol import records
from jupyter_remote.agent.runner_client import (
    RunnerClient,
    RunnerError,
    RunnerRefused,
    RunnerUnavailable,
)
from jupyter_remote.runner.runnerd import MAX_FORGET, incomplete_tail
from jupyter_remote.util.workers import Workers

log = logging.getLogger("jupyter_remote.agent")

FINAL = ("completed", "failed", "timed_out", "cancelled", "lost")
FORGET_AFTER = 2.0  # seconds a finished cell's spool waits for the runner's next cell
_RUNNER_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def runner_id(execution_id: str) -> str:
    """The id a cell has in the runner (which takes no ':'): the execution id when it can."""
    if _RUNNER_ID_RE.match(execution_id):
        return execution_id
    return "x-" + hashlib.sha256(execution_id.encode()).hexdigest()[:40]


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
        }


class ExecutionManager:
    """Runs executions in session or fresh containers and keeps their records and logs."""

    def __init__(
        self,
        *,
        data_dir: str,
        node_id: str,
        factory: ContainerFactory,
        oom: OomWatcher,
        sessions,
        limits,
        default_image: str,
        default_timeout: float | None,
        kill_grace: float,
    ) -> None:
        self.root = os.path.join(data_dir, "executions")
        os.makedirs(self.root, exist_ok=True)
        self.node_id = node_id
        self.factory = factory
        self.api = factory.api
        self.oom = oom
        self.sessions = sessions
        self.limits = limits
        self.default_image = default_image
        self.default_timeout = default_timeout
        self.kill_grace = kill_grace
        self.running: dict[str, Execution] = {}
        self._claim_lock = threading.Lock()
        self.removing: set[threading.Thread] = set()  # fresh containers' removals under way
        self.pool = None  # a WarmPool for fresh executions, set by the Agent
        self.loop: asyncio.AbstractEventLoop | None = None  # for logs of resumed executions
        self.deadlines = Deadlines()  # timeouts
        self.workers = Workers("exec")  # the threads executions run on
        # per runner directory: ids of finished cells whose spool the runner may drop, sent
        # with that runner's next cell (one connection per cell, not two)
        self._to_forget: dict[str, list[str]] = {}
        self.index = ExecutionIndex(self.root)
        self.ledger = None  # the Ledger of expired ids, set by the Agent

    # -- paths and records -------------------------------------------------------------
    def _dir(self, execution_id: str) -> str:
        return os.path.join(self.root, execution_id)

    def log_path(self, execution_id: str) -> str:
        return os.path.join(self._dir(execution_id), "events.ndjson")

    def _save(self, ex: Execution) -> None:
        write_json(os.path.join(self._dir(ex.execution_id), "meta.json"), ex.to_json())

    def get(self, execution_id: str) -> dict:
        """The model of a running or finished execution, from memory or from disk."""
        check_id(execution_id, "execution_id")
        if execution_id in self.running:
            return self.running[execution_id].to_json()
        meta = read_json(os.path.join(self._dir(execution_id), "meta.json"))
        if meta is None:
            if self.ledger is not None:
                self.ledger.refuse("execution", execution_id, "execution")
            raise NotFound(
                f"no execution {execution_id!r} on node {self.node_id!r}",
                reason="execution_not_found",
            )
        return meta

    def list(self, query: PageQuery) -> dict:
        """One page of executions, newest first by (started_at, id), and the next cursor."""
        running = dict(self.running)
        keys = [
            {"execution_id": k, "started_at": d.started_at}
            for k, d in self.index.refresh(running).items()
        ]
        keys += [{"execution_id": k, "started_at": ex.started_at} for k, ex in running.items()]
        got = page(keys, query, "started_at", "execution_id")
        return {
            **got,
            "items": [m for k in got["items"] if (m := self.get_or_none(k["execution_id"]))],
        }

    def expire(self, execution_ids: list[str]) -> int:
        """Retention: remove finished records and logs, their ids into the ledger first."""
        records = {}
        for eid in execution_ids:
            meta = read_json(os.path.join(self._dir(eid), "meta.json"))
            if eid not in self.running and meta and meta.get("status") in FINAL:
                records[eid] = meta
        if records:
            self.ledger.add("execution", records)
        for eid in records:
            trash = os.path.join(self.root, f".expired-{eid}")
            try:
                os.rename(self._dir(eid), trash)  # atomic: no half-removed record is read
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
            self.index.forget(eid)
        return len(records)

    def get_or_none(self, execution_id: str) -> dict | None:
        try:
            return self.get(execution_id)
        except (NotFound, BadRequest):
            return None

    def running_count(self) -> int:
        return len(self.running)

    # -- starting ----------------------------------------------------------------------
    def parse(self, body: ExecutionBody) -> Execution:
        """Turn a typed request into an execution; nothing is created or run here."""
        execution_id = body.execution_id
        argv, stdin = command_of(body)
        runner_kind = None
        if body.command is not None:
            runner_kind = "shell"
        elif body.python is not None and body.interpreter in (None, "python3"):
            runner_kind = "python"  # another interpreter named: a docker exec of it
        timeout = body.timeout if body.timeout is not None else self.default_timeout
        env = dict(body.env or {})
        workdir = body.workdir
        session_id = body.session_id
        if session_id is not None:
            session = self.sessions.get(session_id)
            # the runner takes the cell's text itself; the exec path feeds it on stdin
            how = (
                dict(
                    path="runner",
                    runner_kind=runner_kind,
                    code=body.command if runner_kind == "shell" else body.python,
                    runner_dir=session.runner_dir,
                )
                if runner_kind and session.path == "runner"
                else dict(stdin=stdin)
            )
            return Execution(
                execution_id,
                self.node_id,
                argv,
                "session",
                session.spec.image,
                session_id=session_id,
                container_id=session.container_id,
                timeout=timeout,
                env=env,
                workdir=workdir,
                input_bytes=len(stdin or b""),
                **how,
            )
        spec = container_spec(body, self.limits, self.default_image)
        return Execution(
            execution_id,
            self.node_id,
            argv,
            "fresh",
            spec.image,
            timeout=timeout,
            env=env,
            workdir=workdir,
            spec=spec,
            stdin=stdin,
            input_bytes=len(stdin or b""),
            runner_kind=runner_kind,
            code=(body.command if runner_kind == "shell" else body.python) if runner_kind else None,
        )

    def claim(self, ex: Execution) -> None:
        """Reserve the id on disk; a second request with the same id gets 409, ever."""
        with self._claim_lock:
            gone = self.ledger.get("execution", ex.execution_id) if self.ledger else None
            if gone is not None:
                raise Conflict(
                    f"execution {ex.execution_id!r} ran on node {self.node_id!r} and its record "
                    "expired; an id is never run twice",
                    reason="duplicate_execution",
                    execution={"execution_id": ex.execution_id, "expired": True, **gone},
                )
            try:
                os.mkdir(self._dir(ex.execution_id))
            except FileExistsError:
                first = self.get_or_none(ex.execution_id) or {"status": "starting"}
                raise Conflict(
                    f"execution {ex.execution_id!r} was already received by node "
                    f"{self.node_id!r} (status {first['status']}); it is never run twice",
                    reason="duplicate_execution",
                    execution=first,
                ) from None
            self.running[ex.execution_id] = ex

    def start(self, ex: Execution, loop: asyncio.AbstractEventLoop) -> Execution:
        """Open its log, record it, and run it on a thread of its own."""
        ex.log = EventLog(self.log_path(ex.execution_id), loop)
        self._save(ex)
        if ex.session_id:
            self.sessions.begin(ex.session_id)
        self.workers.run(lambda: self._run(ex), f"exec-{ex.execution_id}")
        return ex

    # -- running -----------------------------------------------------------------------
    def _run(self, ex: Execution) -> None:
        t0 = time.monotonic()
        timer = None
        try:
            if ex.mode == "fresh" and ex.runner_kind and self.pool is not None:
                taken = self.pool.take(ex.spec, ex.timeout)
                if taken is not None:
                    ex.container_id, ex.runner_dir = taken
                    ex.path = "runner"
            if ex.mode == "fresh" and ex.path == "exec":
                ex.container_id = self.factory.create_keeper(
                    ex.spec,
                    name=f"jr-{safe_name(self.node_id)}-x-{safe_name(ex.execution_id)}",
                    kind="fresh",
                    label_extra={
                        "execution": ex.execution_id,
                        **expiry_label(self._fresh_lifetime(ex)),
                    },
                )
            ex.log.append(
                {
                    "event": "started",
                    "execution_id": ex.execution_id,
                    "node_id": self.node_id,
                    "mode": ex.mode,
                    "image": ex.image,
                    "session_id": ex.session_id,
                    "container_id": ex.container_id,
                    "started_at": ex.started_at,
                }
            )
            oom_before = self.oom.count(ex.container_id)
            if ex.path == "runner":
                ex.stdin = None
                timer = self._run_runner(ex, oom_before)
                return
            with ex.lock:
                if ex.kill_reason:
                    raise _Killed()
                ex.exec_id = self.api.exec_create(
                    ex.container_id,
                    ex.argv,
                    stdin=True,
                    environment=ex.env or None,
                    workdir=ex.workdir,
                )["Id"]
            timer = self._arm_timer(ex, ex.timeout)
            stdin, ex.stdin = ex.stdin, None
            self._pump(ex, exec_output(self.api, ex.exec_id, stdin))
            ex.returncode = self._exit_code(ex.exec_id)
            self._classify(ex, oom_before)
        except _Killed:
            ex.returncode = -1
            self._classify(ex, 0)
        except _RunnerGone as exc:
            ex.returncode, ex.status = -1, "failed"
            ex.message = (
                f"cancelled ({ex.kill_reason}); {exc}"
                if ex.kill_reason
                else f"{exc} (node {self.node_id!r})"
            )
            if ex.kill_reason:
                ex.status, ex.cancelled = "cancelled", True
        except DockerException as exc:
            ex.returncode, ex.status = -1, "failed"
            ex.message = self._docker_failure(ex, exc)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the client gets an exit event
            log.exception("execution %s failed inside the agent", ex.execution_id)
            ex.returncode, ex.status = -1, "failed"
            ex.message = f"agent error on node {self.node_id!r}: {exc}"
        finally:
            if timer:
                timer.cancel()
            self._finish(ex, time.monotonic() - t0)

    # -- the runner path ---------------------------------------------------------------
    def _client(self, ex: Execution) -> RunnerClient:
        return RunnerClient(os.path.join(ex.runner_dir, "runner.sock"))

    def _arm_timer(self, ex: Execution, left: float | None) -> Deadline | None:
        if not ex.timeout:
            return None
        return self.deadlines.arm(left, lambda: self.kill(ex, "timeout"))

    def _run_runner(self, ex: Execution, oom_before: int, stream=None):
        """Send the cell to the runner once (or continue a `stream` attached after a
        restart), copy its events into the log, and classify its exit. Returns the timer."""
        client = self._client(ex)
        rid = runner_id(ex.execution_id)
        timer = None
        if stream is None:
            with ex.lock:
                if ex.kill_reason:
                    raise _Killed()
                code, ex.code = ex.code, None
                ex.runner_started = True
                forget = self._forgets(ex.runner_dir)
                try:
                    stream = client.run(
                        rid,
                        ex.runner_kind,
                        code,
                        env=ex.env or None,
                        workdir=ex.workdir,
                        forget=forget,
                    )
                except RunnerUnavailable as exc:
                    self._forget_later(ex.runner_dir, forget)
                    ex.runner_started = False
                    raise _RunnerGone(
                        f"the container's runner did not take the cell: {exc}"
                    ) from None
            timer = self._arm_timer(ex, ex.timeout)
        else:
            timer = self._arm_timer(ex, (ex.timeout or 0) - (time.time() - ex.started_at))
        end = self._pump_runner(ex, stream, client, rid)
        ex.returncode = end.get("returncode")
        if ex.returncode is None:
            ex.returncode = -1
        status = end.get("status")
        if ex.kill_reason and ex.returncode == 137 and ex.kill_signal != "SIGKILL":
            ex.escalated = True
        if ex.kill_reason or status in ("completed", "failed"):
            self._classify(ex, oom_before)
            if ex.status == "failed" and not ex.message and end.get("message"):
                ex.message = end["message"]
        else:
            ex.status = status if status in FINAL else "failed"
            ex.message = end.get("message")
            ex.timed_out = status == "timed_out"
            ex.cancelled = status == "cancelled"
        return timer

    def _pump_runner(self, ex: Execution, stream, client: RunnerClient, rid: str) -> dict:
        """Runner events into the log until the exit event; a broken connection is picked
        up again with attach at the spool offset reached (the cell itself is never re-sent)."""
        # The runner's spool is the log's own format (runner/records.py), so its output
        # records and display and notice lines are appended as they came, undecoded and a
        # whole read at a time; only its own started and exit lines are not copied: the
        # agent writes its own.
        append = ex.log.append_raw
        broken = 0
        while True:
            try:
                for block in stream.blocks():
                    if block.startswith(b'{"event":"started"'):
                        block = block[block.index(b"\n") + 1 :]
                    if _escalated(block):  # heads and plain lines only: output is skipped
                        ex.escalated = True
                    if block:
                        append(block)
                if stream.exit is not None:
                    return stream.exit
                raise RunnerUnavailable("the runner's stream ended without an exit event")
            except RunnerUnavailable as exc:
                broken += 1
                offset = stream.offset
                stream.close()
                if broken > 3:
                    raise _RunnerGone(f"lost the container's runner: {exc}") from None
                time.sleep(0.1 * broken)
                try:
                    stream = client.attach(rid, offset)
                except RunnerError as again:
                    raise _RunnerGone(f"lost the container's runner: {again}") from None
            except RunnerRefused as exc:
                raise _RunnerGone(f"the runner refused: {exc}") from None

    def _fresh_lifetime(self, ex: Execution) -> float:
        """How long a fresh container may outlive a dead agent: its command's whole run
        (a running command is never swept anyway), then some slack."""
        return (ex.timeout or 24 * 3600) + self.kill_grace + 300

    def _pump(self, ex: Execution, stream) -> None:
        """Copy the exec stream into the log as output records (runner/records.py), each cut
        at a character boundary (a frame may end inside one)."""
        held = {"stdout": b"", "stderr": b""}
        append = ex.log.append_raw

        def put(kind: str, data: bytes) -> None:
            if held[kind]:
                data = held[kind] + data
            cut = incomplete_tail(data)
            held[kind], data = (data[-cut:], data[:-cut]) if cut else (b"", data)
            if data:
                append(records.output_record(kind, data))

        for out, err in stream:
            if out:
                put("stdout", out)
            if err:
                put("stderr", err)
        for kind, rest in held.items():
            if rest:  # a character torn at the very end: as it is (read as U+FFFD)
                append(records.output_record(kind, rest))

    def _exit_code(self, exec_id: str) -> int:
        """The exec's real exit code; Docker may close the stream a moment before it has it."""
        deadline = time.monotonic() + 10
        while True:
            state = self.api.exec_inspect(exec_id)
            if state.get("ExitCode") is not None and not state.get("Running"):
                return state["ExitCode"]
            if time.monotonic() > deadline:
                raise RuntimeError("Docker did not report the command's exit code within 10 s")
            time.sleep(0.02)

    def _how_it_ended(self, ex: Execution) -> str:
        """What the signal did, in words: the command's own exit, or SIGKILL after the grace."""
        sig = ex.kill_signal or "SIGTERM"
        if ex.exec_id is None and not ex.runner_started:
            return "it was stopped before it started"
        if ex.escalated:
            return (
                f"{sig} was sent; still running after the {self.kill_grace:g} s grace, "
                f"it was killed with SIGKILL (returncode {ex.returncode})"
            )
        return f"{sig} was sent; the command exited with {ex.returncode}"

    def _classify(self, ex: Execution, oom_before: int) -> None:
        rc = ex.returncode
        if ex.kill_reason == "timeout":
            ex.status, ex.timed_out = "timed_out", True
            ex.message = f"timed out after {ex.timeout:g} s; {self._how_it_ended(ex)}"
        elif ex.kill_reason:
            ex.status, ex.cancelled = "cancelled", True
            ex.message = f"cancelled ({ex.kill_reason}); {self._how_it_ended(ex)}"
        elif rc == 137 and self.oom.wait_for_more(ex.container_id, oom_before, 1.0):
            ex.status, ex.oom_killed = "failed", True
            ex.message = "killed by the kernel: out of memory (the container's memory limit)"
        else:
            ex.status = "completed" if rc == 0 else "failed"

    def _docker_failure(self, ex: Execution, exc: DockerException) -> str:
        if ex.kill_reason:
            return f"cancelled ({ex.kill_reason})"
        return f"Docker error on node {self.node_id!r}: {exc}"

    def _finish(self, ex: Execution, elapsed: float) -> None:
        ex.duration = round(elapsed, 6)
        ex.finished_at = time.time()
        with ex.lock:
            ex.done.set()
        ex.log.append(
            {
                "event": "exit",
                "returncode": ex.returncode,
                "status": ex.status,
                "duration": ex.duration,
                "timed_out": ex.timed_out,
                "cancelled": ex.cancelled,
                "oom_killed": ex.oom_killed,
                "message": ex.message,
            }
        )
        ex.log.close()
        self._save(ex)
        if ex.mode == "fresh" and ex.container_id:
            # After the exit event, not before it: removing a container is ~50-100 ms of
            # Docker's time the client need not wait for. Never lost: a removal that fails
            # (or an agent that dies first) leaves the container to the expiry sweep and to
            # the next start's clean-up of this node's fresh containers.
            self._remove_later(ex.container_id, ex.runner_dir)
        self.running.pop(ex.execution_id, None)
        if ex.session_id:
            self.sessions.end(ex.session_id)
        if ex.path == "runner" and ex.mode == "session" and ex.runner_started:
            self._forget_later(ex.runner_dir, [runner_id(ex.execution_id)])

    def _remove_later(self, container_id: str, runner_dir: str | None) -> None:
        def remove() -> None:
            try:
                self.factory.remove(container_id, runner_dir)
            except DockerException as exc:
                log.warning("could not remove container %s: %s", container_id, exc)
            finally:
                with self._claim_lock:
                    self.removing.discard(thread)

        thread = threading.Thread(target=remove, daemon=True, name=f"rm-{container_id[:12]}")
        with self._claim_lock:  # started before it is listed: wait_removals joins what it lists
            thread.start()
            self.removing.add(thread)

    def wait_removals(self, timeout: float = 30.0) -> None:
        """Let fresh containers' removals in the background finish (agent stop)."""
        deadline = time.monotonic() + timeout
        with self._claim_lock:
            pending = list(self.removing)
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _forget_later(self, runner_dir: str, ids: list[str]) -> None:
        """All of these cells' output is on our disk now: their spools may go, with the
        runner's next cell, or by themselves if none comes within FORGET_AFTER seconds."""
        with self._claim_lock:
            pending = self._to_forget.setdefault(runner_dir, [])
            first = not pending
            pending.extend(ids)
            del pending[:-MAX_FORGET]
        if first:
            self.deadlines.arm(FORGET_AFTER, lambda: self._forget_now(runner_dir))

    def _forget_now(self, runner_dir: str) -> None:
        """The runner's forget op for what no next cell took along (the runner may still
        count a cell as running for a moment after its exit line)."""
        client = RunnerClient(os.path.join(runner_dir, "runner.sock"))
        for rid in self._forgets(runner_dir):
            for _ in range(50):
                try:
                    client.forget(rid)
                    break
                except RunnerRefused as exc:
                    if exc.reason != "running":
                        break
                    time.sleep(0.02)
                except RunnerError as exc:
                    log.debug("forget %s: %s", rid, exc)
                    return

    def _forgets(self, runner_dir: str) -> list[str]:
        with self._claim_lock:
            return self._to_forget.pop(runner_dir, [])

    # -- stopping ----------------------------------------------------------------------
    def cancel(
        self, execution_id: str, reason: str = "cancel requested", sig: str = "SIGTERM"
    ) -> dict:
        """Kill a running execution; finished ones are left as they are (409)."""
        ex = self.running.get(execution_id)
        if ex is None:
            model = self.get(execution_id)
            raise Conflict(
                f"execution {execution_id!r} is not running (status {model['status']})",
                reason="not_running",
                execution=model,
            )
        self.kill(ex, reason, getattr(signal, sig))
        ex.done.wait(self.kill_grace * 2 + 5)
        return ex.to_json()

    def kill(self, ex: Execution, reason: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the command's processes; the run thread then records why it ended."""
        with ex.lock:
            if ex.done.is_set():
                return
            if ex.kill_reason is None:
                ex.kill_reason, ex.kill_signal = reason, signal.Signals(sig).name
            exec_id = ex.exec_id
            started = ex.runner_started
        if ex.path == "runner":
            if started:
                self._signal_runner(ex, signal.Signals(sig).name)
            return  # else the run thread sees kill_reason before it sends the cell
        if exec_id is None:
            return  # the run thread sees kill_reason before it execs
        try:
            pid = self.api.exec_inspect(exec_id).get("Pid")
        except DockerException:
            pid = None
        if not pid or not kill_tree(
            pid, self.kill_grace, sig, on_escalate=lambda: setattr(ex, "escalated", True)
        ):
            if ex.mode == "fresh" and ex.container_id:
                self.factory.remove(ex.container_id)

    def _signal_runner(self, ex: Execution, name: str) -> None:
        """The runner's `signal` op: the cell's process group (shell) or a KeyboardInterrupt
        (Python), SIGKILL after the grace. No host PID needed."""
        client = self._client(ex)
        rid = runner_id(ex.execution_id)
        deadline = time.monotonic() + 5
        while not ex.done.is_set():
            try:
                client.signal(rid, name, grace=self.kill_grace)
                return
            except RunnerRefused as exc:
                # unknown_id: the run request is on its way; not_running: it just ended
                if exc.reason != "unknown_id" or time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            except RunnerUnavailable as exc:
                log.warning("could not signal %s: %s", ex.execution_id, exc)
                if ex.mode == "fresh" and ex.container_id:
                    self.factory.remove(ex.container_id, ex.runner_dir)
                return

    def kill_session(self, session_id: str, reason: str) -> None:
        for ex in list(self.running.values()):
            if ex.session_id == session_id:
                self.kill(ex, reason)
                ex.done.wait(self.kill_grace * 2 + 5)

    # -- after a restart ---------------------------------------------------------------
    def recover(self) -> int:
        """Close the records of executions the agent was running when it died."""
        lost = 0
        for name in os.listdir(self.root):
            meta = read_json(os.path.join(self._dir(name), "meta.json"))
            if not meta or meta.get("status") in FINAL:
                continue
            try:
                if self._resume(name, meta):
                    continue
            except Exception:  # noqa: BLE001 - cannot resume: it is lost, as before
                log.exception("could not re-attach to execution %s", name)
            meta.update(
                status="lost",
                returncode=-1,
                finished_at=time.time(),
                message=f"the agent on node {self.node_id!r} stopped while this "
                "execution ran; its output up to then is in the log",
            )
            self._close_log(
                self.log_path(name),
                {"event": "exit", "returncode": -1, "status": "lost", "message": meta["message"]},
            )
            write_json(os.path.join(self._dir(name), "meta.json"), meta)
            lost += 1
        return lost

    @staticmethod
    def _close_log(path: str, event: dict) -> None:
        """End a log its writer left: after its last whole record (a torn one is cut)."""
        with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o640), "rb+") as fh:
            try:
                whole, _ = records.scan_file(fh)
            except records.BadRecord:
                whole = fh.seek(0, os.SEEK_END)
            fh.truncate(whole)
            fh.seek(whole)
            fh.write(encode(event))

    def _resume(self, name: str, meta: dict) -> bool:
        """Re-attach to a session cell the runner kept running (or finished) while the
        agent was down: the log continues from the runner's spool, nothing twice."""
        # Where it would be is known without a record of its own: the session's runner
        # directory, the id the runner knows it by; a spool there means it was sent.
        session = self.sessions.sessions.get(meta.get("session_id") or "")
        if session is None or session.path != "runner":
            return False
        rid = runner_id(meta["execution_id"])
        spool = os.path.join(session.runner_dir, "spool", f"{rid}.ndjson")
        path = self.log_path(name)
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
            write_json(os.path.join(self._dir(name), "meta.json"), meta)
            return True
        have, kept, offset = whole - first, 0, 0
        with open(spool, "rb") as fh:
            for length, line in records.scan(fh):
                if line is not None and line.startswith(b'{"event":"exit"'):
                    break
                # as _pump_runner copies them: every record but the runner's started, as is
                taken = 0 if line is not None and line.startswith(b'{"event":"started"') else length
                if kept + taken > have:
                    break
                kept += taken
                offset += length
        if first + kept != size:  # a torn last record: cut it, the attach sends it again
            log.warning("execution %s: log cut from %d to %d bytes", name, size, first + kept)
            os.truncate(path, first + kept)
        ex = Execution(
            meta["execution_id"],
            self.node_id,
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
        )
        stream = self._client(ex).attach(rid, offset)
        ex.log = EventLog(path, self.loop)
        self.running[ex.execution_id] = ex
        self.sessions.begin(session.session_id)
        threading.Thread(
            target=self._resumed, args=(ex, stream), daemon=True, name=f"exec-{name}"
        ).start()
        log.info("execution %s: re-attached to the runner at spool offset %d", name, offset)
        return True

    def _resumed(self, ex: Execution, stream) -> None:
        timer = None
        try:
            timer = self._run_runner(ex, self.oom.count(ex.container_id), stream)
        except _RunnerGone as exc:
            ex.returncode, ex.status, ex.message = -1, "lost", str(exc)
        except Exception as exc:  # noqa: BLE001 - the client gets an exit event whatever broke
            log.exception("execution %s failed inside the agent", ex.execution_id)
            ex.returncode, ex.status = -1, "failed"
            ex.message = f"agent error on node {self.node_id!r}: {exc}"
        finally:
            if timer:
                timer.cancel()
            self._finish(ex, time.time() - ex.started_at)


def _escalated(block: bytes) -> bool:
    """A notice in these records says the runner killed a cell that outlived its grace."""
    return any(
        line.startswith(b'{"event":"notice"') and b"did not stop within" in line
        for line in records.plain_lines(block)
    )


class _RunnerGone(Exception):
    """The runner cannot be reached (the container died) or refused the cell."""


class _Killed(Exception):
    """Cancelled before the command was started."""
