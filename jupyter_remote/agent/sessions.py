"""Session containers: one long-lived container per notebook kernel, kept between commands."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from docker.errors import DockerException

from jupyter_remote.agent import labels
from jupyter_remote.agent.containers import ContainerFactory
from jupyter_remote.agent.expiry import expiry_label, write_lease
from jupyter_remote.agent.gpus import GpuPool
from jupyter_remote.agent.identity import hostname
from jupyter_remote.agent.runner_client import RunnerClient
from jupyter_remote.agent.specs import (
    ContainerSpec,
    Limits,
    check_id,
    container_spec,
    safe_name,
)
from jupyter_remote.agent.tenants import unknown
from jupyter_remote.agent.tombstones import Tombstones
from jupyter_remote.protocol.bodies import SessionBody
from jupyter_remote.protocol.errors import Conflict, NotFound

log = logging.getLogger("jupyter_remote.agent")


@dataclass
class Session:
    session_id: str
    container_id: str
    spec: ContainerSpec
    idle_timeout: float
    created_at: float = field(default_factory=time.time)
    last_used_at: float = field(default_factory=time.time)
    running: int = 0
    lease_until: float = 0.0  # the expiry other agents see (label, then lease file)
    runner_dir: str | None = None  # host dir of the runner's socket and spool; None: exec
    tenant: str | None = None  # who made it (tenants.py); None: the operator

    @property
    def path(self) -> str:
        """How cells reach the container: "runner" (its main process) or "exec"."""
        return "runner" if self.runner_dir else "exec"

    @property
    def runner(self) -> RunnerClient | None:
        if not self.runner_dir:
            return None
        return RunnerClient(os.path.join(self.runner_dir, "runner.sock"))

    def to_json(self) -> dict:
        return {
            "session_id": self.session_id,
            "container_id": self.container_id,
            "path": self.path,
            **self.spec.to_json(),
            "idle_timeout": self.idle_timeout,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "running_executions": self.running,
            "tenant": self.tenant,
        }


class SessionManager:
    """Creates, finds, reaps and deletes this node's session containers."""

    def __init__(
        self,
        *,
        node_id: str,
        factory: ContainerFactory,
        limits: Limits,
        default_image: str,
        idle_timeout: float,
        data_dir: str,
    ) -> None:
        self.node_id = node_id
        self.removed = Tombstones(os.path.join(data_dir, "sessions", "removed"))
        self._pruned_at = 0.0
        self.factory = factory
        self.limits = limits
        self.default_image = default_image
        self.idle_timeout = idle_timeout
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.on_delete: Callable[[str, str], None] = lambda sid, reason: None
        self.gpus = GpuPool(node_id=node_id)  # the Agent's, with the node's inventory

    @staticmethod
    def holder(sid: str) -> str:
        """Who holds a session's GPUs in the GpuPool."""
        return f"session:{sid}"

    def _name(self, session_id: str) -> str:
        return f"jr-{safe_name(self.node_id)}-s-{safe_name(session_id)}"

    def parse(self, body: SessionBody) -> tuple[str, ContainerSpec, float]:
        """A typed create request within this node's limits, before anything is made."""
        sid = body.session_id or f"s-{os.urandom(6).hex()}"
        spec = container_spec(body, self.limits, self.default_image)
        idle = body.idle_timeout if body.idle_timeout is not None else self.idle_timeout
        return sid, spec, float(idle)

    def create(
        self, sid: str, spec: ContainerSpec, idle_timeout: float, tenant: str | None = None
    ) -> Session:
        """Start the container (blocking: call off the event loop); `tenant` owns it (a
        label on the container, so a restarted agent knows it too)."""
        with self._lock:
            if sid in self.sessions:
                raise Conflict(
                    f"session {sid!r} already exists on node {self.node_id!r}",
                    reason="duplicate_session",
                    session=self.sessions[sid].to_json(),
                )
            self.factory.check_image(spec.image)
            label_extra = {
                "session": sid,
                "idle_timeout": f"{idle_timeout:g}",
                **expiry_label(idle_timeout),
                **({"tenant": tenant} if tenant is not None else {}),
            }
            runner_dir = None
            spec = self.factory.workdirs.cell_spec(spec)  # never / (identity.py)
            made = dict(
                name=self._name(sid),
                kind="session",
                label_extra=label_extra,
                host=hostname(self.node_id, sid),
            )
            if spec.gpu_request is not None:  # all or none, before the container: 409 if busy
                spec = replace(spec, gpus=self.gpus.take(self.holder(sid), spec.gpu_request))
            try:
                if self.factory.runner_capable(spec.image):
                    cid, runner_dir = self.factory.create_runner(spec, **made)
                else:
                    cid = self.factory.create_keeper(spec, **made)
            except BaseException:
                self.gpus.release(self.holder(sid))
                raise
            session = Session(sid, cid, spec, idle_timeout, runner_dir=runner_dir, tenant=tenant)
            session.lease_until = session.created_at + idle_timeout
            self.sessions[sid] = session
            self.removed.clear(sid)
        log.info(
            "session %s started in container %s (%s, path %s)",
            sid,
            cid[:12],
            spec.image,
            session.path,
        )
        return session

    def get(self, sid: str) -> Session:
        """The live session; 404 `session_expired` if the idle reaper removed it."""
        check_id(sid, "session_id")  # a path may hold any text: "a\n", "../x"
        session = self.sessions.get(sid)
        if session is not None:
            return session
        removed = self.removed.get(sid)
        if removed is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(removed["removed_at"]))
            raise NotFound(
                f"session {sid!r} on node {self.node_id!r} was removed at {when} after "
                f"{removed['idle_for']:.0f} s idle (its idle timeout is "
                f"{removed['idle_timeout']:g} s); its container and files are gone. "
                "Create it again (the same id works) to start afresh.",
                reason="session_expired",
                session_id=sid,
                removed_at=removed["removed_at"],
                idle_timeout=removed["idle_timeout"],
                tenant=removed.get("tenant"),
            )
        raise unknown("session", sid, self.node_id)

    def list(self) -> list[dict]:
        return [s.to_json() for s in self.sessions.values()]

    def begin(self, sid: str) -> None:
        session = self.sessions[sid]
        session.running += 1
        session.last_used_at = time.time()

    def end(self, sid: str) -> None:
        """After a command (blocking: may renew the lease other agents see)."""
        session = self.sessions.get(sid)
        if session:
            session.running -= 1
            session.last_used_at = time.time()
            self._renew(session)

    def _renew(self, session: Session) -> None:
        """Push the expiry on when half the lease is spent: one cheap call per half-timeout."""
        idle = session.idle_timeout
        if not idle or session.lease_until - session.last_used_at > idle / 2:
            return
        until = session.last_used_at + idle
        try:
            write_lease(self.factory.api, session.container_id, until)
            session.lease_until = until
        except DockerException as exc:
            log.warning("could not renew the lease of session %s: %s", session.session_id, exc)

    def delete(self, sid: str, reason: str = "session deleted") -> dict:
        """Kill what runs in it and remove the container (blocking)."""
        session = self.get(sid)
        self.on_delete(sid, reason)
        self.gpus.ending(self.holder(sid))  # a take that needs its GPUs waits for the removal
        self.factory.remove(session.container_id, session.runner_dir)
        with self._lock:
            self.sessions.pop(sid, None)
        self.gpus.release(self.holder(sid))  # once the container is gone, not before
        log.info("session %s removed (%s)", sid, reason)
        return session.to_json()

    def reap_idle(self) -> list[str]:
        """Remove sessions idle longer than their timeout, leaving a tombstone for each;
        returns their ids."""
        now = time.time()
        if now - self._pruned_at > 600:
            self._pruned_at = now
            self.removed.prune()
        for busy in [s for s in list(self.sessions.values()) if s.running]:
            # a long cell keeps its lease fresh: other nodes' sweeps cannot see a runner's
            # cells (only docker execs), so the lease must not run out under it
            busy.last_used_at = now
            self._renew(busy)
        idle = [
            s
            for s in list(self.sessions.values())
            if s.idle_timeout and not s.running and now - s.last_used_at > s.idle_timeout
        ]
        reaped = []
        for session in idle:
            sid = session.session_id
            try:
                self.delete(sid, reason="idle timeout")
            except (DockerException, NotFound) as exc:
                log.warning("could not reap idle session %s: %s", sid, exc)
                continue
            self.removed.add(
                sid,
                removed_at=time.time(),
                idle_for=now - session.last_used_at,
                idle_timeout=session.idle_timeout,
                image=session.spec.image,
                tenant=session.tenant,
            )
            reaped.append(sid)
        return reaped

    def recover(self) -> int:
        """Adopt this node's session containers after a restart; remove dead ones."""
        for info in self.factory.list("session"):
            sid = info["Labels"].get(labels.SESSION)
            if info["State"] != "running" or not sid:
                self.factory.remove_info(info)
                continue
            attrs = self.factory.api.inspect_container(info["Id"])
            host = attrs["HostConfig"]
            env = dict(e.partition("=")[::2] for e in attrs["Config"].get("Env") or [])
            spec = ContainerSpec(
                image=attrs["Config"]["Image"],
                memory=host["Memory"],
                cpus=(host.get("NanoCpus") or 0) / 1e9,
                pids_limit=host.get("PidsLimit") or 0,
                env=env,
                workdir=attrs["Config"].get("WorkingDir") or None,
                network=host.get("NetworkMode") or "none",
                gpus=self.gpus.held(self.holder(sid)),
            )
            idle = float(info["Labels"].get(labels.IDLE_TIMEOUT, self.idle_timeout))
            runner_dir = info["Labels"].get(labels.RUNNER_DIR) or None
            self.sessions[sid] = Session(
                sid,
                info["Id"],
                spec,
                idle,
                runner_dir=runner_dir,
                tenant=info["Labels"].get(labels.TENANT),  # none on older ones: the operator's
            )
            self._renew(self.sessions[sid])  # its idle clock restarts now
        return len(self.sessions)
