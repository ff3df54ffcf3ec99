"""The default node choice (pure logic): busy nodes count as more loaded, not as excluded."""

from __future__ import annotations

from jupyter_remote_server.nodes.pool import NodeChooser
from jupyter_remote_server.nodes.registry import Node


def node(name: str, state: str, running: int, free: int = 1 << 30) -> Node:
    made = Node(node_id=name, url=f"http://{name}", source="config", client=None, state=state)
    made.inflight = running
    made.resources = {"memory": {"available": free}}
    return made


def test_a_healthy_node_takes_new_work_before_a_busy_one():
    chooser = NodeChooser()
    assert chooser.choose([node("b", "busy", 0), node("h", "healthy", 0)], None).node_id == "h"
    assert chooser.choose([node("b", "busy", 0), node("h", "healthy", 5)], None).node_id == "h"


def test_a_burst_does_not_pile_on_the_one_calm_node():
    chooser = NodeChooser()
    busy, calm = node("b", "busy", 0), node("h", "healthy", 0)
    placed = []
    for _ in range(30):
        chosen = chooser.choose([busy, calm], None)
        chosen.inflight += 1
        placed.append(chosen.node_id)
    assert placed[: NodeChooser.busy_penalty] == ["h"] * NodeChooser.busy_penalty
    assert 10 <= placed.count("b") <= 15  # spread once the calm node is as loaded


def test_ties_go_to_more_free_memory():
    chooser = NodeChooser()
    picked = chooser.choose(
        [node("a", "healthy", 1, 1 << 20), node("b", "healthy", 1, 1 << 30)], None
    )
    assert picked.node_id == "b"
