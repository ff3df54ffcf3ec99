"""The Agent: owns the Docker client and every manager; handlers only call it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import docker

from jupyter_remote._version import __version__
from jupyter_remote.agent import expiry
from jupyter_remote.agent.containers import ContainerFactory
from jupyter_remote.agent.executions import ExecutionManager
from jupyter_remote.agent.gpus import GpuPool, NvmlReader, inventory
from jupyter_remote.agent.jobs import JobManager
from jupyter_remote.agent.ledger import Ledger
from jupyter_remote.agent.monitor import ResourceMonitor
from jupyter_remote.agent.oom import OomWatcher
from jupyter_remote.agent.pool import WarmPool
from jupyter_remote.agent.quotas import Quotas, ask_of
from jupyter_remote.agent.retention import Retention
from jupyter_remote.agent.sessions import SessionManager
from jupyter_remote.agent.specs import Limits, check_host_fits
from jupyter_remote.agent.tenants import Credentials
from jupyter_remote.protocol.bodies import SessionBody
from jupyter_remote.protocol.errors import BadRequest, Conflict, Unavailable
from jupyter_remote.util.failures import log_failure
from jupyter_remote.util.retention import Policy

log = logging.getLogger("jupyter_remote.agent")

API_VERSION = 1
DEFAULT_SESSION = "default"


def with_host(limits: Limits, engine: dict) -> Limits:
    """The limits plus what the engine's host has, so requests beyond it get our 400, not
    Docker's; the agent's own defaults must fit too."""
    limits = replace(
        limits,
        host_cpus=float(engine.get("NCPU") or 0),
        host_memory=int(engine.get("MemTotal") or 0),
    )
    try:
        check_host_fits(limits, limits.memory, limits.cpus)
    except BadRequest as exc:
        raise BadRequest(f"the default for new containers does not fit: {exc.message}") from None
    return limits


class Agent:
    """One executor node: sessions, executions, jobs and the node's health."""

    def __init__(
        self,
        *,
        node_id: str,
        data_dir: str,
        limits: Limits,
        default_image: str,
        default_timeout: float | None,
        idle_timeout: float,
        kill_grace: float,
        stop_grace: float,
        sample_interval: float,
        thresholds: dict[str, float],
        docker_client: docker.DockerClient | None = None,
        use_runner: bool = True,
        warm_images: list[str] | None = None,
        warm_pool_size: int = 0,
        retention: Policy | None = None,
        workdir: str = "",
    ) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        try:
            self.client = docker_client or docker.from_env(max_pool_size=128)
            self.client.ping()
            engine = self.client.info()
        except docker.errors.DockerException as exc:
            raise Unavailable(
                f"cannot reach the Docker engine: {exc}", reason="docker_unavailable"
            ) from None
        limits = with_host(limits, engine)
        self.factory = ContainerFactory(
            self.client, node_id, os.path.join(data_dir, "r") if use_runner else None, workdir
        )
        self.gpu_reader = NvmlReader()
        gpus, source = inventory(self.gpu_reader, limits.gpus_visible)
        self.gpus = GpuPool(
            gpus,
            path=os.path.join(data_dir, "gpus.json"),
            sharing=limits.gpu_sharing,
            source=source,
            node_id=node_id,
        )
        self.factory.gpu_mode = limits.gpu_mode
        self.factory.gpu_node = bool(gpus)
        self.factory.keep_failed = limits.keep_failed
        log.info(
            "node %s: %d GPUs (%s)%s",
            node_id,
            len(gpus),
            source,
            ", shared" if limits.gpu_sharing and gpus else "",
        )
        self.oom = OomWatcher(self.client, node_id)
        self.sessions = SessionManager(
            node_id=node_id,
            factory=self.factory,
            limits=limits,
            default_image=default_image,
            idle_timeout=idle_timeout,
            data_dir=data_dir,
        )
        self.executions = ExecutionManager(
            data_dir=data_dir,
            node_id=node_id,
            factory=self.factory,
            oom=self.oom,
            sessions=self.sessions,
            limits=limits,
            default_image=default_image,
            default_timeout=default_timeout,
            kill_grace=kill_grace,
        )
        self.sessions.on_delete = self.executions.kill_session
        self.sessions.gpus = self.gpus  # the executions' too (theirs is the sessions')
        self.warm_pool = WarmPool(
            self.factory,
            limits,
            warm_images if warm_images is not None else [default_image],
            warm_pool_size if use_runner else 0,
        )
        self.executions.pool = self.warm_pool
        self.jobs = JobManager(
            data_dir=data_dir,
            node_id=node_id,
            factory=self.factory,
            limits=limits,
            default_image=default_image,
            stop_grace=stop_grace,
        )
        self.jobs.gpus = self.gpus
        policy = retention or Policy()
        self.ledger = Ledger(os.path.join(data_dir, "expired.sqlite"), policy.expired_keep)
        self.executions.ledger = self.jobs.ledger = self.ledger
        self.retention = Retention(
            data_dir=data_dir,
            executions=self.executions,
            jobs=self.jobs,
            ledger=self.ledger,
            policy=policy,
        )
        self.monitor = ResourceMonitor(
            self.client, node_id=node_id, disk_path=data_dir, interval=sample_interval, **thresholds
        )
        self.monitor.gpu_reader = self.gpu_reader if self.gpu_reader.available else None
        self.monitor.gpu_indices = [g.index for g in gpus if g.uuid]  # NVML's, not index-only
        self.pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="agent-io")
        self.credentials = Credentials()  # serve.py sets the token's and tenants file's
        self.quotas = Quotas(self)
        self.jobs.admit = self.quotas.admit_task
        self.stopping = False  # set at SIGTERM: requests still in flight then get a 503
        self.handlers: weakref.WeakSet = weakref.WeakSet()  # requests not answered yet
        self._default_session_lock = threading.Lock()

    def start(self) -> None:
        """Find what an earlier run left behind, then start the background samplers."""
        self.oom.start()
        sessions = self.sessions.recover()  # first: executions re-attach to their runners
        lost = self.executions.recover()
        for info in self.factory.list("fresh"):  # fresh containers of executions that died
            self.factory.remove_info(info)  # and warm ones of an earlier run
        self.factory.remove_probes()
        jobs = self.jobs.recover()
        # fresh containers were all removed above: only sessions and running tasks hold GPUs
        self.gpus.keep_only(
            {self.sessions.holder(sid) for sid in self.sessions.sessions} | self.jobs.live_holders()
        )
        self.executions.index.clear_trash()
        self.executions.index.refresh(self.executions.running)  # read each record once, now
        self.sweep_expired()
        self.monitor.start()
        self.warm_pool.start()
        log.info(
            "node %s: recovered %d sessions, %d jobs; %d executions marked lost",
            self.node_id,
            sessions,
            jobs,
            lost,
        )

    def stop(self) -> None:
        """Cancel running executions (their clients are cut anyway); jobs keep running."""
        for ex in list(self.executions.running.values()):
            self.executions.kill(ex, "agent stopped")
        for ex in list(self.executions.running.values()):
            ex.done.wait(10)
        self.executions.wait_removals()
        self.warm_pool.stop()
        self.monitor.stop()
        self.oom.stop()
        self.pool.shutdown(wait=False)
        self.ledger.close()

    def apply_retention(self) -> dict:
        """One retention pass (see retention.py); a failure waits for the next pass."""
        try:
            return self.retention.sweep()
        except Exception:  # noqa: BLE001 - a bad pass must not stop the agent's loop
            log_failure(log, "retention pass failed")
            return {}

    def sweep_expired(self) -> list[str]:
        """Remove other nodes' expired containers on this engine (see expiry.py)."""
        try:
            return expiry.sweep(self.client.api, self.node_id)
        except docker.errors.DockerException as exc:
            log.warning("could not sweep expired containers: %s", exc)
            return []

    async def drain(self, timeout: float) -> None:
        """At stop, after running executions were ended: let their streams send the exit
        line and other answers finish, for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.handlers) and time.monotonic() < deadline:  # each leaves when answered
            await asyncio.sleep(0.02)

    async def blocking(self, fn, *args):
        """Run a blocking call (Docker, psutil) on the agent's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def info(self) -> dict:
        return {"node_id": self.node_id, "api_version": API_VERSION, "version": __version__}

    def health(self) -> dict:
        return {**self.info(), **self.monitor.health()}

    def resources(self) -> dict:
        return {
            **self.info(),
            **self.monitor.sample,
            "executions": {"running": self.executions.running_count()},
            "sessions": {"count": len(self.sessions.sessions)},
            "warm_pool": self.warm_pool.count(),
            "jobs": {"running_tasks": self.jobs.running_count()},
            "retention": self.retention.last,
            "gpus": self.gpus.report(self.monitor.gpu_metrics),
        }

    def default_session(self, image: str | None, tenant: str | None = None) -> str:
        """The session `POST /execute` uses: one per image (and tenant), made on first use
        (blocking), within the tenant's quota."""
        image = image or self.sessions.default_image
        sid = (
            DEFAULT_SESSION
            if image == self.sessions.default_image
            else (f"{DEFAULT_SESSION}-{hashlib.sha1(image.encode()).hexdigest()[:10]}")
        )
        if tenant is not None:
            sid = f"{sid}:{tenant}"
        with self._default_session_lock:
            made = self.sessions.sessions.get(sid)
            if made is not None and made.tenant != tenant:  # never run in another's container
                raise Conflict(
                    f"session id {sid!r} is already used on node {self.node_id!r}, not as this "
                    "caller's default session; give a session_id",
                    reason="duplicate_session",
                )
            if made is None:
                _, spec, idle = self.sessions.parse(
                    SessionBody.model_construct(session_id=sid, image=image)
                )
                key = ("session", sid)
                with self.quotas.reserve(tenant, key, ask_of(spec, sessions=1), "session"):
                    self.sessions.create(sid, spec, idle, tenant)
        return sid
