"""Daemon mode: detach from the terminal, log to a file, keep a pid file; and stop it again."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time


def read_pid(pid_file: str) -> int | None:
    try:
        with open(pid_file) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemonize(
    log_file: str, pid_file: str, host: str | None, port: int | None, wait: float = 30.0
) -> None:
    """Fork twice; the original process returns only in the daemon, or exits once it listens.

    The parent waits until the daemon accepts connections, so `agent --daemon && curl ...`
    works, and shows the log's tail if the daemon died on the way.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:  # the original process: wait for the daemon, then exit
        os.close(write_end)
        daemon_pid = int(os.read(read_end, 32) or b"0")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if daemon_pid and not is_alive(daemon_pid):
                break
            if host is None:  # nothing to connect to (UDP): running is enough
                time.sleep(1.0)
                if daemon_pid and is_alive(daemon_pid):
                    print(f"started as a daemon (pid {daemon_pid}); log: {log_file}")
                    os._exit(0)
                break
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    print(
                        f"agent started as a daemon (pid {daemon_pid}) on http://{host}:{port}"
                        f"; log: {log_file}"
                    )
                    os._exit(0)
            except OSError:
                time.sleep(0.1)
        print(
            f"error: the agent daemon did not start listening on {host}:{port}; "
            f"last lines of {log_file}:",
            file=sys.stderr,
        )
        try:
            with open(log_file, errors="replace") as fh:
                print("".join(fh.readlines()[-15:]), file=sys.stderr)
        except OSError:
            pass
        os._exit(1)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    os.write(write_end, str(os.getpid()).encode())
    os.close(write_end)


def stop(pid_file: str, timeout: float = 30.0) -> str:
    """SIGTERM the daemon named in `pid_file` and wait for it to exit."""
    pid = read_pid(pid_file)
    if pid is None:
        raise LookupError(f"no agent pid file at {pid_file}; is the agent running as a daemon?")
    if not is_alive(pid):
        os.unlink(pid_file)
        return f"agent (pid {pid}) was not running; removed the stale pid file {pid_file}"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            if os.path.exists(pid_file):
                os.unlink(pid_file)
            return f"agent (pid {pid}) stopped"
        time.sleep(0.1)
    raise TimeoutError(f"agent (pid {pid}) did not stop within {timeout:g} s")
