"""Serving one agent: build it, listen, keep joined to a server, run the periodic work
(idle sessions, expired containers, retention), and stop cleanly at SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from tornado.httpserver import HTTPServer

from jupyter_remote._version import __version__
from jupyter_remote.agent import daemon, data_lock
from jupyter_remote.agent.core import Agent
from jupyter_remote.agent.expiry import SWEEP_EVERY
from jupyter_remote.agent.join import advertised_url, keep_joined
from jupyter_remote.agent.settings import UsageFailure
from jupyter_remote.agent.specs import Limits
from jupyter_remote.agent.tenants import Credentials
from jupyter_remote.agent.web.base import BodyLimits
from jupyter_remote.agent.web.routes import make_app
from jupyter_remote.http.open_files import AcceptGuard, raise_open_files_limit
from jupyter_remote.protocol.errors import RemoteError

log = logging.getLogger("jupyter_remote.agent")


def build(app, limits: Limits) -> Agent:
    """The Agent from the app's options (blocking: it checks the Docker engine)."""
    try:
        return Agent(
            node_id=app.node_id,
            data_dir=app.data_dir,
            limits=limits,
            default_image=app.default_image,
            default_timeout=app.default_timeout or None,
            idle_timeout=app.idle_timeout,
            kill_grace=app.kill_grace,
            workdir=app.workdir,
            stop_grace=max(app.kill_grace, 1.0),
            sample_interval=app.sample_interval,
            use_runner=app.runner,
            warm_images=[i.strip() for i in app.warm_images.split(",") if i.strip()] or None,
            warm_pool_size=app.warm_pool_size,
            retention=app.retention_policy(),
            thresholds={
                "cpu_max": app.cpu_max,
                "memory_max": app.memory_max,
                "disk_max": app.disk_max,
            },
        )
    except RemoteError as exc:
        raise UsageFailure(exc.message) from None


async def serve(
    app, host: str, port: int, token: str, limits: Limits, credentials: Credentials
) -> None:
    """Run the agent until SIGTERM or SIGINT; `app` is the AgentApp with its options.
    SIGHUP re-reads the tenants file."""
    body_limits = BodyLimits(execution=app.max_execution_bytes, other=app.max_request_bytes)
    tls = app.ssl_context()  # a bad certificate is refused before anything starts
    try:  # before anything reads the data directory: one agent recovers it, once
        await asyncio.to_thread(data_lock.hold, app.data_dir)
    except data_lock.DataDirBusy as exc:
        raise UsageFailure(str(exc)) from None
    agent = build(app, limits)
    agent.credentials = credentials
    loop = asyncio.get_running_loop()
    agent.jobs.changes.loop = loop
    agent.executions.loop = loop
    await agent.blocking(agent.start)
    server = HTTPServer(
        make_app(agent, body_limits),
        max_body_size=body_limits.largest + 1,
        idle_connection_timeout=300,
        ssl_options=tls,
    )
    raise_open_files_limit(0)  # each stream to a server holds a descriptor
    try:
        server.listen(port, address=host)
    except OSError as exc:
        raise UsageFailure(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    guard = None if tls else AcceptGuard(server, port, "the agent", "ulimit -n")
    if guard is not None:
        guard.install()
    reaper = loop.create_task(reap(agent))
    joiner = None
    if app.join:
        url = app.advertise_url or advertised_url(host, port, "https" if tls else "http")
        joiner = loop.create_task(
            keep_joined(
                app.join,
                app.join_token,
                url,
                token,
                tenants_file=app.tenants_file,
                reload=lambda: credentials.reload(force=True),
            )
        )
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: credentials.reload(force=True))
    log.info(
        "agent %s (node %s) listening on %s://%s:%d, data in %s%s",
        __version__,
        app.node_id,
        "https" if tls else "http",
        host,
        port,
        app.data_dir,
        "" if token else " (no operator token)",
    )
    if credentials.path:
        log.info("tenants from %s: %d", credentials.path, len(credentials.tenants))
    await stopping.wait()
    log.info("stopping")
    agent.stopping = True
    agent.jobs.changes.notify()  # long-polls answer now instead of being cut off
    if guard is not None:
        guard.close()
    server.stop()
    reaper.cancel()
    if joiner:
        joiner.cancel()
    await agent.blocking(agent.stop)
    await agent.drain(2.0)
    if app.daemon and daemon.read_pid(app.pid_file) == os.getpid():
        os.unlink(app.pid_file)


async def reap(agent: Agent) -> None:
    """Idle sessions: an in-memory check each second (Docker only to remove); other
    nodes' expired containers: one Docker listing a minute; retention every
    --retention-interval."""
    loop = asyncio.get_running_loop()
    next_sweep = loop.time() + SWEEP_EVERY
    next_retention = loop.time() + min(agent.retention.policy.interval, 1.0)
    tick = min(1.0, agent.retention.policy.interval)
    while True:
        await asyncio.sleep(tick)
        if loop.time() >= next_retention:
            next_retention = loop.time() + agent.retention.policy.interval
            await agent.blocking(agent.apply_retention)
        await agent.blocking(agent.sessions.reap_idle)
        if loop.time() >= next_sweep:
            next_sweep = loop.time() + SWEEP_EVERY
            await agent.blocking(agent.sweep_expired)
