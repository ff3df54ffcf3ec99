"""The agent's options: every setting of `jupyter-remote agent`, its help and default,
and the values the agent is built from (where to listen, the token, container limits)."""

from __future__ import annotations

import math
import os
import socket
import sys

from traitlets import (
    Bool,
    Enum,
    Float,
    HasTraits,
    Int,
    TraitError,
    Unicode,
    default,
    validate,
)

from jupyter_remote.agent.gpus import GPU_MODES, parse_visible
from jupyter_remote.agent.specs import KEPT_CAPS, Limits, parse_caps, parse_memory
from jupyter_remote.protocol.errors import RemoteError

ENV = "JUPYTER_REMOTE_AGENT_"


class UsageFailure(Exception):
    """A mistake in how the agent was started: one line to the user, exit status 2."""


class AgentOptions(HasTraits):
    """The agent's settings (retention's come from util.retention.RetentionTraits); mixed
    into AgentApp, so each stays `c.AgentApp.NAME` and `--NAME`."""

    listen = Unicode(
        "127.0.0.1:9527",
        help="HOST:PORT to listen on; a non-loopback host needs a token.",
        config=True,
    )
    token = Unicode(
        "", help="Bearer token clients must send (Authorization: Bearer TOKEN).", config=True
    )
    token_file = Unicode("", help="File holding the bearer token (first line).", config=True)
    tenants_file = Unicode(
        "",
        help='JSON file of named tenant credentials, each with its quota: {"tenants": '
        '{"NAME": {"token": "...", "quota": {"sessions": 4, "cpus": 8, '
        '"memory": "16g", "gpus": 1}}}} (mode 600). A tenant sees only what it made; '
        "--token stays the operator's, which sees everything. Re-read when it changes and on "
        "SIGHUP. See docs/security.md#tenants.",
        config=True,
    )
    certfile = Unicode(
        "",
        help="TLS certificate (PEM, with its chain) to serve https; with --keyfile. Without "
        "it the agent speaks plain HTTP (behind a TLS proxy, or on loopback).",
        config=True,
    )
    keyfile = Unicode("", help="The private key (PEM) of --certfile.", config=True)
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
    workdir = Unicode(
        "",
        help="Absolute directory the cells of session and fresh containers start in when a "
        "request names none. Empty (the default): the image's WORKDIR, else the home "
        "directory of the container's user (/root for root), else /tmp; never /.",
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
    gpus_visible = Unicode(
        "",
        help="GPU device indices this agent gives out, e.g. 0,1,2,3 (the others are kept "
        "back), or none. Empty (the default): every GPU NVML finds (nvidia-ml-py); no "
        "library or no driver means no GPUs. Without NVML, a list names GPUs by index only.",
        config=True,
    )
    gpu_sharing = Bool(
        False,
        help="Let two holders (sessions, fresh executions, job tasks) hold the same GPU at "
        "once. Off (the default): a GPU has one holder; a request finding too few free "
        "GPUs is refused (409 gpus_unavailable).",
        config=True,
    )
    gpu_mode = Enum(
        list(GPU_MODES),
        default_value="device_requests",
        help="How a container gets its GPUs: device_requests (Docker's --gpus; needs "
        "NVIDIA's container toolkit), or env (NVIDIA_VISIBLE_DEVICES only, for engines "
        "whose default runtime is nvidia). Either way every container of a node with GPUs "
        "gets NVIDIA_VISIBLE_DEVICES set to its own GPUs, or void.",
        config=True,
    )
    keep_failed = Bool(
        False,
        help="Leave a container Docker created but could not start (a GPU container on an "
        "engine without NVIDIA's runtime, say) for docker inspect, instead of removing it at "
        "once; the agent's next start removes it.",
        config=True,
    )
    sample_interval = Float(2.0, help="Seconds between resource samples.", config=True)
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
        ]
        for flag, value, low, high, note in rules:
            if not math.isfinite(value) or value < low or (high is not None and value > high):
                span = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
                extra = f" ({note})" if note else ""
                raise UsageFailure(f"{flag} must be {span}{extra}; got {value!r}")

    @validate("workdir")
    def _v_workdir(self, proposal):
        value = proposal["value"]
        if value and (not value.startswith("/") or "\0" in value or len(value) > 4096):
            raise TraitError(f"--workdir must be an absolute path; got {value!r}")
        return value

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

    def ssl_context(self):
        """The TLS context for --certfile/--keyfile, or None for plain HTTP."""
        if not self.certfile and not self.keyfile:
            return None
        if not (self.certfile and self.keyfile):
            raise UsageFailure("--certfile and --keyfile go together")
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise UsageFailure(f"cannot load --certfile/--keyfile: {exc}") from None
        return context

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

    def credentials(self, token: str):
        """The operator's token and the tenants file; a bad file is a UsageFailure."""
        from jupyter_remote.agent.tenants import Credentials, TenantsFileError

        try:
            return Credentials(token, self.tenants_file)
        except TenantsFileError as exc:
            raise UsageFailure(f"--tenants-file: {exc}") from None

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
            gpus_visible = parse_visible(self.gpus_visible)
        except ValueError as exc:
            raise UsageFailure(f"--gpus-visible {exc}") from None
        try:
            return Limits(
                gpus_visible=gpus_visible,
                gpu_sharing=self.gpu_sharing,
                gpu_mode=self.gpu_mode,
                keep_failed=self.keep_failed,
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
