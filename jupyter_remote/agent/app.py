"""`jupyter-remote agent`: the command line (options in settings.py), start-up checks,
daemon mode, `agent stop` and `agent cleanup`; serving itself is serve.py."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys

from traitlets import Bool, Int, TraitError, Unicode, default
from traitlets.config import Application, Config

from jupyter_remote._version import __version__
from jupyter_remote.agent import cleanup, daemon
from jupyter_remote.agent.settings import ENV, AgentOptions, UsageFailure
from jupyter_remote.util.retention import RetentionTraits


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


class AgentStopApp(Application):
    name = "jupyter-remote agent stop"
    description = "Stop an agent that runs as a daemon (SIGTERM, then wait)."
    pid_file = Unicode(help="The daemon's pid file (default: DATA_DIR/agent.pid).", config=True)
    data_dir = Unicode(help="The agent's data directory.", config=True)
    node_id = Unicode(
        help="The node whose containers are removed (default: the one the "
        "agent last ran as, noted in DATA_DIR).",
        config=True,
    )
    remove_containers = Bool(
        False,
        help="After the agent stopped, remove every container it made (sessions, jobs, "
        "warm pool): their files go too. Without it they are kept for its next start.",
        config=True,
    )
    aliases = {
        "pid-file": "AgentStopApp.pid_file",
        "data-dir": "AgentStopApp.data_dir",
        "node-id": "AgentStopApp.node_id",
    }
    flags = {
        "remove-containers": (
            {"AgentStopApp": {"remove_containers": True}},
            remove_containers.help,
        )
    }

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return _env("DATA_DIR", os.path.expanduser("~/.local/share/jupyter-remote/agent"))

    @default("pid_file")
    def _default_pid_file(self) -> str:
        return _env("PID_FILE", os.path.join(self.data_dir, "agent.pid"))

    @default("node_id")
    def _default_node_id(self) -> str:
        return _env("NODE_ID", cleanup.recorded_node(self.data_dir) or "")

    def start(self) -> None:
        try:
            print(daemon.stop(self.pid_file))
        except (LookupError, TimeoutError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exit(1)
        if self.remove_containers:
            self.remove()

    def remove(self) -> None:
        """Remove the node's containers: one summary line, a line per failure."""
        if not self.node_id:
            print(
                f"error: no node id noted in {self.data_dir}; give --node-id (an agent's "
                "default is its host name, plus -PORT when its port is not 9527)",
                file=sys.stderr,
            )
            self.exit(1)
        from docker.errors import DockerException

        try:
            line, failed = cleanup.cleanup(self.node_id, self.data_dir)
        except DockerException as exc:
            print(f"error: cannot reach the Docker engine: {exc}", file=sys.stderr)
            self.exit(1)
        print(line)
        for failure in failed:
            print(f"error: could not remove {failure}", file=sys.stderr)
        if failed:
            self.exit(1)


class AgentCleanupApp(AgentStopApp):
    name = "jupyter-remote agent cleanup"
    description = (
        "Remove every container a stopped agent made on this Docker engine (sessions, "
        "jobs, warm pool) and their runner directories."
    )
    aliases = {
        "pid-file": "AgentCleanupApp.pid_file",
        "data-dir": "AgentCleanupApp.data_dir",
        "node-id": "AgentCleanupApp.node_id",
    }
    flags = {}

    def start(self) -> None:
        pid = daemon.read_pid(self.pid_file)
        if pid is not None and daemon.is_alive(pid):
            print(
                f"error: the agent (pid {pid}) is running; stop it and remove its "
                "containers with: jupyter-remote agent stop --remove-containers",
                file=sys.stderr,
            )
            self.exit(1)
        self.remove()


class AgentApp(AgentOptions, RetentionTraits, Application):
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
    jupyter-remote agent stop --remove-containers
    jupyter-remote agent cleanup                          # what a stopped agent left
    """

    # an agent keeps logs too: 4 GiB, a busy week of small cells at ~12 KB each
    retention_max_bytes = Int(4 << 30, help=RetentionTraits.retention_max_bytes.help).tag(
        config=True
    )

    aliases = {
        "listen": "AgentApp.listen",
        "token": "AgentApp.token",
        "token-file": "AgentApp.token_file",
        "tenants-file": "AgentApp.tenants_file",
        "certfile": "AgentApp.certfile",
        "keyfile": "AgentApp.keyfile",
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
        "workdir": "AgentApp.workdir",
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
        "gpus-visible": "AgentApp.gpus_visible",
        "gpu-mode": "AgentApp.gpu_mode",
    }
    flags = {
        "daemon": ({"AgentApp": {"daemon": True}}, daemon.__doc__.splitlines()[0]),
        "allow-network": (
            {"AgentApp": {"allow_network": True}},
            "Let requests ask for a network other than none.",
        ),
        "gpu-sharing": (
            {"AgentApp": {"gpu_sharing": True}},
            "Let two holders hold the same GPU at once.",
        ),
        "keep-failed": (
            {"AgentApp": {"keep_failed": True}},
            "Leave containers Docker could not start, for docker inspect.",
        ),
        "no-runner": (
            {"AgentApp": {"runner": False}},
            "Every cell is a docker exec (no runner in containers, no warm pool).",
        ),
    }
    subcommands = {
        "stop": (AgentStopApp, AgentStopApp.description),
        "cleanup": (AgentCleanupApp, AgentCleanupApp.description),
    }

    @default("log_level")
    def _d_log_level(self):
        return logging.INFO  # noqa: E704 - operators want to see starts

    def initialize(self, argv=None) -> None:
        """Environment first (JUPYTER_REMOTE_AGENT_<OPTION>), then the command line over it."""
        try:
            self.update_config(self.config_from_env(os.environ))
        except (UsageFailure, TraitError) as exc:  # TraitError: a value out of its range
            print(f"error: {exc}", file=sys.stderr)
            self.exit(2)
        super().initialize(argv)

    @classmethod
    def config_from_env(cls, environ) -> Config:
        """Each option's JUPYTER_REMOTE_AGENT_<NAME> variable, parsed like the option."""
        config = Config()
        own = Application.class_traits(config=True)
        for name, trait in cls.class_traits(config=True).items():
            if name in own:
                continue
            raw = environ.get(ENV + name.upper())
            if raw is None:
                continue
            try:
                config.AgentApp[name] = trait.from_string(raw)
            except (TraitError, ValueError) as exc:
                raise UsageFailure(f"{ENV}{name.upper()}={raw!r} is not valid: {exc}") from None
        return config

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
        if not is_loopback(host) and not token and not self.tenants_file:
            raise UsageFailure(
                f"refusing to listen on {host}:{port} without a token: give "
                "--token, --token-file or --tenants-file (only loopback binds may go without)"
            )
        credentials = self.credentials(token)
        limits = self.limits()
        self.check_numbers()
        if self.join and not self.join_token:
            raise UsageFailure("--join needs --join-token (the server's c.RemoteApp.join_token)")
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        cleanup.remember_node(self.data_dir, self.node_id)  # for `agent cleanup`
        if self.daemon:
            daemon.daemonize(self.log_file, self.pid_file, host, port)
        logging.basicConfig(
            level=self.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        from jupyter_remote.agent.serve import serve  # docker, tornado: only when serving

        asyncio.run(serve(self, host, port, token, limits, credentials))
