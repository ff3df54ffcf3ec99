"""Creating and removing the agent's containers with safe defaults (and runners in them)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading

import docker
from docker.errors import APIError, ImageNotFound, NotFound

import jupyter_remote.protocol.records
import jupyter_remote.runner
from jupyter_remote.agent import labels, runner_src
from jupyter_remote.agent.identity import Workdirs, hostname
from jupyter_remote.agent.specs import KEPT_CAPS, ContainerSpec
from jupyter_remote.protocol.errors import BadRequest, Unavailable
from jupyter_remote.protocol.errors import NotFound as RemoteNotFound

log = logging.getLogger("jupyter_remote.agent")


def device_requests(spec: ContainerSpec) -> list[docker.types.DeviceRequest]:
    """The GPUs a spec was given, as Docker's device requests (docker run --gpus)."""
    if not spec.gpus:
        return []
    return [
        docker.types.DeviceRequest(
            driver="nvidia", device_ids=[str(i) for i in spec.gpus], capabilities=[["gpu"]]
        )
    ]


def gpu_env(spec: ContainerSpec) -> dict[str, str]:
    """What NVIDIA's runtime reads last, so a request's own env (or a CUDA image's
    NVIDIA_VISIBLE_DEVICES=all) never reaches a GPU it was not given: "void" means none."""
    return {"NVIDIA_VISIBLE_DEVICES": ",".join(map(str, spec.gpus)) or "void"}


def host_config_kwargs(spec: ContainerSpec, gpu_mode: str = "device_requests", **extra) -> dict:
    """What docker-py's HostConfig gets for a spec (pure, so properties can check it builds).
    GPUs go as device requests unless `gpu_mode` is "env" (NVIDIA_VISIBLE_DEVICES only)."""
    kwargs = {
        "network_mode": spec.network,
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory,  # no swap: a hog is killed, not slowed to a crawl
        "nano_cpus": int(spec.cpus * 1e9),
        "pids_limit": spec.pids_limit,
        "privileged": False,
        "security_opt": ["no-new-privileges"],
        # every capability goes but the few package managers and common tools use
        # (specs.KEPT_CAPS, docs/security.md), plus what the request may add
        "cap_drop": ["ALL"],
        "cap_add": sorted({*KEPT_CAPS, *spec.cap_add}),
        "init": True,
    }
    if spec.read_only:
        kwargs["read_only"] = True
        # a writable /tmp, bounded (its pages count against the container's memory limit)
        kwargs["tmpfs"] = {"/tmp": f"rw,exec,nosuid,nodev,size={spec.tmp_size},mode=1777"}
    if spec.gpus and gpu_mode == "device_requests":
        kwargs["device_requests"] = device_requests(spec)
    return {**kwargs, **extra}


def _uid_gid(user: str) -> tuple[int, int] | None:
    """(uid, gid) of a numeric `user` ("1000" or "1000:1000"); None for names."""
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (not gid or gid.isdigit()):
        return int(uid), int(gid or uid)
    return None


# Keeps a session or fresh container alive between execs; docker-init (init=True) is PID 1
# and reaps whatever the commands leave behind.
KEEPER = ["sleep", "2147483647"]

# The runner (docs/runner.md): the package's own directory, mounted read-only, run by the
# image's python3 as the container's main process (PID 1: it reaps what its cells leave).
RUNNER_SRC = os.path.dirname(jupyter_remote.runner.__file__)
RUNNER_MOUNT = "/opt/jupyter-remote/runner"
# The record format the runner writes lives in the protocol (stdlib only): mounted beside it.
PROTOCOL_SRC = os.path.dirname(jupyter_remote.protocol.records.__file__)
PROTOCOL_MOUNT = "/opt/jupyter-remote/protocol"
RUN_DIR = "/run/jupyter-remote"
RUNNER_COMMAND = [
    "python3",
    RUNNER_MOUNT,
    "--socket",
    f"{RUN_DIR}/runner.sock",
    "--spool",
    f"{RUN_DIR}/spool",
]
PYTHON_PROBE = "import sys; sys.exit(sys.version_info < (3, 8))"
RUNNER_READY_TIMEOUT = 30.0


class ContainerFactory:
    """Owns every Docker call that creates or removes one of this node's containers."""

    def __init__(
        self,
        client: docker.DockerClient,
        node_id: str,
        runner_root: str | None = None,
        workdir: str = "",
    ) -> None:
        self.client = client
        self.api = client.api
        self.node_id = node_id
        # where cells start when a request names no workdir (identity.py)
        self.workdirs = Workdirs(self.api, node_id, workdir)
        # where each runner container's host directory (socket + spool) lives; None: no runner
        if runner_root and len(os.path.join(runner_root, "0" * 16, "runner.sock")) > 107:
            log.warning(
                "the data directory's path is too long for a unix socket under it (%s); "
                "sessions run their cells as docker exec",
                runner_root,
            )
            runner_root = None
        self.runner_root = runner_root
        self.runner_src, self.protocol_src = RUNNER_SRC, PROTOCOL_SRC
        if runner_root:  # a copy beside the runner dirs (runner_src.py says why)
            self.runner_src, self.protocol_src = runner_src.stage(
                os.path.dirname(runner_root), RUNNER_SRC, PROTOCOL_SRC
            )
        self._python: dict[str, bool] = {}
        self._probe_lock = threading.Lock()
        # set by the Agent from its Limits (gpus.py): how GPUs reach a container, whether
        # every container gets NVIDIA_VISIBLE_DEVICES (a node with GPUs), and whether a
        # container Docker could not start stays for docker inspect
        self.gpu_mode = "device_requests"
        self.gpu_node = False
        self.keep_failed = False

    # -- the runner ----------------------------------------------------------------------
    def runner_capable(self, image: str) -> bool:
        """True when the image has a python3 >= 3.8 to run the runner with; probed once per
        image (a throw-away container, network none), then cached for the agent's life."""
        if self.runner_root is None:
            return False
        with self._probe_lock:
            if image not in self._python:
                self._python[image] = self._probe(image)
                log.info(
                    "image %s: %s",
                    image,
                    "python3 >= 3.8, sessions use the runner"
                    if self._python[image]
                    else "no usable python3, cells run as docker exec",
                )
            return self._python[image]

    def _probe(self, image: str) -> bool:
        try:
            cid = self.api.create_container(
                image,
                command=["python3", "-c", PYTHON_PROBE],
                # not the node's label: a probe is no container of the node's to list
                labels={labels.MANAGED: "1", labels.PROBE: self.node_id},
                host_config=self.api.create_host_config(
                    network_mode="none",
                    mem_limit=256 << 20,
                    pids_limit=64,
                    security_opt=["no-new-privileges"],
                    cap_drop=["ALL"],
                ),
                network_disabled=True,
            )["Id"]
        except docker.errors.DockerException as exc:
            log.warning("could not probe image %s for python3: %s", image, exc)
            return False
        try:
            self.api.start(cid)
            return self.api.wait(cid, timeout=60).get("StatusCode") == 0
        except Exception as exc:  # noqa: BLE001 - no python3: "executable file not found"
            log.debug("probe of %s: %s", image, exc)
            return False
        finally:
            try:
                self.remove(cid)
            except docker.errors.DockerException:
                pass

    def remove_probes(self) -> None:
        """Probe containers an earlier run of this node left behind (it died mid-probe)."""
        for info in self.api.containers(
            all=True, filters={"label": [f"{labels.PROBE}={self.node_id}"]}
        ):
            self.remove(info["Id"])

    def runner_dir(self, name: str) -> str:
        """Short (a unix socket's path has at most 107 bytes): ROOT/<16 hex of the name>."""
        return os.path.join(self.runner_root, hashlib.sha1(name.encode()).hexdigest()[:16])

    def create_runner(
        self,
        spec: ContainerSpec,
        *,
        name: str,
        kind: str,
        label_extra: dict[str, str],
        host: str | None = None,
    ) -> tuple[str, str]:
        """A container whose main process is the runner; returns (id, host dir). Blocks
        until the runner answers on its socket."""
        from jupyter_remote.agent.runner_client import RunnerClient, RunnerError

        host_dir = self.runner_dir(name)
        shutil.rmtree(host_dir, ignore_errors=True)  # a same-named leftover's
        os.makedirs(host_dir, mode=0o700)
        if spec.user is not None:
            self._open_run_dir(host_dir, spec.user)
        binds = {
            self.runner_src: {"bind": RUNNER_MOUNT, "mode": "ro"},
            self.protocol_src: {"bind": PROTOCOL_MOUNT, "mode": "ro"},
            host_dir: {"bind": RUN_DIR, "mode": "rw"},
        }
        try:
            cid = self.create(
                spec,
                name=name,
                kind=kind,
                command=RUNNER_COMMAND,
                label_extra={**label_extra, "path": "runner", "runner_dir": host_dir},
                binds=binds,
                init=False,
                host=host,
            )
        except Exception:
            shutil.rmtree(host_dir, ignore_errors=True)
            raise
        try:
            RunnerClient(os.path.join(host_dir, "runner.sock")).wait_ready(RUNNER_READY_TIMEOUT)
        except RunnerError as exc:
            try:
                logs = self.api.logs(cid, tail=20).decode(errors="replace")
            except docker.errors.DockerException:
                logs = ""
            self.remove(cid, host_dir)
            raise Unavailable(
                f"the runner in a new {spec.image} container did not start: {exc} {logs}".strip(),
                reason="runner_unavailable",
            ) from None
        return cid, host_dir

    def _open_run_dir(self, host_dir: str, user: str) -> None:
        """Let the container's user make its socket and spool in the runner's host dir.

        A numeric UID[:GID], with the agent running as root: the dir becomes that user's
        (0700). A user name only the image's /etc/passwd knows, or an agent that may not
        chown: 0777 — safe, as the runner root above it is the agent's own and 0700, so no
        other host user reaches it; inside the container it is the only thing there.
        """
        os.chmod(self.runner_root, 0o700)
        ids = _uid_gid(user)
        if ids is not None and os.geteuid() == 0:
            os.chown(host_dir, *ids)
        else:
            os.chmod(host_dir, 0o777)

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
        return self.api.create_host_config(
            **host_config_kwargs(spec, gpu_mode=self.gpu_mode, **extra)
        )

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
        init: bool = True,
        host: str | None = None,
    ) -> str:
        """Create and start a labelled container; returns its id. Its hostname is `host`,
        else the node's name (none of its own on the host's network)."""
        host_config = self.host_config(spec, binds=binds or None, init=init)
        container = self.api.create_container(
            spec.image,
            command=command,
            name=name,
            detach=True,
            user=spec.user or "",
            environment={
                **spec.env,
                **(env or {}),
                **(gpu_env(spec) if self.gpu_node or spec.gpus else {}),
            },
            working_dir=spec.workdir,
            hostname=None if spec.network == "host" else host or hostname(self.node_id),
            labels=labels.for_node(self.node_id, kind, **label_extra),
            host_config=host_config,
            network_disabled=spec.network == "none",
        )
        cid = container["Id"]
        try:
            self.api.start(cid)
        except Exception as exc:
            if not self.keep_failed:
                self.remove(cid)
            text = str(exc).lower()
            if spec.gpus and "device driver" in text:
                raise Unavailable(
                    f"node {self.node_id!r} could not start a container with GPUs "
                    f"{','.join(map(str, spec.gpus))}: its Docker engine has no NVIDIA runtime "
                    f"({exc}). Install NVIDIA's container toolkit and restart Docker, or "
                    "start the agent with --gpu-mode env where nvidia is Docker's default "
                    "runtime (docs/gpus.md)",
                    reason="gpu_runtime_unavailable",
                    container_id=cid if self.keep_failed else None,
                ) from None
            if spec.user is not None and ("unable to find user" in text or "no matching" in text):
                raise BadRequest(
                    f"user {spec.user!r} is not known in image {spec.image!r} (give a numeric "
                    "UID[:GID] or a name from its /etc/passwd)",
                    reason="bad_user",
                    user=spec.user,
                ) from None
            raise
        return cid

    def create_keeper(
        self,
        spec: ContainerSpec,
        *,
        name: str,
        kind: str,
        label_extra: dict[str, str],
        host: str | None = None,
    ) -> str:
        """A container that idles until commands are exec'd into it."""
        return self.create(
            spec, name=name, kind=kind, command=KEEPER, label_extra=label_extra, host=host
        )

    def remove(self, container_id: str, runner_dir: str | None = None) -> None:
        """Remove a container, running or not; gone already is fine. With `runner_dir`,
        its host directory (socket, spool) goes too."""
        try:
            self.api.remove_container(container_id, force=True, v=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise
        if runner_dir and self.runner_root and runner_dir.startswith(self.runner_root + os.sep):
            shutil.rmtree(runner_dir, ignore_errors=True)

    def remove_info(self, info: dict) -> None:
        """Remove a container listed by `list()`, with its runner directory if it has one."""
        self.remove(info["Id"], (info.get("Labels") or {}).get(labels.RUNNER_DIR))

    def list(self, kind: str | None = None) -> list[dict]:
        """This node's containers (of one kind), running or not."""
        return self.api.containers(all=True, filters=labels.node_filter(self.node_id, kind))
