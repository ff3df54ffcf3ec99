"""Docker labels the agent puts on everything it creates, so it can find it again."""

from __future__ import annotations

MANAGED = "jupyter-remote.managed"
NODE = "jupyter-remote.node"
KIND = "jupyter-remote.kind"  # session | fresh | job
SESSION = "jupyter-remote.session"
EXECUTION = "jupyter-remote.execution"
JOB = "jupyter-remote.job"
TASK = "jupyter-remote.task"
IDLE_TIMEOUT = "jupyter-remote.idle-timeout"
PATH = "jupyter-remote.path"  # runner | exec (absent: exec)
RUNNER_DIR = "jupyter-remote.runner-dir"  # the host directory of a runner's socket and spool
PROBE = "jupyter-remote.probe"  # a throw-away python3 probe of an image, by this node
POOL = "jupyter-remote.pool"  # a warm container waiting in the pool (kind fresh)
TENANT = "jupyter-remote.tenant"  # who made a session (absent: the operator)
EXPIRES = "jupyter-remote.expires"  # unix time after which any agent may remove it


def for_node(node_id: str, kind: str, **extra: str) -> dict[str, str]:
    """Labels for a new container of this node."""
    labels = {MANAGED: "1", NODE: node_id, KIND: kind}
    labels.update({f"jupyter-remote.{k.replace('_', '-')}": str(v) for k, v in extra.items()})
    return labels


def node_filter(node_id: str, kind: str | None = None) -> dict:
    """A docker `filters` dict matching this node's containers (of one kind)."""
    wanted = [f"{NODE}={node_id}"]
    if kind:
        wanted.append(f"{KIND}={kind}")
    return {"label": wanted}
