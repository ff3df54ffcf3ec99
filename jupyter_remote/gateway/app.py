"""`jupyter-remote gateway`: the engine-state gateway as a command (ELRAR-compatible env)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys

from traitlets import Bool, Int, Unicode, default
from traitlets.config import Application

from jupyter_remote._version import __version__
from jupyter_remote.agent import daemon
from jupyter_remote.gateway.core import StateGateway
from jupyter_remote.gateway.jsonl import RotatingJsonl

ELRAR = "VLLM_STATE_GATEWAY_"
log = logging.getLogger("jupyter_remote.gateway")


def _env(name: str, fallback: str) -> str:
    return os.environ.get(ELRAR + name, fallback)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


class GatewayApp(Application):
    name = "jupyter-remote gateway"
    version = __version__
    description = (
        "Receive engine states (JSON datagrams) over UDP, keep the latest per engine, and log "
        "every valid one to JSONL. Reads the ELRAR variables VLLM_STATE_GATEWAY_NETWORK_MODE, "
        "_UDP_PORT, _BIND_ADDRESS, _STALE_THRESHOLD, _ENABLE_LOG, _LOG_FILE."
    )
    mode = Unicode(help="unicast or broadcast.", config=True)
    port = Int(help="UDP port.", config=True)
    bind = Unicode(
        help="Bind address: 127.0.0.1 on a host; 0.0.0.0 inside a container "
        "(never the container's own IP: see docs/engine-states.md).",
        config=True,
    )
    stale_threshold = Int(help="Milliseconds after which an engine's state is stale.", config=True)
    enable_log = Bool(help="Log every valid state to --log-file.", config=True)
    log_file = Unicode(help="The JSONL log of states.", config=True)
    max_bytes = Int(100 << 20, help="Rotate the log at this size.", config=True)
    backups = Int(5, help="Rotated logs to keep.", config=True)
    compress = Bool(False, help="gzip rotated logs.", config=True)
    daemon = Bool(False, help="Run in the background (log to --daemon-log).", config=True)
    daemon_log = Unicode(help="The gateway's own log in daemon mode.", config=True)
    pid_file = Unicode(help="Pid file in daemon mode.", config=True)

    aliases = {
        "mode": "GatewayApp.mode",
        "port": "GatewayApp.port",
        "bind": "GatewayApp.bind",
        "stale-threshold": "GatewayApp.stale_threshold",
        "log-file": "GatewayApp.log_file",
        "max-bytes": "GatewayApp.max_bytes",
        "backups": "GatewayApp.backups",
        "daemon-log": "GatewayApp.daemon_log",
        "pid-file": "GatewayApp.pid_file",
    }
    flags = {
        "daemon": ({"GatewayApp": {"daemon": True}}, "Run in the background."),
        "no-log": ({"GatewayApp": {"enable_log": False}}, "Do not log states."),
        "compress": ({"GatewayApp": {"compress": True}}, "gzip rotated logs."),
    }

    @default("mode")
    def _d_mode(self):
        return _env("NETWORK_MODE", "unicast")  # noqa: E704

    @default("port")
    def _d_port(self):
        return int(_env("UDP_PORT", "9999"))  # noqa: E704

    @default("bind")
    def _d_bind(self):
        return _env("BIND_ADDRESS", "127.0.0.1")  # noqa: E704

    @default("stale_threshold")
    def _d_stale(self):
        return int(_env("STALE_THRESHOLD", "2000"))  # noqa: E704

    @default("enable_log")
    def _d_enable(self):
        return _flag(_env("ENABLE_LOG", "true"))  # noqa: E704

    @default("log_file")
    def _d_log_file(self):  # noqa: E704
        return _env(
            "LOG_FILE", os.path.expanduser("~/.local/share/jupyter-remote/engine_states.jsonl")
        )

    @default("daemon_log")
    def _d_daemon_log(self):
        return f"{self.log_file}.gateway.log"  # noqa: E704

    @default("pid_file")
    def _d_pid(self):
        return f"{self.log_file}.gateway.pid"  # noqa: E704

    @default("log_level")
    def _d_log_level(self):
        return logging.INFO  # noqa: E704

    def start(self) -> None:
        if self.mode not in ("unicast", "broadcast"):
            print(f"error: --mode must be unicast or broadcast; got {self.mode!r}", file=sys.stderr)
            self.exit(2)
        if self.daemon:
            os.makedirs(os.path.dirname(os.path.abspath(self.pid_file)), exist_ok=True)
            daemon.daemonize(self.daemon_log, self.pid_file, None, None)
        logging.basicConfig(
            level=self.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        try:
            asyncio.run(self._serve())
        except OSError as exc:
            print(
                f"error: cannot listen on udp {self.bind}:{self.port}: {exc.strerror}",
                file=sys.stderr,
            )
            self.exit(2)

    async def _serve(self) -> None:
        jsonl = (
            RotatingJsonl(
                self.log_file,
                max_bytes=self.max_bytes,
                backups=self.backups,
                compress=self.compress,
            )
            if self.enable_log
            else None
        )
        gateway = StateGateway(
            bind=self.bind,
            port=self.port,
            mode=self.mode,
            stale_threshold_ms=self.stale_threshold,
            log=jsonl,
        ).start()
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        if jsonl is not None:
            loop.add_signal_handler(signal.SIGHUP, jsonl.reopen)
        log.info(
            "gateway listening on udp %s:%d (%s); log %s",
            self.bind,
            gateway.port,
            self.mode,
            jsonl.path if jsonl else "off",
        )
        stats = f"{self.log_file}.stats.json"
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            _write_stats(stats, gateway.counters())
        gateway.stop()
        _write_stats(stats, gateway.counters())
        log.info("gateway stopped: %s", gateway.counters())
        if self.daemon and daemon.read_pid(self.pid_file) == os.getpid():
            os.unlink(self.pid_file)


def _write_stats(path: str, counters: dict) -> None:
    """The counters, for anyone to read (the widget, monitoring), replaced atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(counters, fh)
    os.replace(tmp, path)
