"""Which nodes can take work asking for GPUs, from what each agent last reported in
/v1/resources (`gpus`: count, free, sharing, each device's holders); and, when none can,
one line saying which nodes have how many free GPUs and who holds them.

Pure: it reads `node.node_id` and `node.resources` only. The agent still decides (a node
polled a moment ago may have given its last GPU away since): its 409 `gpus_unavailable`
stands, this only keeps GPU work off nodes that plainly cannot take it.
"""

from __future__ import annotations

from collections.abc import Iterable


def _gpus(node) -> dict:
    gpus = (getattr(node, "resources", None) or {}).get("gpus")
    return gpus if isinstance(gpus, dict) else {}


def _held(gpus: dict) -> dict[int, list[str]]:
    return {
        d["index"]: list(d.get("held_by") or [])
        for d in gpus.get("devices") or []
        if isinstance(d, dict) and isinstance(d.get("index"), int)
    }


def fits(node, want: int | list[int] | tuple[int, ...] | None) -> bool:
    """True when the node's last report has `want` GPUs for a new holder: that many free
    (any, with sharing on: that many in all), or each of the named devices free."""
    if want is None:
        return True
    gpus = _gpus(node)
    held = _held(gpus)
    sharing = bool(gpus.get("sharing"))
    if isinstance(want, int):
        have = gpus.get("count", 0) if sharing else gpus.get("free", 0)
        return isinstance(have, int) and have >= want
    return all(i in held and (sharing or not held[i]) for i in want)


def could_fit(node, want: int | list[int] | tuple[int, ...] | None) -> bool:
    """True when the node has `want` GPUs at all, held or not: a request no node could
    ever take is a 400, one that waits for a holder to end a 503."""
    if want is None:
        return True
    gpus = _gpus(node)
    if isinstance(want, int):
        count = gpus.get("count", 0)
        return isinstance(count, int) and count >= want
    return all(i in _held(gpus) for i in want)


def describe(node) -> str:
    """`a: 4 GPUs, 1 free (0: session:s-1; 1: job:j/0)`, or `a: no GPUs`."""
    gpus = _gpus(node)
    count = gpus.get("count", 0)
    if not count:
        return f"{node.node_id}: no GPUs"
    holders = "; ".join(f"{i}: {', '.join(h)}" for i, h in sorted(_held(gpus).items()) if h)
    shared = ", shared" if gpus.get("sharing") else ""
    plural = "s" if count != 1 else ""
    return f"{node.node_id}: {count} GPU{plural}, {gpus.get('free', 0)} free{shared}" + (
        f" ({holders})" if holders else ""
    )


def want_text(want: int | list[int] | tuple[int, ...]) -> str:
    if isinstance(want, int):
        return f"{want} free GPU{'s' if want != 1 else ''}"
    return f"GPU {','.join(map(str, want))} free"


def why_none(nodes: Iterable, want: int | list[int] | tuple[int, ...], limit: int = 8) -> str:
    """One line for the 503 when no node fits: what each node (the first `limit`) has and
    who holds it."""
    nodes = list(nodes)
    if not nodes:
        return f"no node has {want_text(want)}: there are no usable nodes"
    each = "; ".join(describe(n) for n in nodes[:limit])
    if len(nodes) > limit:
        each += f"; and {len(nodes) - limit} more"
    return f"no node has {want_text(want)}: {each}"
