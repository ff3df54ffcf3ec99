"""The ExecutionManager: starts each execution once on its path (runner or exec), times
it out, cancels it, and closes its record; the records themselves are its ExecutionStore."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from dataclasses import replace

from docker.errors import DockerException

from jupyter_remote.agent.containers import ContainerFactory
from jupyter_remote.agent.deadlines import Deadline, Deadlines
from jupyter_remote.agent.eventlog import EventLog
from jupyter_remote.agent.executions import exec_path, outcome, recovery
from jupyter_remote.agent.executions.plan import plan
from jupyter_remote.agent.executions.record import Execution, Killed, RunnerGone, runner_id
from jupyter_remote.agent.executions.runner_path import RunnerPath
from jupyter_remote.agent.executions.store import ExecutionStore
from jupyter_remote.agent.expiry import expiry_label
from jupyter_remote.agent.oom import OomWatcher
from jupyter_remote.agent.specs import safe_name
from jupyter_remote.protocol.bodies import ExecutionBody
from jupyter_remote.protocol.errors import Conflict, RemoteError
from jupyter_remote.util.workers import Workers

log = logging.getLogger("jupyter_remote.agent")


class ExecutionManager(ExecutionStore):
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
        super().__init__(data_dir, node_id)
        self.factory = factory
        self.api = factory.api
        self.oom = oom
        self.sessions = sessions
        self.limits = limits
        self.default_image = default_image
        self.default_timeout = default_timeout
        self.kill_grace = kill_grace
        self.removing: set[threading.Thread] = set()  # fresh containers' removals under way
        self.pool = None  # a WarmPool for fresh executions, set by the Agent
        self.loop: asyncio.AbstractEventLoop | None = None  # for logs of resumed executions
        self.deadlines = Deadlines()  # timeouts
        self.workers = Workers("exec")  # the threads executions run on
        self.runner = RunnerPath(self.deadlines, kill_grace)

    def parse(self, body: ExecutionBody) -> Execution:
        """Turn a typed request into an execution; nothing is created or run here."""
        return plan(self, body)

    @property
    def gpus(self):
        """The node's GpuPool (the sessions' one)."""
        return self.sessions.gpus

    @staticmethod
    def holder(execution_id: str) -> str:
        """Who holds a fresh container's GPUs in the GpuPool."""
        return f"execution:{execution_id}"

    def claim(self, ex: Execution) -> None:
        """Reserve the id (ExecutionStore.claim) and, for a fresh container asking for GPUs,
        the GPUs: all or none, before anything runs; 409 `gpus_unavailable` otherwise."""
        wanted = ex.mode == "fresh" and ex.spec is not None and ex.spec.gpu_request is not None
        if wanted:
            ex.spec = replace(
                ex.spec, gpus=self.gpus.take(self.holder(ex.execution_id), ex.spec.gpu_request)
            )
        try:
            super().claim(ex)
        except BaseException:
            if wanted:
                self.gpus.release(self.holder(ex.execution_id))
            raise

    def start(self, ex: Execution, loop: asyncio.AbstractEventLoop) -> Execution:
        """Open its log, record it, and run it on a thread of its own."""
        ex.log = EventLog(self.log_path(ex.execution_id), loop)
        self.save(ex)
        if ex.session_id:
            self.sessions.begin(ex.session_id)
        self.workers.run(lambda: self._run(ex), f"exec-{ex.execution_id}")
        return ex

    def recover(self) -> int:
        """Close the records of executions the agent was running when it died."""
        return recovery.recover(self)

    # -- running -----------------------------------------------------------------------
    def _run(self, ex: Execution) -> None:
        t0 = time.monotonic()
        timer = None
        try:
            self._place(ex)
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
                timer = self.run_on_runner(ex, oom_before)
                return
            timer = exec_path.run(self.api, ex, self.arm_timer)
            outcome.classify(ex, self.oom, oom_before, self.kill_grace)
        except Killed:
            ex.returncode = -1
            outcome.classify(ex, self.oom, 0, self.kill_grace)
        except RunnerGone as exc:
            outcome.runner_gone(ex, exc, self.node_id)
        except DockerException as exc:
            outcome.docker_failed(ex, exc, self.node_id)
        except RemoteError as exc:  # a fresh container Docker would not start (an unknown user)
            ex.returncode, ex.status, ex.message = -1, "failed", exc.message
        except Exception as exc:  # noqa: BLE001 - whatever broke, the client gets an exit event
            log.exception("execution %s failed inside the agent", ex.execution_id)
            ex.returncode, ex.status = -1, "failed"
            ex.message = f"agent error on node {self.node_id!r}: {exc}"
        finally:
            if timer:
                timer.cancel()
            self.finish(ex, time.monotonic() - t0)

    def _place(self, ex: Execution) -> None:
        """A fresh execution's container: a warm one with a runner, else one of its own."""
        if ex.mode != "fresh":
            return
        if ex.runner_kind and self.pool is not None:
            taken = self.pool.take(ex.spec, ex.timeout)
            if taken is not None:
                ex.container_id, ex.runner_dir = taken
                ex.path = "runner"
                return
        # How long it may outlive a dead agent: its command's whole run (a running command
        # is never swept anyway), then some slack.
        lifetime = (ex.timeout or 24 * 3600) + self.kill_grace + 300
        ex.container_id = self.factory.create_keeper(
            self.factory.workdirs.cell_spec(ex.spec),
            name=f"jr-{safe_name(self.node_id)}-x-{safe_name(ex.execution_id)}",
            kind="fresh",
            label_extra={"execution": ex.execution_id, **expiry_label(lifetime)},
        )

    def arm_timer(self, ex: Execution, left: float | None) -> Deadline | None:
        if not ex.timeout:
            return None
        return self.deadlines.arm(left, lambda: self.kill(ex, "timeout"))

    def run_on_runner(self, ex: Execution, oom_before: int, stream=None) -> Deadline | None:
        """Send the cell to the runner once (or continue a `stream` attached after a
        restart), copy its events into the log, and classify its exit. Returns the timer."""
        if stream is None:
            stream = self.runner.send(ex)
            timer = self.arm_timer(ex, ex.timeout)
        else:
            timer = self.arm_timer(ex, (ex.timeout or 0) - (time.time() - ex.started_at))
        end = self.runner.pump(ex, stream)
        outcome.from_runner(ex, end, self.oom, oom_before, self.kill_grace)
        return timer

    def finish(self, ex: Execution, elapsed: float) -> None:
        """The exit event, then the record; the session and fresh container let go."""
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
        self.save(ex)
        if ex.mode == "fresh" and ex.container_id:
            # After the exit event, not before it: removing a container is ~50-100 ms of
            # Docker's time the client need not wait for. Never lost: a removal that fails
            # (or an agent that dies first) leaves the container to the expiry sweep and to
            # the next start's clean-up of this node's fresh containers.
            self.gpus.ending(self.holder(ex.execution_id))  # a take may wait for it
            self._remove_later(ex.container_id, ex.runner_dir, self.holder(ex.execution_id))
        elif ex.mode == "fresh":
            self.gpus.release(self.holder(ex.execution_id))  # no container was made
        self.running.pop(ex.execution_id, None)
        if ex.session_id:
            self.sessions.end(ex.session_id)
        if ex.path == "runner" and ex.mode == "session" and ex.runner_started:
            self.runner.forget_later(ex.runner_dir, [runner_id(ex.execution_id)])

    def _remove_later(self, container_id: str, runner_dir: str | None, holder: str) -> None:
        def remove() -> None:
            try:
                self.factory.remove(container_id, runner_dir)
            except DockerException as exc:
                log.warning("could not remove container %s: %s", container_id, exc)
            finally:
                # once the container is gone, not before; its command has ended either way
                self.gpus.release(holder)
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

    # -- stopping ----------------------------------------------------------------------
    def cancel(
        self, execution_id: str, reason: str = "cancel requested", sig: str = "SIGTERM"
    ) -> dict:
        """Kill a running execution; finished ones are left as they are (409)."""
        ex = self.running.get(execution_id)
        if ex is None or ex.done.is_set():  # done: its exit is out, it leaves `running` next
            model = ex.to_json() if ex is not None else self.get(execution_id)
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
            if started and not self.runner.signal(ex, signal.Signals(sig).name):
                if ex.mode == "fresh" and ex.container_id:
                    self.factory.remove(ex.container_id, ex.runner_dir)
            return  # else the run thread sees kill_reason before it sends the cell
        if exec_id is None:
            return  # the run thread sees kill_reason before it execs
        if not exec_path.kill(self.api, ex, exec_id, sig, self.kill_grace):
            if ex.mode == "fresh" and ex.container_id:
                self.factory.remove(ex.container_id)

    def kill_session(self, session_id: str, reason: str) -> None:
        for ex in list(self.running.values()):
            if ex.session_id == session_id:
                self.kill(ex, reason)
                ex.done.wait(self.kill_grace * 2 + 5)
