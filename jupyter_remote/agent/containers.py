"""Creating and removing the agent's containers with safe defaults, and watching for OOM kills."""

from __future__ import annotations

import logging
import threading
import time

import docker
from docker.errors import APIError, ImageNotFound, NotFound

from jupyter_remote.agent import labels
from jupyter_remote.agent.specs import ContainerSpec
from jupyter_remote.errors import BadRequest, Unavailable
from jupyter_remote.errors import NotFound as RemoteNotFound

log = logging.getLogger("jupyter_remote.agent")


def host_config_kwargs(spec: ContainerSpec, **extra) -> dict:
    """What docker-py's HostConfig gets for a spec (pure, so properties can check it builds)."""
    return {
        "network_mode": spec.network,
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory,  # no swap: a hog is killed, not slowed to a crawl
        "nano_cpus": int(spec.cpus * 1e9),
        "pids_limit": spec.pids_limit,
        "privileged": False,
        "security_opt": ["no-new-privileges"],
        "init": True,
        **extra,
    }


# Keeps a session or fresh container alive between execs; docker-init (init=True) is PID 1
# and reaps whatever the commands leave behind.
KEEPER = ["sleep", "2147483647"]


class ContainerFactory:
    """Owns every Docker call that creates or removes one of this node's containers."""

    def __init__(self, client: docker.DockerClient, node_id: str) -> None:
        self.client = client
        self.api = client.api
        self.node_id = node_id

    def check_image(self, image: str) -> None:
        """Refuse plainly when the image is not on this node: agents never pull."""
        try:
            self.client.images.get(image)
        except ImageNotFound:
            raise RemoteNotFound(
                f"image {image!r} is not present on node {self.node_id!r}, and agents never "
                "pull images; build or load it on that node first",
                reason="image_not_found",
                image=image,
            ) from None
        except APIError as exc:
            if exc.is_client_error():  # Docker answered: the name is not one it takes
                raise BadRequest(
                    f"image {image!r} is not a valid image reference: {exc.explanation}",
                    reason="bad_image",
                    image=image,
                ) from None
            raise Unavailable(
                f"Docker engine on node {self.node_id!r} did not answer: {exc}",
                reason="docker_unavailable",
            ) from None
        except docker.errors.DockerException as exc:
            raise Unavailable(
                f"Docker engine on node {self.node_id!r} did not answer: {exc}",
                reason="docker_unavailable",
            ) from None

    def host_config(self, spec: ContainerSpec, **extra) -> dict:
        """Limits and isolation every container gets unless the config allows otherwise."""
        return self.api.create_host_config(**host_config_kwargs(spec, **extra))

    def create(
        self,
        spec: ContainerSpec,
        *,
        name: str,
        kind: str,
        command: list[str],
        label_extra: dict[str, str],
        binds: dict | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Create and start a labelled container; returns its id."""
        host_config = self.host_config(spec, binds=binds or None)
        container = self.api.create_container(
            spec.image,
            command=command,
            name=name,
            detach=True,
            environment={**spec.env, **(env or {})},
            working_dir=spec.workdir,
            labels=labels.for_node(self.node_id, kind, **label_extra),
            host_config=host_config,
            network_disabled=spec.network == "none",
        )
        cid = container["Id"]
        try:
            self.api.start(cid)
        except Exception:
            self.remove(cid)
            raise
        return cid

    def create_keeper(
        self, spec: ContainerSpec, *, name: str, kind: str, label_extra: dict[str, str]
    ) -> str:
        """A container that idles until commands are exec'd into it."""
        return self.create(spec, name=name, kind=kind, command=KEEPER, label_extra=label_extra)

    def remove(self, container_id: str) -> None:
        """Remove a container, running or not; gone already is fine."""
        try:
            self.api.remove_container(container_id, force=True, v=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise

    def list(self, kind: str | None = None) -> list[dict]:
        """This node's containers (of one kind), running or not."""
        return self.api.containers(all=True, filters=labels.node_filter(self.node_id, kind))


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
