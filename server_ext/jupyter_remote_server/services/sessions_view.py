"""What runs where: every session container this server knows, as the Lab panel shows it."""

from __future__ import annotations

import asyncio
import logging
import time

from jupyter_remote.protocol.errors import NotFound
from jupyter_remote_server.services.users import SERVER, Caller

log = logging.getLogger("jupyter_remote_server")


async def notebooks_by_kernel(session_manager) -> dict[str, dict]:
    """kernel id -> {"path", "name"} from the Jupyter server's own sessions (open notebooks)."""
    if session_manager is None:
        return {}
    try:
        models = await session_manager.list_sessions()
    except Exception:  # noqa: BLE001 - the list still shows owners without their notebook
        log.exception("jupyter-remote: could not list the Jupyter server's sessions")
        return {}
    out = {}
    for model in models:
        kernel = model.get("kernel") or {}
        if kernel.get("id") and model.get("path"):
            name = model.get("name") or model["path"].rsplit("/", 1)[-1]
            out[kernel["id"]] = {"path": model["path"], "name": name}
    return out


async def sessions_model(manager, notebooks: dict[str, dict], caller: Caller = SERVER) -> dict:
    """The GET /remote/api/sessions answer: one row per session container the caller may
    see, never failing as a whole because one node is slow or gone."""
    mine = (r for r in manager.kernels.sessions.values() if caller.sees(r))
    records = sorted(mine, key=lambda r: r["key"])
    node_ids = sorted({r["node_id"] for r in records})
    agent = await _node_sessions(manager, node_ids)
    containers = _containers(manager, node_ids)
    now = time.time()
    running = _running_by_session(manager.executions.records.values())
    last_end = _last_end_by_session(manager.executions.records.values())
    rows = []
    for record in records:
        node = manager.registry.nodes.get(record["node_id"])
        theirs = agent[record["node_id"]]
        container = containers.get(record["session_id"], {})
        rows.append(_row(record, node, theirs, notebooks, running, last_end, now, container))
    return {"sessions": rows, "now": now}


async def _node_sessions(manager, node_ids: list[str]) -> dict[str, dict | str]:
    """Each node's sessions as of its last poll (nodes/session_snapshots.py); only nodes
    with no fresh snapshot are asked now."""
    registry = manager.registry
    out: dict[str, dict | str] = {}
    ask = []
    for node_id in node_ids:
        node = registry.nodes.get(node_id)
        if node is None:
            out[node_id] = f"node {node_id!r} is not in the pool"
        elif (known := registry.sessions.peek(node)) is not None:
            out[node_id] = known
        else:
            ask.append(node)
    answers = await asyncio.gather(*(registry.sessions.get(node) for node in ask))
    out.update({node.node_id: answer for node, answer in zip(ask, answers, strict=True)})
    return out


def _containers(manager, node_ids: list[str]) -> dict[str, dict]:
    """Each session's container sample (per-container stats) from its node's last poll."""
    out: dict[str, dict] = {}
    for node_id in node_ids:
        node = manager.registry.nodes.get(node_id)
        for container in (node.resources.get("own_containers") or []) if node else []:
            if container.get("session_id"):
                out[container["session_id"]] = container
    return out


def _row(record, node, theirs, notebooks, running, last_end, now, container) -> dict:
    sid = record["session_id"]
    owner = record["kernel_id"]
    notebook = notebooks.get(owner) if record.get("kind", "kernel") == "kernel" else None
    row = {
        "session_id": sid,
        "owner": owner,
        "kind": record.get("kind", "kernel"),
        "notebook": notebook,
        "node_id": record["node_id"],
        "image": record["image"],
        "path": None,
        "state": "node unavailable",
        "reason": None,
        "cpu_percent": container.get("cpu_percent"),
        "memory_bytes": container.get("memory_bytes"),
        "memory_limit": container.get("memory_limit"),
        "running": None,
        "idle_for": None,
        "created_at": None,
    }
    if isinstance(theirs, str):  # the node did not answer: why
        row["reason"] = theirs
        return row
    model = theirs.get(sid)
    if model is None:
        row.update(state="gone", reason="its node no longer has it (removed or idle-culled)")
        return row
    row.update(path=model.get("path"), created_at=model.get("created_at"))
    mine = running.get(sid)
    if mine is not None:
        row["state"] = "running"
        row["running"] = {
            "execution_id": mine["execution_id"],
            "started_at": mine["created_at"],
            "elapsed": max(0.0, now - mine["created_at"]),
        }
    elif model.get("running_executions"):
        row["state"] = "running"  # started elsewhere: shown, not interruptible from here
        row["running"] = {"execution_id": None, "started_at": None, "elapsed": None}
    else:
        row["state"] = "idle"
        since = last_end.get(sid) or model.get("last_used_at") or model.get("created_at")
        row["idle_for"] = max(0.0, now - since) if since else None
    return row


def _running_by_session(records) -> dict[str, dict]:
    """The oldest running execution of each session (the cell running now)."""
    out: dict[str, dict] = {}
    for r in records:
        sid = r.get("session_id")
        if r.get("status") == "running" and sid:
            if sid not in out or r["created_at"] < out[sid]["created_at"]:
                out[sid] = r
    return out


def _last_end_by_session(records) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in records:
        sid, end = r.get("session_id"), r.get("finished_at")
        if sid and end and end > out.get(sid, 0):
            out[sid] = end
    return out


async def remove_one(manager, owner: str, image: str, caller: Caller = SERVER) -> dict:
    """Remove one session of an owner (one image) on its node; 404 if unknown (or another
    user's)."""
    kernels = manager.kernels
    record = kernels.sessions.get(kernels.key(owner, image))
    if record is None or not caller.sees(record):
        raise NotFound(
            f"owner {owner!r} has no {image} session on this server", reason="no_session"
        )
    node = manager.registry.nodes.get(record["node_id"])
    if node is not None:
        try:
            await node.client.delete_session(record["session_id"])
        except NotFound:
            pass  # gone already: only the record is left
        manager.registry.sessions.drop(node.node_id, record["session_id"])
        node.gpus_freed |= bool((record.get("limits") or {}).get("gpus"))
    kernels.forget(owner, image)
    return record
