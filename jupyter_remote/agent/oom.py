"""OOM kills per container, from Docker's event stream."""

from __future__ import annotations

import logging
import threading
import time

import docker

from jupyter_remote.agent import labels

log = logging.getLogger("jupyter_remote.agent")


class OomWatcher:
    """Counts OOM kills per container from Docker's event stream.

    An exec'd process killed by the kernel's OOM killer exits with 137 like any SIGKILL and
    Docker does not flag the container; the `oom` event is the portable signal.
    """

    def __init__(self, client: docker.DockerClient, node_id: str) -> None:
        self.client = client
        self.node_id = node_id
        self._counts: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stream = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="oom-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - closing a dead stream
                pass

    def count(self, container_id: str) -> int:
        with self._cond:
            return self._counts.get(container_id, 0)

    def wait_for_more(self, container_id: str, before: int, timeout: float) -> bool:
        """True if the container saw an OOM kill since `before` (waiting up to `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._counts.get(container_id, 0) <= before:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _run(self) -> None:
        filters = {"type": "container", "event": "oom", "label": f"{labels.NODE}={self.node_id}"}
        while not self._stopped:
            try:
                self._stream = self.client.events(decode=True, filters=filters)
                for event in self._stream:
                    cid = event.get("id") or event.get("Actor", {}).get("ID")
                    with self._cond:
                        self._counts[cid] = self._counts.get(cid, 0) + 1
                        self._cond.notify_all()
            except Exception as exc:  # noqa: BLE001 - the engine went away; try again later
                if not self._stopped:
                    log.warning("docker event stream broke (%s); reconnecting in 1 s", exc)
                    time.sleep(1)
