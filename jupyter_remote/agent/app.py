"""`jupyter-remote agent`: configuration, start-up checks, daemon mode and `agent stop`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import os
import signal
import socket
import sys

from tornado.httpserver import HTTPServer
from traitlets import Bool, Float, Int, TraitError, Unicode, default
from traitlets.config import Application, Config

from jupyter_remote._version import __version__
from jupyter_remote.agent import daemon
from jupyter_remote.agent.join import advertised_url, keep_joined
from jupyter_remote.agent.specs import KEPT_CAPS, Limits, parse_caps, parse_memory
from jupyter_remote.protocol.errors import RemoteError
from jupyter_remote.util.retention import Policy

ENV = "JUPYTER_REMOTE_AGENT_"


def _env(name: str, fallback: str) -> str:
    return os.environ.get(ENV + name, fallback)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only binds allowed without a token."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UsageFailure(Exception):
    """A mistake in how the agent was started: one line to the user, exit status 2."""


class AgentStopApp(Application):
    name = "jupyter-remote agent stop"
    description = "Stop an agent that runs as a daemon (SIGTERM, then wait)."
    pid_file = Unicode(help="The daemon's pid file (default: DATA_DIR/agent.pid).", config=True)
    data_dir = Unicode(help="The agent's data directory.", config=True)
    aliases = {"pid-file": "AgentStopApp.pid_file", "data-dir": "AgentStopApp.data_dir"}

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return _env("DATA_DIR", os.path.expanduser("~/.local/share/jupyter-remote/agent"))

    @default("pid_file")
    def _default_pid_file(self) -> str:
        return _env("PID_FILE", os.path.join(self.data_dir, "agent.pid"))

    def start(self) -> None:
        try:
            print(daemon.stop(self.pid_file))
        except (LookupError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exit(1)


class AgentApp(Application):
    name = "jupyter-remote agent"
    version = __version__
    description = (
        "Run commands from jupyter-remote in Docker containers on this host. "
        "Every option also reads JUPYTER_REMOTE_AGENT_<OPTION> from the "
        "environment, e.g. JUPYTER_REMOTE_AGENT_LISTEN."
    )
    examples = """
    jupyter-remote agent                                  # 127.0.0.1:9527, no token
    jupyter-remote agent --listen 0.0.0.0:9527 --token-file /etc/jupyter-remote/token
    jupyter-remote agent --daemon --log-file /var/log/jupyter-remote-agent.log
    jupyter-remote agent stop
    """

    listen = Unicode(
        "127.0.0.1:9527",
        help="HOST:PORT to listen on; a non-loopback host needs a token.",
        config=True,
    )
    token = Unicode(
        "", help="Bearer token clients must send (Authorization: Bearer TOKEN).", config=True
    )
    token_file = Unicode("", help="File holding the bearer token (first line).", config=True)
    data_dir = Unicode(
        os.path.expanduser("~/.local/share/jupyter-remote/agent"),
        help="Where execution logs, job logs and records live.",
        config=True,
    )
    node_id = Unicode(
        help="This node's name in the pool and in container labels "
        "(default: the host name, plus -PORT when the port is not 9527).",
        config=True,
    )
    daemon = Bool(
        False, help="Detach and run in the background, logging to --log-file.", config=True
    )
    log_file = Unicode(help="Log file in daemon mode (default: DATA_DIR/agent.log).", config=True)
    pid_file = Unicode(help="Pid file in daemon mode (default: DATA_DIR/agent.pid).", config=True)
    default_image = Unicode(
        "jupyter-remote/python:local", help="Image used when a request names none.", config=True
    )
    default_timeout = Float(
        1800.0,
        help="Seconds before a command is killed when the request "
        "gives no timeout; 0 means no limit.",
        config=True,
    )
    idle_timeout = Float(
        3600.0,
        help="Seconds a session container may sit idle before it is "
        "removed; 0 keeps it until deleted.",
        config=True,
    )
    memory = Unicode("2g", help="Default memory limit per container (e.g. 512m, 2g).", config=True)
    cpus = Float(1.0, help="Default CPU limit per container.", config=True)
    pids_limit = Int(1024, help="Default process limit per container.", config=True)
    max_memory = Unicode(
        "", help="Largest memory limit a request may ask for (empty: none).", config=True
    )
    max_cpus = Float(0.0, help="Largest CPU limit a request may ask for (0: none).", config=True)
    allow_network = Bool(
        False, help="Let requests ask for network host or bridge instead of none.", config=True
    )
    allow_extra_caps = Unicode(
        "",
        help="Comma-separated Linux capabilities a request's cap_add may give its container "
        "on top of the few every container keeps (" + ", ".join(KEPT_CAPS) + "), e.g. "
        "NET_RAW,SYS_PTRACE; ALL allows any. Empty (the default): requests may add none.",
        config=True,
    )
    tmp_size = Unicode(
        "256m",
        help="Size of the writable /tmp (a tmpfs, counted in the container's memory) that a "
        "container asked for with read_only: true gets.",
        config=True,
    )
    max_request_bytes = Int(
        1 << 20,
        help="Largest request body accepted, except for the bodies that carry a cell "
        "(see --max-execution-bytes).",
        config=True,
    )
    max_execution_bytes = Int(
        32 << 20,
        help="Largest body of POST /v1/executions and POST /execute, which carry the cell "
        "itself; a cell travels on stdin, so it may be far larger than the 128 KiB argv cap.",
        config=True,
    )
    join = Unicode(
        "",
        help="Jupyter server URL whose pool this agent joins by itself (needs --join-token).",
        config=True,
    )
    join_token = Unicode(
        "",
        help="The server's join token (c.RemoteApp.join_token). Env: "
        "JUPYTER_REMOTE_AGENT_JOIN_TOKEN.",
        config=True,
    )
    advertise_url = Unicode(
        "",
        help="URL the server should use to reach this agent when "
        "joining (default: http://LISTEN_HOST:PORT).",
        config=True,
    )
    kill_grace = Float(
        5.0,
        help="Seconds a cancelled or timed-out command has, after its signal (SIGINT, "
        "SIGTERM), to write its last lines and exit with its own code before SIGKILL.",
        config=True,
    )
    runner = Bool(
        True,
        help="Run a runner process (docs/runner.md) as the main process of session and warm "
        "containers of images with python3 >= 3.8: cells go over its unix socket, shell state "
        "and Python state persist, cancel needs no host PID. --no-runner: every cell is a "
        "docker exec, as before.",
        config=True,
    )
    warm_images = Unicode(
        "",
        help="Comma-separated images to keep warm containers of, for fresh executions "
        "(default: the default image). Only images with python3 >= 3.8 are pooled.",
        config=True,
    )
    warm_pool_size = Int(
        1,
        help="Warm containers kept per image in --warm-images, started in the background; "
        "a fresh execution with the default limits takes one instead of creating a container. "
        "0 turns the pool off.",
        config=True,
    )
    sample_interval = Float(2.0, help="Seconds between resource samples.", config=True)
    retention_max_age = Float(
        7 * 24 * 3600.0,
        help="Seconds a finished execution or job (record and output) is kept after it ended "
        "(default a week); older ones are removed oldest-first. 0: no age limit.",
        config=True,
    )
    retention_max_bytes = Int(
        4 << 30,
        help="Most bytes of disk the finished execution and job records and their logs take "
        "in all (default 4 GiB: a busy week of small cells at ~12 KB each); over it, the "
        "oldest are removed. 0: no size limit.",
        config=True,
    )
    retention_min_age = Float(
        600.0,
        help="Seconds a record is kept after it ended whatever the limits, so a server cut off "
        "from this node settles its executions from the full record.",
        config=True,
    )
    retention_interval = Float(
        60.0, help="Seconds between retention passes (in the background).", config=True
    )
    retention_per_pass = Int(
        1000, help="Most records one retention pass removes (bounds its time).", config=True
    )
    expired_keep = Float(
        30 * 24 * 3600.0,
        help="Seconds an id removed by retention keeps answering 404 expired (with its "
        "outcome) and is refused for a new run; after that it is forgotten.",
        config=True,
    )
    cpu_max = Float(
        95.0,
        help="CPU percent above which the node reports busy (a warning: it still takes work).",
        config=True,
    )
    memory_max = Float(
        95.0,
        help="Memory percent above which the node reports busy (a warning: it still takes work).",
        config=True,
    )
    disk_max = Float(
        90.0,
        help="Disk percent (of --data-dir) above which the node is unhealthy: it takes no work.",
        config=True,
    )

    aliases = {
        "listen": "AgentApp.listen",
        "token": "AgentApp.token",
        "token-file": "AgentApp.token_file",
        "data-dir": "AgentApp.data_dir",
        "node-id": "AgentApp.node_id",
        "log-file": "AgentApp.log_file",
        "pid-file": "AgentApp.pid_file",
        "default-image": "AgentApp.default_image",
        "default-timeout": "AgentApp.default_timeout",
        "idle-timeout": "AgentApp.idle_timeout",
        "memory": "AgentApp.memory",
        "cpus": "AgentApp.cpus",
        "pids-limit": "AgentApp.pids_limit",
        "max-memory": "AgentApp.max_memory",
        "max-cpus": "AgentApp.max_cpus",
        "allow-extra-caps": "AgentApp.allow_extra_caps",
        "tmp-size": "AgentApp.tmp_size",
        "max-request-bytes": "AgentApp.max_request_bytes",
        "max-execution-bytes": "AgentApp.max_execution_bytes",
        "kill-grace": "AgentApp.kill_grace",
        "sample-interval": "AgentApp.sample_interval",
        "warm-images": "AgentApp.warm_images",
        "warm-pool-size": "AgentApp.warm_pool_size",
        "cpu-max": "AgentApp.cpu_max",
        "memory-max": "AgentApp.memory_max",
        "disk-max": "AgentApp.disk_max",
        "retention-max-age": "AgentApp.retention_max_age",
        "retention-max-bytes": "AgentApp.retention_max_bytes",
        "retention-min-age": "AgentApp.retention_min_age",
        "retention-interval": "AgentApp.retention_interval",
        "retention-per-pass": "AgentApp.retention_per_pass",
        "expired-keep": "AgentApp.expired_keep",
        "log-level": "Application.log_level",
        "join": "AgentApp.join",
        "join-token": "AgentApp.join_token",
        "advertise-url": "AgentApp.advertise_url",
    }
    flags = {
        "daemon": ({"AgentApp": {"daemon": True}}, daemon.__doc__.splitlines()[0]),
        "allow-network": (
            {"AgentApp": {"allow_network": True}},
            "Let requests ask for a network other than none.",
        ),
        "no-runner": (
            {"AgentApp": {"runner": False}},
            "Every cell is a docker exec (no runner in containers, no warm pool).",
        ),
    }
    subcommands = {"stop": (AgentStopApp, AgentStopApp.description)}

    @default("log_level")
    def _d_log_level(self):
        return logging.INFO  # noqa: E704 - operators want to see starts

    def initialize(self, argv=None) -> None:
        """Environment first (JUPYTER_REMOTE_AGENT_<OPTION>), then the command line over it."""
        try:
            self.update_config(self.config_from_env(os.environ))
        except UsageFailure as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exit(2)
        super().initialize(argv)

    @classmethod
    def config_from_env(cls, environ) -> Config:
        """Each option's JUPYTER_REMOTE_AGENT_<NAME> variable, parsed like the option."""
        config = Config()
        for name, trait in cls.class_own_traits(config=True).items():
            raw = environ.get(ENV + name.upper())
            if raw is None:
                continue
            try:
                config.AgentApp[name] = trait.from_string(raw)
            except (TraitError, ValueError) as exc:
                raise UsageFailure(f"{ENV}{name.upper()}={raw!r} is not valid: {exc}") from None
        return config

    def check_numbers(self) -> None:
        """Every number from the command line or environment: finite and in range."""
        rules = [
            ("--default-timeout", self.default_timeout, 0, None, "0 means no limit"),
            ("--idle-timeout", self.idle_timeout, 0, None, "0 keeps sessions"),
            ("--cpus", self.cpus, 0.01, None, ""),
            ("--pids-limit", self.pids_limit, 16, None, ""),
            ("--max-cpus", self.max_cpus, 0, None, "0 means no ceiling"),
            ("--max-request-bytes", self.max_request_bytes, 1, None, ""),
            ("--max-execution-bytes", self.max_execution_bytes, 1, None, ""),
            ("--kill-grace", self.kill_grace, 0, 3600, ""),
            ("--sample-interval", self.sample_interval, 0.05, 3600, ""),
            ("--warm-pool-size", self.warm_pool_size, 0, 64, "0 turns the pool off"),
            ("--cpu-max", self.cpu_max, 0, 100, "percent"),
            ("--memory-max", self.memory_max, 0, 100, "percent"),
            ("--disk-max", self.disk_max, 0, 100, "percent"),
            ("--retention-max-age", self.retention_max_age, 0, None, "0: no age limit"),
            ("--retention-max-bytes", self.retention_max_bytes, 0, None, "0: no size limit"),
            ("--retention-min-age", self.retention_min_age, 0, None, ""),
            ("--retention-interval", self.retention_interval, 0.1, 86400, ""),
            ("--retention-per-pass", self.retention_per_pass, 1, 1_000_000, ""),
            ("--expired-keep", self.expired_keep, 0, None, ""),
        ]
        for flag, value, low, high, note in rules:
            if not math.isfinite(value) or value < low or (high is not None and value > high):
                span = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
                extra = f" ({note})" if note else ""
                raise UsageFailure(f"{flag} must be {span}{extra}; got {value!r}")

    @default("node_id")
    def _d_node_id(self):
        host, port = self.host_port()
        name = socket.gethostname()
        return name if port == 9527 else f"{name}-{port}"

    @default("log_file")
    def _d_log_file(self):
        return os.path.join(self.data_dir, "agent.log")

    @default("pid_file")
    def _d_pid_file(self):
        return os.path.join(self.data_dir, "agent.pid")

    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageFailure(f"--listen must be HOST:PORT; got {self.listen!r}")
        return host.strip("[]") or "127.0.0.1", int(port)

    def read_token(self) -> str:
        if self.token_file:
            try:
                with open(self.token_file) as fh:
                    mode = os.fstat(fh.fileno()).st_mode & 0o777
                    token = fh.readline().strip()
            except OSError as exc:
                raise UsageFailure(f"cannot read --token-file: {exc}") from None
            if mode & 0o077:  # a secret at rest: only its owner should read it
                print(
                    f"warning: --token-file {self.token_file} is readable by others (mode "
                    f"{mode:04o}); make it private with: chmod 600 {self.token_file}",
                    file=sys.stderr,
                )
            return token
        return self.token

    def limits(self) -> Limits:
        try:
            allow_caps = parse_caps(self.allow_extra_caps)
        except ValueError as exc:
            raise UsageFailure(f"--allow-extra-caps: {exc}") from None
        try:
            tmp_size = parse_memory(self.tmp_size)
        except RemoteError as exc:
            raise UsageFailure(f"--tmp-size: {exc.message}") from None
        try:
            return Limits(
                allow_caps=allow_caps,
                tmp_size=tmp_size,
                memory=parse_memory(self.memory),
                cpus=self.cpus,
                pids_limit=self.pids_limit,
                max_memory=parse_memory(self.max_memory) if self.max_memory else 0,
                max_cpus=self.max_cpus,
                allow_network=self.allow_network,
            )
        except RemoteError as exc:
            raise UsageFailure(exc.message) from None

    def start(self) -> None:
        if self.subapp is not None:
            return self.subapp.start()
        try:
            self._run()
        except UsageFailure as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exit(2)

    def _run(self) -> None:
        host, port = self.host_port()
        token = self.read_token()
        if not is_loopback(host) and not token:
            raise UsageFailure(
                f"refusing to listen on {host}:{port} without a token: give "
                "--token or --token-file (only loopback binds may go without)"
            )
        limits = self.limits()
        self.check_numbers()
        if self.join and not self.join_token:
            raise UsageFailure("--join needs --join-token (the server's c.RemoteApp.join_token)")
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        if self.daemon:
            daemon.daemonize(self.log_file, self.pid_file, host, port)
        logging.basicConfig(
            level=self.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        asyncio.run(self._serve(host, port, token, limits))

    async def _serve(self, host: str, port: int, token: str, limits: Limits) -> None:
        from jupyter_remote.agent.core import Agent
        from jupyter_remote.agent.web.base import BodyLimits
        from jupyter_remote.agent.web.routes import make_app

        body_limits = BodyLimits(execution=self.max_execution_bytes, other=self.max_request_bytes)

        try:
            agent = Agent(
                node_id=self.node_id,
                data_dir=self.data_dir,
                limits=limits,
                default_image=self.default_image,
                default_timeout=self.default_timeout or None,
                idle_timeout=self.idle_timeout,
                kill_grace=self.kill_grace,
                stop_grace=max(self.kill_grace, 1.0),
                sample_interval=self.sample_interval,
                use_runner=self.runner,
                warm_images=[i.strip() for i in self.warm_images.split(",") if i.strip()] or None,
                warm_pool_size=self.warm_pool_size,
                retention=Policy.from_traits(self),
                thresholds={
                    "cpu_max": self.cpu_max,
                    "memory_max": self.memory_max,
                    "disk_max": self.disk_max,
                },
            )
        except RemoteError as exc:
            raise UsageFailure(exc.message) from None
        agent.jobs.changes.loop = asyncio.get_running_loop()
        agent.executions.loop = asyncio.get_running_loop()
        await agent.blocking(agent.start)
        server = HTTPServer(
            make_app(agent, token or None, body_limits),
            max_body_size=body_limits.largest + 1,
            idle_connection_timeout=300,
        )
        try:
            server.listen(port, address=host)
        except OSError as exc:
            raise UsageFailure(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        reaper = asyncio.get_running_loop().create_task(self._reap(agent))
        joiner = None
        if self.join:
            url = self.advertise_url or advertised_url(host, port)
            joiner = asyncio.get_running_loop().create_task(
                keep_joined(self.join, self.join_token, url, token)
            )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        logging.getLogger("jupyter_remote.agent").info(
            "agent %s (node %s) listening on http://%s:%d, data in %s%s",
            __version__,
            self.node_id,
            host,
            port,
            self.data_dir,
            "" if token else " (no token)",
        )
        await stopping.wait()
        logging.getLogger("jupyter_remote.agent").info("stopping")
        agent.stopping = True
        agent.jobs.changes.notify()  # long-polls answer now instead of being cut off
        server.stop()
        reaper.cancel()
        if joiner:
            joiner.cancel()
        await agent.blocking(agent.stop)
        await agent.drain(2.0)
        if self.daemon and daemon.read_pid(self.pid_file) == os.getpid():
            os.unlink(self.pid_file)

    async def _reap(self, agent) -> None:
        """Idle sessions: an in-memory check each second (Docker only to remove); other
        nodes' expired containers: one Docker listing a minute; retention every
        --retention-interval."""
        from jupyter_remote.agent.expiry import SWEEP_EVERY

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
