"""Placing GPU work (pure logic): only nodes whose last report has the GPUs asked for, and
one line naming every node's free GPUs and holders when none has."""

from __future__ import annotations

from jupyter_remote.agent.gpus import Gpu, GpuPool
from jupyter_remote_server.nodes.gpu_fit import fits, why_none
from jupyter_remote_server.nodes.registry import Node


def node(name: str, gpus: dict | None) -> Node:
    made = Node(node_id=name, url=f"http://{name}", source="config", client=None, state="healthy")
    made.resources = {"gpus": gpus} if gpus is not None else {}
    return made


def reported(n: int, holders: dict[str, tuple[int, ...]], sharing: bool = False) -> dict:
    """What an agent's /v1/resources says, made by the agent's own GpuPool."""
    pool = GpuPool([Gpu(i) for i in range(n)], sharing=sharing, source="configured")
    for holder, devices in holders.items():
        pool.take(holder, devices)
    return pool.report()


def test_a_count_fits_where_that_many_are_free():
    a = node("a", reported(4, {"session:s1": (0, 1, 2)}))
    b = node("b", reported(2, {}))
    assert not fits(a, 2) and fits(a, 1) and fits(b, 2) and not fits(b, 3)
    assert fits(a, None) and fits(node("c", None), None)


def test_named_devices_fit_only_where_each_is_there_and_free():
    a = node("a", reported(4, {"job:j/0": (1,)}))
    assert fits(a, [0, 2]) and fits(a, [3])
    assert not fits(a, [1]) and not fits(a, [0, 4])


def test_nodes_without_gpus_or_old_agents_take_no_gpu_work():
    assert not fits(node("old", None), 1)  # an agent from before GPUs: no `gpus`
    assert not fits(node("cpu", reported(0, {})), 1)
    assert not fits(node("cpu", reported(0, {})), [0])
    assert not fits(node("junk", {"count": "4", "free": None, "devices": "x"}), 1)


def test_with_sharing_a_count_fits_any_node_with_that_many():
    shared = node("s", reported(2, {"session:a": (0, 1)}, sharing=True))
    assert fits(shared, 2) and fits(shared, [1]) and not fits(shared, 3)


def test_why_none_names_each_nodes_free_gpus_and_holders():
    nodes = [
        node("a", reported(4, {"session:s1": (0, 1), "execution:x": (2,)})),
        node("b", reported(0, {})),
        node("c", None),
    ]
    line = why_none(nodes, 2)
    assert line == (
        "no node has 2 free GPUs: a: 4 GPUs, 1 free (0: session:s1; 1: session:s1; "
        "2: execution:x); b: no GPUs; c: no GPUs"
    )
    assert "\n" not in line
    assert why_none(nodes, [0]).startswith("no node has GPU 0 free: a: 4 GPUs")
    assert why_none([], 1) == "no node has 1 free GPU: there are no usable nodes"
    many = [node(f"n{i}", reported(1, {f"session:s{i}": (0,)})) for i in range(12)]
    assert why_none(many, 1).endswith("n7: 1 GPU, 0 free (0: session:s7); and 4 more")


def test_the_nodes_widget_shows_a_bar_per_gpu_and_who_holds_it():
    """The node's `gpus` (its agent's report) as the NodesWidget shows it, reused in place."""
    from jupyter_remote.kernel.widgets import NodesWidget

    class Canned:
        answer: list[dict] = []

        def nodes(self) -> list[dict]:
            return self.answer

    def model(name: str, gpus: dict | None) -> dict:
        return {
            "node_id": name,
            "state": "healthy",
            "reason": "ok",
            "health": [],
            "warnings": [],
            "running_executions": 0,
            "gpus": gpus,
        }

    gpus = reported(2, {"session:<s1>": (1,)})
    gpus["devices"][0].update(utilization=37.0, model="NVIDIA H100")
    client = Canned()
    client.answer = [model("a", gpus), model("cpu", None)]
    widget = NodesWidget(client)
    widget.refresh()
    row = widget.rows["a"]
    first, second = row.gpu_bars
    assert first.figure.value == "37%" and "free" in first.holder.value
    assert second.bar.value == 100.0 and second.holder.value == "session:&lt;s1&gt;"
    assert "1 of 2 GPUs free" in row.work.value
    assert widget.rows["cpu"].gpu_bars == [] and "GPUs" not in widget.rows["cpu"].work.value
    gpus = reported(1, {})
    client.answer = [model("a", gpus)]
    widget.refresh()
    assert row.gpu_bars == [first] and tuple(row.gpus.children) == (first,)
    assert second.comm is None  # the bar of a GPU no longer reported is closed
    widget.close()
