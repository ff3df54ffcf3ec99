"""The warm pool: pre-started containers, runner up, that fresh executions take at once.

A fresh execution (no session) of a warmed image whose limits are the node's defaults
takes a pooled container instead of creating and starting one (create + start is 200-300 ms
of Docker's time), runs its cell over that container's runner and removes it afterwards.
A filler thread tops each image's pool up to `size` in the background; the pool never
holds more than `size` per image. Pooled containers get the same limits, labels and
isolation as any fresh container (kind `fresh`, plus `jupyter-remote.pool=1`), so an
agent that dies leaves nothing a restart or another node's sweep would not remove.
Only images with a usable python3 are pooled (the runner needs one).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

from docker.errors import DockerException

from jupyter_remote.agent.containers import ContainerFactory
from jupyter_remote.agent.expiry import expiry_label
from jupyter_remote.agent.runner_client import RunnerClient, RunnerError
from jupyter_remote.agent.specs import ContainerSpec, Limits, safe_name
from jupyter_remote.protocol.errors import RemoteError
from jupyter_remote.util.failures import log_failure

log = logging.getLogger("jupyter_remote.agent")

# A pooled container's expiry label: long enough for any execution it may be given (one
# whose timeout would outlast it is not given a pooled container), renewed by replacing
# containers older than RECYCLE_AFTER.
POOL_LIFETIME = 30 * 3600.0
RECYCLE_AFTER = 6 * 3600.0


@dataclass
class Warm:
    container_id: str
    runner_dir: str
    created_at: float = field(default_factory=time.time)


class WarmPool:
    def __init__(
        self, factory: ContainerFactory, limits: Limits, images: list[str], size: int
    ) -> None:
        self.factory = factory
        self.limits = limits
        self.images = [i for i in dict.fromkeys(images) if i]
        self.size = max(0, size)
        self.ready: dict[str, list[Warm]] = {i: [] for i in self.images}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._fill_loop, name="warm-pool", daemon=True)
        self.created = 0  # containers this pool has made (for tests and /v1/resources)

    def spec_for(self, image: str) -> ContainerSpec:
        """What a pooled container of `image` is: the node's default limits, network none."""
        return ContainerSpec(
            image=image,
            memory=self.limits.memory,
            cpus=float(self.limits.cpus),
            pids_limit=self.limits.pids_limit,
        )

    def start(self) -> None:
        if self.size and self.images:
            self._thread.start()

    def count(self) -> dict[str, int]:
        with self._lock:
            return {image: len(items) for image, items in self.ready.items()}

    def take(self, spec: ContainerSpec, timeout: float | None) -> tuple[str, str] | None:
        """A warm container for `spec` (container id, runner dir), or None: create one."""
        if not self.size or spec != self.spec_for(spec.image) or spec.image not in self.ready:
            return None
        if (timeout or 24 * 3600) > POOL_LIFETIME - RECYCLE_AFTER - 3600:
            return None
        while True:
            with self._lock:
                items = self.ready[spec.image]
                warm = items.pop(0) if items else None
            self._wake.set()
            if warm is None:
                return None
            try:  # one status round trip (~1 ms): the container may have died meanwhile
                RunnerClient(os.path.join(warm.runner_dir, "runner.sock")).status(timeout=2)
                return warm.container_id, warm.runner_dir
            except RunnerError as exc:
                log.warning("warm container %s is gone (%s)", warm.container_id[:12], exc)
                self._remove(warm)

    def stop(self) -> None:
        """Stop filling and remove every pooled container."""
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(60)
        with self._lock:
            items = [w for ws in self.ready.values() for w in ws]
            for ws in self.ready.values():
                ws.clear()
        for warm in items:
            self._remove(warm)

    def _remove(self, warm: Warm) -> None:
        try:
            self.factory.remove(warm.container_id, warm.runner_dir)
        except DockerException as exc:
            log.warning("could not remove warm container %s: %s", warm.container_id[:12], exc)

    def _fill_loop(self) -> None:
        usable: list[str] | None = None
        while not self._stopped:
            try:
                if usable is None:
                    usable = [i for i in self.images if self._usable(i)]
                failed = self._fill(usable)
            except Exception:  # noqa: BLE001 - the pool tries again; cells never need it
                log_failure(log, "warm pool: filling failed")
                failed = True
            self._wake.wait(10.0 if failed else 60.0)
            self._wake.clear()

    def _fill(self, usable: list[str]) -> bool:
        """Top each image's pool up to `size`; False when Docker refused a container."""
        filled = True
        for image in usable:
            self._recycle(image)
            while not self._stopped and self.count().get(image, 0) < self.size:
                try:
                    warm = self._create(image)
                except (DockerException, RemoteError) as exc:
                    log.warning("could not start a warm %s container: %s", image, exc)
                    filled = False
                    break
                with self._lock:
                    if self._stopped or len(self.ready[image]) >= self.size:
                        extra = warm
                    else:
                        self.ready[image].append(warm)
                        extra = None
                if extra is not None:
                    self._remove(extra)
        return filled

    def _usable(self, image: str) -> bool:
        try:
            self.factory.check_image(image)
        except RemoteError as exc:
            log.warning("warm pool: %s", exc.message)
            return False
        if not self.factory.runner_capable(image):
            log.warning("warm pool: image %s has no python3 >= 3.8; not pooled", image)
            return False
        return True

    def _recycle(self, image: str) -> None:
        now = time.time()
        with self._lock:
            old = [w for w in self.ready[image] if now - w.created_at > RECYCLE_AFTER]
            self.ready[image] = [w for w in self.ready[image] if w not in old]
        for warm in old:
            self._remove(warm)

    def _create(self, image: str) -> Warm:
        node = safe_name(self.factory.node_id)
        cid, runner_dir = self.factory.create_runner(
            self.factory.workdirs.cell_spec(self.spec_for(image)),
            name=f"jr-{node}-w-{uuid.uuid4().hex[:12]}",
            kind="fresh",
            label_extra={"pool": "1", **expiry_label(POOL_LIFETIME)},
        )
        self.created += 1
        return Warm(cid, runner_dir)
