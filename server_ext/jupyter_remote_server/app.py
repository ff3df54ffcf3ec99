"""The jupyter-remote ExtensionApp: configuration, start-up and shutdown of the hub."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Dict, Enum, Float, Int, List, TraitError, Type, Unicode, default, validate

from jupyter_remote.http.open_files import AcceptGuard, raise_open_files_limit
from jupyter_remote.protocol.common import ID_PATTERN
from jupyter_remote.protocol.server_bodies import MAX_EXECUTION_BODY, MAX_JOB_BODY
from jupyter_remote.util.retention import RetentionTraits
from jupyter_remote_server.nodes.labels import label_config
from jupyter_remote_server.nodes.pool import NodeChooser
from jupyter_remote_server.nodes.swarm import SwarmTraits, SwarmWatch
from jupyter_remote_server.routes import handlers
from jupyter_remote_server.services.manager import RemoteManager
from jupyter_remote_server.services.user_quota import parse_limits
from jupyter_remote_server.store.jobstore import JobStore, SQLiteJobStore

KERNEL_ACTIONS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
ENV_URL = "JUPYTER_REMOTE_SERVER_URL"
ENV_TOKEN = "JUPYTER_REMOTE_SERVER_TOKEN"
LOGGER = "jupyter_remote_server"  # the logger every module of the extension uses


class RemoteApp(SwarmTraits, RetentionTraits, ExtensionApp):
    """jupyter-remote: runs notebook cells on a pool of Docker hosts through their agents."""

    name = "jupyter_remote_server"

    nodes = List(
        help="Agents to use, each a dict: {'url': 'http://host:9527', 'token': '...' or "
        "'token_file': '/path', 'node_id': optional name, 'labels': {'zone': 'eu-1'} for "
        "placement with --on}.",
    ).tag(config=True)
    join_token = Unicode(
        help="Token agents present to join by themselves (jupyter-remote agent --join URL "
        "--join-token T); empty disables joining. Env: JUPYTER_REMOTE_JOIN_TOKEN.",
    ).tag(config=True)
    poll_interval = Float(5.0, help="Seconds between health and resource polls of each node.").tag(
        config=True
    )
    suspect_after = Float(
        10.0, help="Seconds of silence after which a node is suspect (no new work)."
    ).tag(config=True)
    lost_after = Float(
        60.0,
        help="Seconds of silence after which a node is lost (its running "
        "tasks are marked lost, never re-run).",
    ).tag(config=True)
    pool_connections = Int(
        5,
        help="Ignored since the server's agent client is async (one connection pool per node "
        "already); kept so that existing configurations still load. See pool_maxsize.",
    ).tag(config=True)
    pool_maxsize = Int(
        64,
        help="Most connections to one node at once (kept alive, seed 000). Each streaming cell "
        "holds one while it runs and two are kept for health polls, so 62 cells stream from a "
        "node at once; more wait for a free one.",
    ).tag(config=True)
    default_image = Unicode(
        "jupyter-remote/python:local", help="Image used when a request names none."
    ).tag(config=True)
    local_agent_url = Unicode(
        "http://127.0.0.1:9527",
        help="With no nodes configured, the local agent (jupyter-remote agent on this "
        "machine's Docker engine) is the pool's one node; empty disables it.",
    ).tag(config=True)
    gateway_port = Int(
        0, help="Run the engine-state gateway in this server on this UDP port (0: off)."
    ).tag(config=True)
    gateway_bind = Unicode(
        "127.0.0.1", help="The in-server gateway's bind address (0.0.0.0 inside a container)."
    ).tag(config=True)
    gateway_mode = Unicode("unicast", help="unicast or broadcast.").tag(config=True)
    gateway_log_file = Unicode(
        "", help="JSONL log of every valid state from the in-server gateway (empty: none)."
    ).tag(config=True)
    stale_threshold_ms = Int(2000, help="Milliseconds after which an engine's state is stale.").tag(
        config=True
    )
    db_path = Unicode(
        help="SQLite file holding jobs, executions, nodes and kernel sessions "
        "(default: JUPYTER_DATA_DIR/jupyter_remote.sqlite)."
    ).tag(config=True)
    job_store_class = Type(
        SQLiteJobStore, klass=JobStore, help="Where records are kept; a JobStore subclass."
    ).tag(config=True)
    node_chooser_class = Type(
        NodeChooser,
        klass=NodeChooser,
        help="How a node is chosen for work; a NodeChooser subclass.",
    ).tag(config=True)
    max_job_body = Int(
        MAX_JOB_BODY,
        help="Largest request body in bytes for jobs, nodes and sessions (1 MiB, as the "
        "agent takes); larger ones are refused with 413 and nothing is stored.",
    ).tag(config=True)
    max_execution_body = Int(
        MAX_EXECUTION_BODY,
        help="Largest execution request body in bytes (32 MiB: cells may carry data).",
    ).tag(config=True)
    open_files_limit = Int(
        0,
        help="Soft open-files limit (RLIMIT_NOFILE) set at start; 0: the hard limit. Each "
        "streaming cell holds two descriptors. When they run out anyway, new connections get "
        "a 503 too_many_open_files instead of hanging.",
    ).tag(config=True)
    operators = List(
        Unicode(),
        help="Jupyter usernames that see and act on every user's executions, jobs and "
        "sessions through /remote/api (the rest see their own only).",
    ).tag(config=True)
    user_quota = Dict(
        help="Per-user quota across the pool: {'sessions': int, 'cpus': float, 'memory': "
        "'16g' or bytes, 'gpus': int}, each optional (absent: no limit). Checked and held "
        "before anything is sent to an agent; over it is a 403 quota_exceeded.",
    ).tag(config=True)
    user_identity = Enum(
        ["auto", "identity", "single"],
        "auto",
        help="Whose work a request is: 'identity' the Jupyter user (current_user.username), "
        "'single' this server's one user (everything is theirs), 'auto' single with "
        "jupyter_server's own identity provider (its token requests are anonymous), "
        "identity with any other (JupyterHub's, a custom one).",
    ).tag(config=True)
    tenant_name = Unicode(
        help="This server's tenant name on the agents that join it: each mints a credential "
        "for it (default: this machine's host name, made a valid id).",
    ).tag(config=True)
    manager: RemoteManager | None = None
    swarm: SwarmWatch | None = None
    accept_guard: AcceptGuard | None = None

    @default("join_token")
    def _default_join_token(self) -> str:
        return os.environ.get("JUPYTER_REMOTE_JOIN_TOKEN", "")

    @validate("tenant_name")
    def _check_tenant_name(self, proposal) -> str:
        if not re.match(ID_PATTERN, proposal.value):
            raise TraitError(
                f"c.RemoteApp.tenant_name {proposal.value!r}: letters, digits, '_.:-', "
                "a letter or digit first, at most 128"
            )
        return proposal.value

    @validate("user_quota")
    def _check_user_quota(self, proposal) -> dict:
        try:
            parse_limits(proposal.value)
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return proposal.value

    @default("tenant_name")
    def _default_tenant_name(self) -> str:
        return tenant_id(socket.gethostname())

    @default("db_path")
    def _default_db_path(self) -> str:
        return os.path.join(jupyter_data_dir(), "jupyter_remote.sqlite")

    def _config_nodes(self) -> list[dict]:
        out = []
        for entry in self.nodes:
            entry = {"url": entry} if isinstance(entry, str) else dict(entry)
            if entry.get("token_file"):
                with open(entry["token_file"]) as fh:
                    entry["token"] = fh.readline().strip()
            out.append(entry)
        if not out and self.local_agent_url:
            out.append({"url": self.local_agent_url})
        return out

    def initialize_settings(self) -> None:
        # Every module logs to the package's logger; hang it under the server's log, as
        # ServerApp does with tornado's, so its lines reach the server's handlers and level.
        logging.getLogger(LOGGER).parent = self.serverapp.log
        self.manager = RemoteManager(parent=self)  # settings: this app's traits
        label_config(self.manager.registry.nodes, self._config_nodes())
        if self.swarm_url:
            self.swarm = SwarmWatch.from_settings(self, self.manager.registry, parent=self)
        if self.gateway_port:
            self.manager.configure_gateway(
                bind=self.gateway_bind,
                port=self.gateway_port,
                mode=self.gateway_mode,
                log_file=self.gateway_log_file,
                stale_threshold_ms=self.stale_threshold_ms,
            )
        self.settings.update(
            jupyter_remote_manager=self.manager,
            jupyter_remote_join_token=self.join_token,
            jupyter_remote_max_job_body=self.max_job_body,
            jupyter_remote_max_execution_body=self.max_execution_body,
        )
        # Kernels started by this server inherit these: how %%remote finds the API.
        os.environ[ENV_URL] = self.serverapp.connection_url
        os.environ[ENV_TOKEN] = self.serverapp.identity_provider.token or ""

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())  # the server prefixes its base_url

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        soft, hard = raise_open_files_limit(self.open_files_limit)
        self.log.info("jupyter-remote: open-files limit %d (hard %d)", soft, hard)
        self.accept_guard = AcceptGuard.install_for(serverapp)
        self.manager.start()
        if self.swarm is not None:
            await self.swarm.start()  # the swarm's nodes are in the pool before any cell
        serverapp.event_logger.add_listener(
            schema_id=KERNEL_ACTIONS, listener=self.manager.on_kernel_event
        )
        stop_on_sigint(serverapp)

    async def stop_extension(self) -> None:
        """The server stops its extensions, then shuts its kernels down: their sessions go
        first, while the agents can still be reached."""
        if self.swarm is not None:
            self.swarm.stop()
        if self.manager is not None:
            kernels, removed = await self.manager.kernels.remove_at_stop()
            if kernels:
                self.log.info(
                    "jupyter-remote: removed %d session container(s) of %d kernel(s) at stop",
                    len(removed),
                    kernels,
                )
            await self.manager.stop()
        if self.accept_guard is not None:
            self.accept_guard.close()


def tenant_id(name: str) -> str:
    """A host name as an id (letters, digits, '.', '_', '-'; a letter or digit first)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")[:64]
    return cleaned or "jupyter-server"


def stop_on_sigint(serverapp) -> None:
    """Without a terminal, the server leaves SIGINT to Python: the KeyboardInterrupt ends
    its loop with no clean-up at all (kernels orphaned, their sessions left running).
    Where the server handles SIGTERM itself, SIGINT then stops it the same way; with a
    terminal it keeps its own handler (Ctrl-C asks, Ctrl-C twice stops)."""
    if (
        signal.getsignal(signal.SIGTERM) == serverapp._signal_stop
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, serverapp._signal_stop)
