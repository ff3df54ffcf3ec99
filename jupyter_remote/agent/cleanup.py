"""`jupyter-remote agent cleanup` and `agent stop --remove-containers`: remove what an
agent made on its Docker engine.

An agent keeps its session and job containers when it stops (a restarted agent adopts
them); this is the way to end them for good. The agent notes its node id in its data
directory at start, so the clean-up finds its containers by their labels (labels.py)
with no other option.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter

from jupyter_remote.agent import labels

NODE_FILE = "node_id"  # in the data directory: the node id the agent last ran as

# what each kind of container is, in the words of the summary
KIND_NAMES = {
    "session": "session",
    "job": "job",
    "fresh": "one-off (--fresh)",
    "pool": "warm-pool",
    "probe": "image-probe",
}


def remember_node(data_dir: str, node_id: str) -> None:
    """At the agent's start: the node id its containers are labelled with."""
    path = os.path.join(data_dir, NODE_FILE)
    with open(f"{path}.tmp", "w") as fh:
        fh.write(node_id + "\n")
    os.replace(f"{path}.tmp", path)


def recorded_node(data_dir: str) -> str | None:
    try:
        with open(os.path.join(data_dir, NODE_FILE)) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _kind(info: dict) -> str:
    found = info.get("Labels") or {}
    if labels.PROBE in found:
        return "probe"
    if labels.POOL in found:
        return "pool"
    return found.get(labels.KIND, "fresh")


def node_containers(api, node_id: str) -> list[dict]:
    """Every container the node made, running or not (probes carry the node elsewhere)."""
    found = {}
    for wanted in (f"{labels.NODE}={node_id}", f"{labels.PROBE}={node_id}"):
        filters = {"label": [f"{labels.MANAGED}=1", wanted]}
        for info in api.containers(all=True, filters=filters):
            found[info["Id"]] = info
    return list(found.values())


def remove_node_containers(api, node_id: str, data_dir: str) -> tuple[Counter, list[str]]:
    """Remove them with their runner directories; (removed per kind, failures in words)."""
    from docker.errors import APIError, NotFound

    removed: Counter = Counter()
    failed = []
    runner_root = os.path.join(os.path.abspath(data_dir), "r") + os.sep
    for info in node_containers(api, node_id):
        name = (info.get("Names") or [info["Id"][:12]])[0].lstrip("/")
        try:
            api.remove_container(info["Id"], force=True, v=True)
        except NotFound:
            pass
        except APIError as exc:
            failed.append(f"{name}: {exc.explanation or exc}")
            continue
        runner_dir = (info.get("Labels") or {}).get(labels.RUNNER_DIR, "")
        if runner_dir.startswith(runner_root):
            shutil.rmtree(runner_dir, ignore_errors=True)
        removed[_kind(info)] += 1
    return removed, failed


def summary(node_id: str, removed: Counter) -> str:
    """One line: what was removed, by kind."""
    if not removed:
        return f"no container of node {node_id!r} left to remove"
    parts = [
        f"{count} {KIND_NAMES.get(kind, kind)} container{'s' if count != 1 else ''}"
        for kind, count in sorted(removed.items())
    ]
    return f"removed {', '.join(parts)} of node {node_id!r}"


def cleanup(node_id: str, data_dir: str) -> tuple[str, list[str]]:
    """Remove the node's containers on the local Docker engine: (summary, failures)."""
    import docker

    client = docker.from_env()
    try:
        removed, failed = remove_node_containers(client.api, node_id, data_dir)
    finally:
        client.close()
    return summary(node_id, removed), failed
