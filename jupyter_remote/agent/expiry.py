"""Container expiry that any agent on the engine can act on.

Sessions and fresh containers carry `jupyter-remote.expires` (unix time) from birth. Labels
cannot change, so the owner renews a session's lease in a tiny file inside the container
(`LEASE_PATH`, written by the engine through the archive API, so no exec and no shell are
needed) when it is used and the lease is half spent. Every agent sweeps the engine for
other nodes' containers whose lease has passed — the node that made them may never come
back — and removes them `SWEEP_GRACE` after that, unless a command still runs in them.
Job containers are never swept: their exit code is the only record of a task until their
agent reads it.
"""

from __future__ import annotations

import io
import logging
import tarfile
import time

from docker.errors import DockerException

from jupyter_remote.agent import labels

log = logging.getLogger("jupyter_remote.agent")

LEASE_PATH = "/.jupyter-remote-lease"
SWEEP_EVERY = 60.0
# Another node's container is removed only this long after its expiry: a live owner reaps
# its own on time, so a sweeper never races it.
SWEEP_GRACE = 300.0


def expiry_label(seconds: float, now: float | None = None) -> dict[str, str]:
    """The label for a container that may be removed `seconds` after `now` (0: never)."""
    if not seconds:
        return {}
    return {"expires": str(int((now or time.time()) + seconds))}


def write_lease(api, container_id: str, expires: float) -> None:
    """Move the container's expiry to `expires` (one archive upload, no exec)."""
    data = f"{int(expires)}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(LEASE_PATH.lstrip("/"))
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
    api.put_archive(container_id, "/", buf.getvalue())


def read_lease(api, container_id: str) -> float | None:
    """The renewed expiry written by the owner, or None when there is none."""
    try:
        stream, _ = api.get_archive(container_id, LEASE_PATH)
        raw = b"".join(stream)
    except DockerException:
        return None
    try:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            return float(member.read().decode().strip())
    except (tarfile.TarError, IndexError, ValueError, AttributeError):
        return None


def expires_at(api, info: dict) -> float | None:
    """A container's expiry: its label, or the later lease its owner wrote; None: never."""
    raw = (info.get("Labels") or {}).get(labels.EXPIRES)
    try:
        expires = float(raw)
    except (TypeError, ValueError):
        return None
    if expires + SWEEP_GRACE > time.time():
        return expires  # not yet due: no need to read a lease
    lease = read_lease(api, info["Id"])
    return max(expires, lease) if lease is not None else expires


def runs_a_command(api, container_id: str) -> bool:
    """True while any exec (a live execution) is running in the container."""
    try:
        exec_ids = api.inspect_container(container_id).get("ExecIDs") or []
    except DockerException:
        return True  # cannot tell: leave it
    for exec_id in exec_ids:
        try:
            if api.exec_inspect(exec_id).get("Running"):
                return True
        except DockerException:
            continue
    return False


def sweep(api, own_node: str) -> list[str]:
    """Remove other nodes' expired session and fresh containers; returns their names."""
    now = time.time()
    removed = []
    for info in api.containers(
        all=True, filters={"label": [f"{labels.MANAGED}=1", labels.EXPIRES]}
    ):
        tags = info.get("Labels") or {}
        if tags.get(labels.NODE) == own_node or tags.get(labels.KIND) == "job":
            continue  # ours are reaped by their managers; a job's container is its record
        expires = expires_at(api, info)
        if expires is None or expires + SWEEP_GRACE > now or runs_a_command(api, info["Id"]):
            continue
        name = (info.get("Names") or [info["Id"][:12]])[0].lstrip("/")
        try:
            api.remove_container(info["Id"], force=True, v=True)
        except DockerException as exc:
            log.warning("could not remove expired container %s: %s", name, exc)
            continue
        log.info(
            "removed %s of node %s: expired %.0f s ago",
            name,
            tags.get(labels.NODE),
            now - expires,
        )
        removed.append(name)
    return removed
