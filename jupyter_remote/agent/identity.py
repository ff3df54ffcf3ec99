"""What a container of the agent's says about itself inside: its hostname (the node's name,
plus the session's short id) and the directory its cells start in (never ``/``).

The working directory a request does not name: the agent's ``--workdir``, else the image's
``WORKDIR``, else the home directory of the container's user (``/root`` for root; another
user's from the image's ``/etc/passwd``, read once per image and user), else ``/tmp``.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import threading
from dataclasses import replace

import docker

from jupyter_remote.agent import labels
from jupyter_remote.agent.docker_io import path_stat
from jupyter_remote.agent.specs import ContainerSpec

log = logging.getLogger("jupyter_remote.agent")

NOT_HOSTNAME = re.compile(r"[^a-z0-9-]+")
HOSTNAME_MAX = 63  # one DNS label; the kernel takes 64 bytes
NO_HOME = ("", "/", "/nonexistent")
FALLBACK = "/tmp"


def short_session(session_id: str) -> str:
    """A session's id in 8 letters or digits: a kernel's session (k-<kernel id>-<image>)
    gives its kernel id's first 8, as Jupyter shows kernel ids."""
    core = session_id[2:] if session_id[:2] in ("k-", "s-") else session_id
    return NOT_HOSTNAME.sub("", core.lower().replace("-", ""))[:8] or "session"


def hostname(node_id: str, session_id: str | None = None) -> str:
    """The node's name (``jr-node-2``), plus ``-<short id>`` for a session's container."""
    node = NOT_HOSTNAME.sub("-", node_id.lower()).strip("-") or "node"
    if session_id is None:
        return node[:HOSTNAME_MAX].rstrip("-")
    short = short_session(session_id)
    return f"{node[: HOSTNAME_MAX - len(short) - 1].rstrip('-')}-{short}"


def is_root(user: str) -> bool:
    name = user.partition(":")[0]
    return name in ("", "root", "0")


class Workdirs:
    """The working directory of the containers cells run in, when the request names none."""

    def __init__(self, api, node_id: str, configured: str = "") -> None:
        self.api = api
        self.node_id = node_id  # its probe containers are the node's (remove_probes)
        self.configured = configured
        self._homes: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def cell_spec(self, spec: ContainerSpec) -> ContainerSpec:
        """The spec with its working directory filled in."""
        return spec if spec.workdir else replace(spec, workdir=self.default(spec))

    def default(self, spec: ContainerSpec) -> str:
        if self.configured:
            return self.configured
        try:
            image = self.api.inspect_image(spec.image)
        except docker.errors.DockerException:
            return FALLBACK  # the container's creation says what is wrong with the image
        config = image.get("Config") or {}
        workdir = config.get("WorkingDir") or ""
        if workdir not in NO_HOME:
            return workdir
        user = spec.user if spec.user is not None else config.get("User") or ""
        if is_root(user):
            return "/root"
        key = (image["Id"], user)
        with self._lock:
            if key not in self._homes:
                self._homes[key] = self._home_of(spec.image, user)
            return self._homes[key]

    def _home_of(self, image: str, user: str) -> str:
        """A non-root user's home from the image's /etc/passwd, if it exists in the image."""
        try:
            cid = self.api.create_container(
                image,
                command=["true"],
                labels={labels.MANAGED: "1", labels.PROBE: self.node_id},
                network_disabled=True,
            )["Id"]
        except docker.errors.DockerException as exc:
            log.debug("no home directory for %s in %s: %s", user, image, exc)
            return FALLBACK
        try:
            home = passwd_home(self._passwd(cid), user.partition(":")[0])
            if home in NO_HOME or path_stat(self.api, cid, home) is None:
                return FALLBACK
            return home
        except docker.errors.DockerException as exc:
            log.debug("no home directory for %s in %s: %s", user, image, exc)
            return FALLBACK
        finally:
            try:
                self.api.remove_container(cid, force=True)
            except docker.errors.DockerException:
                pass

    def _passwd(self, cid: str) -> str:
        try:
            stream, _ = self.api.get_archive(cid, "/etc/passwd")
        except docker.errors.NotFound:
            return ""
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            return handle.read(1 << 20).decode("utf-8", "replace") if handle else ""


def passwd_home(passwd: str, name_or_uid: str) -> str:
    """The home directory /etc/passwd gives a user name or a numeric uid ("" if none)."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and name_or_uid in (fields[0], fields[2]):
            return fields[5]
    return ""
