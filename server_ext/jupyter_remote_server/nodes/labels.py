"""Node labels: configured ones checked, and shown in refusals (placement with `on`)."""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError

from jupyter_remote.protocol.common import LabelKey, LabelValue
from jupyter_remote.protocol.errors import BadRequest

Labels = dict[str, str]
_rule = TypeAdapter(dict[LabelKey, LabelValue])


def check_labels(labels: object, where: str) -> Labels:
    """A configured node's labels, by the protocol's rule for a label and its value."""
    try:
        return _rule.validate_python(labels)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadRequest(
            f"labels of node {where}: {first['msg']} at {'.'.join(map(str, first['loc']))}; "
            "labels are a dict like {'zone': 'eu-1'}",
            reason="bad_labels",
        ) from None


def label_config(nodes, entries: list[dict]) -> None:
    """Labels of configured nodes (c.RemoteApp.nodes entries' "labels"), matched by URL;
    `nodes` is the registry's {node_id: Node}."""
    from jupyter_remote_server.nodes.registry import check_url

    wanted = {check_url(e["url"]): e["labels"] for e in entries if e.get("labels")}
    for node in nodes.values():
        if node.source == "config" and node.url in wanted:
            node.labels = check_labels(wanted[node.url], node.url)


def shown(labels: Labels) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"


def lacks(node, on: Labels) -> str:
    """Why `node` is no place for work asked `on` these labels (for a 409)."""
    return f"node {node.node_id!r} does not have {shown(on)} (it has {shown(node.labels)})"
