"""NodesWidget as pure logic: node model dicts in, widgets out (it makes no HTTP calls)."""

from __future__ import annotations

import ipywidgets as w
from ipywidgets.widgets import widget as widget_module

from jupyter_remote.kernel.widgets import NodesWidget, health_problems


def live_widgets() -> int:
    """ipywidgets' registry of open widgets (Widget.widgets, renamed _instances in 8.x)."""
    registry = getattr(widget_module, "_instances", None)
    return len(registry if registry is not None else w.Widget.widgets)


def node(node_id: str, state: str = "healthy", health: list | None = None, **kw) -> dict:
    return {
        "node_id": node_id,
        "state": state,
        "reason": kw.pop("reason", "ok"),
        "health": health or [],
        "warnings": [c["message"] for c in health or [] if c.get("severity") == "warning"],
        "cpu": {"percent": kw.pop("cpu", 10.0)},
        "memory": {"percent": 20.0},
        "disk": {"percent": 30.0},
        "running_executions": 1,
        **kw,
    }


class Canned:
    """The one client method NodesWidget calls, answering what a test sets."""

    def __init__(self, nodes: list[dict]) -> None:
        self.answer = nodes

    def nodes(self) -> list[dict]:
        return self.answer


def test_refreshing_reuses_its_widgets_and_closing_frees_them():
    before = live_widgets()
    client = Canned([node("a"), node("b")])
    nodes = NodesWidget(client)
    nodes.refresh()
    after_first = live_widgets()
    row = nodes.children[1]
    for i in range(50):
        client.answer = [node("a", cpu=float(i)), node("b")]
        nodes.refresh()
    assert live_widgets() == after_first
    assert nodes.children[1] is row and row.bars["cpu"].figure.value == "49%"
    client.answer = [node("a")]  # b left the pool: its row goes, and its widgets with it
    nodes.refresh()
    assert live_widgets() < after_first and len(nodes.children) == 3
    nodes.close()
    assert live_widgets() == before


BUSY = [
    {"name": "docker", "ok": True, "severity": "critical", "message": "Docker engine reachable"},
    {"name": "cpu", "ok": False, "severity": "warning", "message": "CPU 99% > 95%"},
]
BROKEN = [
    {"name": "docker", "ok": False, "severity": "critical", "message": "Docker unreachable"},
    {"name": "memory", "ok": False, "severity": "warning", "message": "memory 97% > 95%"},
]


def test_a_busy_node_shows_a_warning_marker_and_text_apart_from_an_unusable_one():
    nodes = NodesWidget(Canned([node("hot", "busy", BUSY), node("dead", "unhealthy", BROKEN)]))
    nodes.refresh()
    hot, dead = nodes.children[1], nodes.children[2]
    assert "⚠ busy" in hot.name.value and "✖" not in hot.name.value
    assert "⚠ CPU 99% &gt; 95%" in hot.problems.value and "✖" not in hot.problems.value
    assert "✖ unhealthy" in dead.name.value
    assert "✖ Docker unreachable" in dead.problems.value
    assert "⚠ memory 97% &gt; 95%" in dead.problems.value
    assert "1 busy" in nodes.children[0].value
    nodes.close()


def test_health_problems_takes_the_servers_warnings_for_checks_without_severity():
    old_agent = [{"name": "cpu", "ok": False, "message": "CPU 99% > 95%"}]
    model = {"health": old_agent, "warnings": ["CPU 99% > 95%"]}
    assert health_problems(model) == (["CPU 99% > 95%"], [])
    assert health_problems({"health": old_agent}) == ([], ["CPU 99% > 95%"])
    assert health_problems({"state": "healthy"}) == ([], [])


def test_names_and_reasons_are_escaped():
    nodes = NodesWidget(Canned([node("<b>x</b>", "unhealthy", reason="<script>")]))
    nodes.refresh()
    assert "<script>" not in nodes.children[1].name.value
    assert "&lt;b&gt;x&lt;/b&gt;" in nodes.children[1].name.value
    nodes.close()


def test_a_row_shows_the_nodes_labels_and_a_drained_state():
    """Where work can go with --on, and a node its engine drains (it takes no new work)."""
    from jupyter_remote.kernel.widgets.nodes import STATE_COLORS, NodeRow

    row = NodeRow()
    node = {
        "node_id": "n2",
        "state": "drained",
        "reason": "swarm: availability drain",
        "labels": {"zone": "eu-1", "gpu": "a100"},
        "health": [],
        "warnings": [],
        "running_executions": 0,
    }
    row.update(node)
    assert "zone=eu-1 · gpu=a100" in row.name.value
    assert "⏸ drained" in row.name.value and STATE_COLORS["drained"] in row.name.value
    row.update({**node, "state": "healthy", "labels": {}})
    assert "zone=" not in row.name.value and "⏸" not in row.name.value
