"""RemoteManager: the one object that owns the server extension's state."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Executor, Future

from jupyter_remote.protocol.errors import BadRequest, RemoteError
from jupyter_remote.gateway.core import StateGateway
from jupyter_remote.gateway.jsonl import RotatingJsonl
from jupyter_remote.util.retention import Policy
from jupyter_remote_server.services.executions import ExecutionService
from jupyter_remote_server.services.jobs import JobService
from jupyter_remote_server.services.kernels import KernelSessions
from jupyter_remote_server.nodes.registry import NodeRegistry
from jupyter_remote_server.nodes.pool import ExecutorPool, NodeChooser
from jupyter_remote_server.store.retention import Retention
from jupyter_remote_server.store.jobstore import JobStore

log = logging.getLogger("jupyter_remote_server")


class Removed(RemoteError):
    """A re-join from an agent process whose node was removed: it stops re-joining."""

    status = 410
    reason = "node_removed"


class AbandonedAtExit(Executor):
    """A thread pool whose threads never hold up the process's exit.

    Calls to agents block for long (a job feed's long poll, an execution's stream, a poll
    of a frozen node). concurrent.futures joins its pools' threads at exit, so a stopping
    server waited for them; these are abandoned instead: what they were reading is on the
    agents, and a restarted server reattaches to it.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._max, self._name = max_workers, name
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name}: cannot take work after shutdown")
            self._queue.put((future, fn, args, kwargs))
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max:
                name = f"{self._name}-{len(self._threads)}"
                thread = threading.Thread(target=self._work, name=name, daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            del item
            result = error = None
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                    error = exc
            with self._lock:  # free before the caller hears back, so its next call reuses us
                self._idle += 1
            if error is not None:
                future.set_exception(error)
            elif future.running():
                future.set_result(result)
            del future, fn, args, kwargs, result, error  # hold nothing while idle

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            while cancel_futures:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
            for _ in self._threads:
                self._queue.put(None)  # idle threads end now, busy ones after their call
        if wait:
            for thread in self._threads:
                thread.join()


class RemoteManager:
    """Nodes, the pool, kernel sessions, executions and jobs; handlers only call this."""

    def __init__(
        self,
        *,
        store: JobStore,
        chooser: NodeChooser,
        kernel_manager,
        config_nodes: list[dict],
        default_image: str,
        poll_interval: float,
        suspect_after: float,
        lost_after: float,
        pool_connections: int,
        pool_maxsize: int,
        retention: Policy | None = None,
    ) -> None:
        self.store = store
        self.kernel_manager = kernel_manager
        self.pool_io = AbandonedAtExit(32, "remote-io")
        self.stream_io = AbandonedAtExit(512, "remote-stream")
        self.registry = NodeRegistry(
            poll_interval=poll_interval,
            suspect_after=suspect_after,
            lost_after=lost_after,
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            blocking=self.blocking,
        )
        for entry in config_nodes:
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
        self.pool = ExecutorPool(self.registry, chooser)
        self.kernels = KernelSessions(self.registry, self.pool, store)
        self.executions = ExecutionService(
            registry=self.registry,
            pool=self.pool,
            kernels=self.kernels,
            store=store,
            blocking=self.blocking,
            stream_executor=self.stream_io,
            default_image=default_image,
            known_kernel=self.known_kernel,
        )
        self.jobs = JobService(
            registry=self.registry,
            pool=self.pool,
            store=store,
            blocking=self.blocking,
            stream_executor=self.stream_io,
            default_image=default_image,
        )
        self.retention = Retention(store, retention or Policy(max_bytes=1 << 30), self._forget)
        self._background: list[asyncio.Task] = []
        self.gateway: StateGateway | None = None

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

    async def blocking(self, fn, *args):
        """Blocking I/O (requests to agents) on a thread, off tornado's event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool_io, fn, *args)

    def known_kernel(self, kernel_id: str) -> bool:
        return kernel_id in self.kernel_manager

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
        self.pool_io.shutdown(wait=False, cancel_futures=True)
        self.stream_io.shutdown(wait=False, cancel_futures=True)
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
        await self.blocking(self.retention.sweep)

    def _forget(self, kind: str, key: str) -> None:
        """Retention removed a record from the store (called on a worker thread)."""
        service = self.executions if kind == "execution" else self.jobs
        self.loop.call_soon_threadsafe(service.forget, key)

    async def kernel_gone(self, kernel_id: str) -> list[dict]:
        """Remove a kernel's session containers (it shut down, or was culled)."""
        return await self.blocking(self.kernels.remove_kernel, kernel_id)

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
        node, new = await self.blocking(self.registry.add_checked, url, token, source)
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
        }
