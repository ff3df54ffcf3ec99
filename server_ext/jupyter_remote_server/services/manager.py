"""RemoteManager: the one object that owns the server extension's state."""

from __future__ import annotations

import asyncio
import logging

from traitlets.config import LoggingConfigurable

from jupyter_remote.gateway.core import StateGateway
from jupyter_remote.gateway.jsonl import RotatingJsonl
from jupyter_remote.protocol.common import JOB_FINAL
from jupyter_remote.protocol.errors import BadRequest, RemoteError
from jupyter_remote.util.retention import Policy
from jupyter_remote_server.nodes.pool import ExecutorPool
from jupyter_remote_server.nodes.registry import NodeRegistry
from jupyter_remote_server.services.executions import ExecutionService
from jupyter_remote_server.services.jobs import JobService
from jupyter_remote_server.services.kernels import KernelSessions
from jupyter_remote_server.services.shared_answers import SharedAnswers
from jupyter_remote_server.services.user_quota import UserQuota, parse_limits
from jupyter_remote_server.services.users import SERVER, Caller, Users
from jupyter_remote_server.store.retention import Retention

log = logging.getLogger("jupyter_remote_server")


class Removed(RemoteError):
    """A re-join from an agent process whose node was removed: it stops re-joining."""

    status = 410
    reason = "node_removed"


class RemoteManager(LoggingConfigurable):
    """Nodes, the pool, kernel sessions, executions and jobs; handlers only call this.

    Made by the RemoteApp with `parent=app`: its settings are the app's traits (the
    c.RemoteApp.* names), handed on to each service, itself made with `parent=self`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        app = self.parent
        store = self.store = app.job_store_class(app.db_path)
        self.kernel_manager = app.serverapp.kernel_manager
        self.default_image = app.default_image
        self.registry = NodeRegistry(
            parent=self,
            poll_interval=app.poll_interval,
            suspect_after=app.suspect_after,
            lost_after=app.lost_after,
            pool_maxsize=app.pool_maxsize,
        )
        for entry in app._config_nodes():
            self.registry.add_known(
                entry["url"], entry.get("token"), "config", entry.get("node_id")
            )
        for saved in store.load("node"):
            if saved["node_id"] not in self.registry.nodes:
                node = self.registry.add_known(
                    saved["url"], saved.get("token"), saved["source"], saved["node_id"]
                )
                node.instance = saved.get("instance")
        # agent instances whose node was removed: {instance: node_id}
        self.removed = {r["instance"]: r["node_id"] for r in store.load("node_removed")}
        self.pool = ExecutorPool(self.registry, app.node_chooser_class())
        self.users = Users(app.user_identity, app.operators, app.serverapp.identity_provider)
        self.tenant_name = app.tenant_name
        self.quota = UserQuota(parse_limits(app.user_quota))
        self.kernels = KernelSessions(parent=self)
        self.executions = ExecutionService(parent=self, default_image=app.default_image)
        self.shared = SharedAnswers()  # what open panels poll, built at most once a second
        self.jobs = JobService(parent=self, default_image=app.default_image)
        self.quota.load(self._holders())
        self.retention = Retention(store, Policy.from_traits(app), self._forget)
        self._background: list[asyncio.Task] = []
        self.gateway: StateGateway | None = None

    def _holders(self):
        """What already holds a share of its user's quota (at start: from the store)."""
        for r in self.kernels.sessions.values():
            yield r.get("user") or "", f"session:{r['key']}", r.get("quota") or {"sessions": 1.0}
        for r in self.executions.records.values():
            if r.get("quota"):
                yield r.get("user") or "", f"execution:{r['execution_id']}", r["quota"]
        for j in self.jobs.jobs.values():
            if j.get("quota") and self.jobs.model(j)["status"] not in JOB_FINAL:
                yield j.get("user") or "", f"job:{j['job_id']}", j["quota"]

    def configure_gateway(
        self, *, bind: str, port: int, mode: str, log_file: str, stale_threshold_ms: int
    ) -> None:
        """Run the engine-state gateway in this server (started with the extension)."""
        log = RotatingJsonl(log_file) if log_file else None
        self.gateway = StateGateway(
            bind=bind, port=port, mode=mode, log=log, stale_threshold_ms=stale_threshold_ms
        )

    def engine_states(self) -> dict:
        """The latest state per engine; with the gateway off (the default), just that.

        Off is a setting, not an error: the panel polls this, so a 404 would fill the log.
        """
        if self.gateway is None or self.gateway.sock is None:
            return {
                "enabled": False,
                "message": "the engine-state gateway is off in this server "
                "(set c.RemoteApp.gateway_port to receive states)",
            }
        return {
            "enabled": True,
            "engines": self.gateway.table(),
            "counters": self.gateway.counters(),
            "stale_threshold_ms": self.gateway.stale_threshold_ms,
            "listening": f"udp {self.gateway.bind}:{self.gateway.port}",
        }

    def known_kernel(self, kernel_id: str) -> bool:
        return kernel_id in self.kernel_manager

    async def notebook_of(self, kernel_id: str | None) -> str | None:
        """The path of the notebook whose kernel this is; None for a kernel no notebook of
        this server opened (a console, nbval, a script)."""
        sessions = getattr(self.parent.serverapp, "session_manager", None)
        if kernel_id is None or sessions is None:
            return None
        try:
            model = await sessions.get_session(kernel_id=kernel_id)
        except Exception:  # noqa: BLE001 - tornado's 404 for a kernel without a session
            return None
        return model.get("path") or None

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start polling nodes, watching jobs, settling executions and reaping sessions."""
        loop = self.loop = asyncio.get_running_loop()
        self.jobs.changes.loop = loop
        self.registry.start()
        if self.gateway is not None:
            self.gateway.start()
        self._background += [
            loop.create_task(self._every(0.25, self._tick)),
            loop.create_task(self._every(5.0, self._housekeeping)),
            loop.create_task(self._every(self.retention.policy.interval, self._retention)),
        ]

    async def stop(self) -> None:
        self.registry.stop()
        self.jobs.stop_watching()
        if self.gateway is not None:
            self.gateway.stop()
        for task in self._background:
            task.cancel()
        await self.registry.close()
        self.store.close()

    async def _every(self, seconds: float, fn) -> None:
        while True:
            try:
                await fn()
            except Exception:  # noqa: BLE001 - a bad round must not end the loop
                log.exception("jupyter-remote background round failed")
            await asyncio.sleep(seconds)

    async def _tick(self) -> None:
        self.jobs.tick()

    async def _housekeeping(self) -> None:
        await self.executions.settle_unknown()
        for kernel_id in self.kernels.kernel_ids():  # kernels that ended unseen
            if not self.known_kernel(kernel_id):
                await self.kernel_gone(kernel_id)

    async def _retention(self) -> None:
        # SQLite: a blocking local call, on asyncio's default executor
        await asyncio.get_running_loop().run_in_executor(None, self.retention.sweep)

    def _forget(self, kind: str, key: str) -> None:
        """Retention removed a record from the store (called on a worker thread)."""
        service = self.executions if kind == "execution" else self.jobs
        self.loop.call_soon_threadsafe(service.forget, key)

    async def kernel_gone(self, kernel_id: str, caller: Caller = SERVER) -> list[dict]:
        """Remove a kernel's session containers (it shut down, or was culled); those the
        caller may see."""
        return await self.kernels.remove_kernel(kernel_id, caller)

    async def on_kernel_event(self, logger, schema_id: str, data: dict) -> None:
        """jupyter_server's kernel_actions event: clean up when a kernel shuts down."""
        if data.get("action") == "shutdown" and data.get("status") == "success":
            kernel_id = data.get("kernel_id")
            if kernel_id and self.kernels.for_kernel(kernel_id):
                removed = await self.kernel_gone(kernel_id)
                log.info("kernel %s shut down: removed %d session(s)", kernel_id, len(removed))

    # -- nodes -------------------------------------------------------------------------
    async def add_node(
        self, url: str, token: str | None, source: str, instance: str | None = None
    ) -> tuple[dict, bool]:
        node, new = await self.registry.add_checked(url, token, source)
        node.instance = instance or node.instance
        for gone, node_id in list(self.removed.items()):  # added again: it may re-join
            if node_id == node.node_id:
                del self.removed[gone]
                self.store.delete("node_removed", gone)
        self.store.save(
            "node",
            node.node_id,
            {
                "node_id": node.node_id,
                "url": node.url,
                "token": token,
                "source": source,
                "instance": node.instance,
            },
        )
        await self.registry.poll_now(node)
        return node.to_json(), new

    async def join_node(self, url: str, token: str | None, instance: object) -> tuple[dict, bool]:
        """An agent joining by itself; removed from the pool, it stays out until restarted.

        Agents re-join every minute (so a restarted server learns of them); `instance` is
        made at the agent's start, so a removal refuses that process's re-joins only.
        """
        if instance is not None and not isinstance(instance, str):
            raise BadRequest("instance must be a string", reason="bad_instance")
        if instance and instance in self.removed:
            raise Removed(
                f"node {self.removed[instance]!r} was removed from this server's pool; "
                "restart the agent (or add it again) to bring it back",
            )
        return await self.add_node(url, token, "join", instance)

    def remove_node(self, node_id: str) -> dict:
        node = self.registry.remove(node_id)
        self.store.delete("node", node_id)
        if node.instance:  # its agent's periodic re-joins must not bring it back
            self.removed[node.instance] = node_id
            self.store.save(
                "node_removed", node.instance, {"instance": node.instance, "node_id": node_id}
            )
        return node.to_json()

    def status(self) -> dict:
        states = [n.state for n in self.registry.nodes.values()]
        return {
            "nodes": len(self.registry.nodes),
            "healthy": states.count("healthy"),
            "busy": states.count("busy"),
            "jobs": len(self.jobs.jobs),  # live ones: ended ones are in the store
            "executions": len(self.executions.records),
            "retention": self.retention.last,
            "default_image": self.default_image,  # what a cell naming no image runs in
        }
