"""How a swarm's nodes map to the pool (pure logic, from recorded docker-py node and task
attributes): joining with labels, Down is lost at once, drained takes no new work, a node
removed from the swarm leaves. The real swarm is tests/test_swarm.py's."""

from __future__ import annotations

import asyncio
import copy

import pytest

from jupyter_remote.protocol.errors import BadRequest, Unavailable
from jupyter_remote_server.nodes.pool import ExecutorPool, NodeChooser
from jupyter_remote_server.nodes.registry import NodeRegistry
from jupyter_remote_server.nodes.swarm import SwarmTraits, SwarmWatch, read_nodes

# docker-py's APIClient.nodes() on a 20.10 manager (trimmed to what is read, plus a little)
NODES = [
    {
        "ID": "k2n7manager0000000000000",
        "Spec": {"Labels": {"zone": "eu-1"}, "Role": "manager", "Availability": "active"},
        "Description": {
            "Hostname": "mgr",
            "Engine": {"EngineVersion": "20.10.24", "Labels": {"disk": "ssd"}},
        },
        "Status": {"State": "ready", "Addr": "0.0.0.0"},
        "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "10.214.7.1:2377"},
    },
    {
        "ID": "w1w1w1w1w1w1w1w1w1w1w1w1",
        "Spec": {
            "Labels": {"zone": "eu-1", "gpu": "a100", "disk": "nvme"},
            "Role": "worker",
            "Availability": "active",
        },
        "Description": {"Hostname": "w1", "Engine": {"Labels": {"disk": "ssd"}}},
        "Status": {"State": "ready", "Addr": "10.214.7.2"},
    },
    {
        "ID": "w2w2w2w2w2w2w2w2w2w2w2w2",
        "Spec": {"Role": "worker", "Availability": "active"},
        "Description": {"Hostname": "w2", "Engine": {}},
        "Status": {"State": "ready", "Addr": "10.214.7.3"},
    },
]
# APIClient.tasks(filters={"service": ...}): one per node of the global service
TASKS = [
    {
        "ID": f"t{i}",
        "NodeID": node["ID"],
        "DesiredState": "running",
        "Status": {"State": "running", "ContainerStatus": {"ContainerID": f"c{i}"}},
    }
    for i, node in enumerate(NODES)
]
TOKEN = "swarm-s3cret"


def with_node(nodes: list[dict], hostname: str, **changes) -> list[dict]:
    nodes = copy.deepcopy(nodes)
    for attrs in nodes:
        if attrs["Description"]["Hostname"] == hostname:
            for path, value in changes.items():
                section, key = path.split("__")
                attrs[section][key] = value
    return nodes


def test_read_nodes_names_addresses_labels_and_running_agents():
    tasks = copy.deepcopy(TASKS)
    tasks[2]["Status"]["State"] = "starting"  # w2's agent is not up yet
    swarm = read_nodes(NODES, tasks)
    assert sorted(swarm) == ["mgr", "w1", "w2"]
    assert swarm["mgr"].url(9527) == "http://10.214.7.1:9527"  # a manager's 0.0.0.0
    assert swarm["w1"].url(9600) == "http://10.214.7.2:9600"
    assert swarm["w1"].labels == {"zone": "eu-1", "gpu": "a100", "disk": "nvme"}  # its own win
    assert swarm["mgr"].labels == {"zone": "eu-1", "disk": "ssd"}  # with its engine's
    assert [swarm[h].agent for h in ("mgr", "w1", "w2")] == [True, True, False]
    # a task Swarm is shutting down (its node was cut off) is no running agent
    tasks[1]["DesiredState"] = "shutdown"
    assert not read_nodes(NODES, tasks)["w1"].agent


def test_verdicts():
    swarm = read_nodes(with_node(NODES, "w1", Status__State="down"), TASKS)
    assert swarm["w1"].verdict() == ("lost", "Swarm marks node 'w1' down")
    assert swarm["w2"].verdict() is None
    swarm = read_nodes(with_node(NODES, "w2", Spec__Availability="drain"), TASKS)
    state, why = swarm["w2"].verdict()
    assert state == "drained" and "drain" in why and "left alone" in why


class HealthyAgent:
    """An agent's answers to the registry's poll (the agent's side is not under test)."""

    async def health(self, timeout=None):
        return {"healthy": True, "busy": False, "checks": []}

    async def resources(self, timeout=None):
        return {}

    async def close(self):
        pass


class Pool:
    """A registry, a pool and a swarm watch, with the state changes the registry told."""

    def __init__(self) -> None:
        self.registry = NodeRegistry(poll_interval=1.0, suspect_after=10.0, lost_after=60.0)
        self.pool = ExecutorPool(self.registry, NodeChooser())
        self.watch = SwarmWatch(self.registry, url="unix:///nowhere", token=TOKEN, agent_port=9527)
        self.changes: list[tuple[str, str, str]] = []
        self.registry.listeners.append(
            lambda n, old, new: self.changes.append((n.node_id, old, new))
        )

    def apply(self, nodes=NODES, tasks=TASKS) -> None:
        self.watch.apply(read_nodes(nodes, tasks))

    async def answered(self, *names: str) -> None:
        """Each node's agent answers a poll (the registry's own), healthy."""
        for name in names:
            node = self.registry.nodes[name]
            node.client = HealthyAgent()
            await self.registry.poll_now(node)


def run(coro_fn):
    """The registry closes clients on the running loop: run each case inside one."""
    return asyncio.run(coro_fn())


def test_nodes_with_a_running_agent_join_with_their_labels():
    async def go():
        p = Pool()
        tasks = copy.deepcopy(TASKS)
        tasks[2]["Status"]["State"] = "pending"
        p.apply(tasks=tasks)
        assert sorted(p.registry.nodes) == ["mgr", "w1"]
        w1 = p.registry.nodes["w1"]
        assert (w1.source, w1.url, w1.token) == ("swarm", "http://10.214.7.2:9527", TOKEN)
        model = w1.to_json()
        assert model["labels"]["gpu"] == "a100" and model["source"] == "swarm"
        p.apply()  # its agent runs now: it joins
        assert sorted(p.registry.nodes) == ["mgr", "w1", "w2"]
        await p.answered("mgr", "w1", "w2")
        assert [n.node_id for n in p.pool.candidates(on={"gpu": "a100"})] == ["w1"]
        with pytest.raises(BadRequest, match=r"no node has gpu=h100 \(labels per node: mgr: "):
            p.pool.candidates(on={"gpu": "h100"})

    run(go)


def test_down_is_lost_at_once_and_stays_lost_until_swarm_and_a_poll_agree():
    async def go():
        p = Pool()
        p.apply()
        await p.answered("mgr", "w1", "w2")
        p.apply(with_node(NODES, "w1", Status__State="down"))
        w1 = p.registry.nodes["w1"]
        assert w1.state == "lost" and "Swarm marks node 'w1' down" in w1.reason
        assert ("w1", "healthy", "lost") in p.changes  # jobs and streams hear it now
        await p.answered("w1")  # its agent still answers us: Swarm's word holds
        assert w1.state == "lost"
        p.apply()  # ready again in the swarm: the next answer brings it back (reconciled)
        assert w1.state == "lost"
        await p.answered("w1")
        assert w1.state == "healthy" and p.changes[-1] == ("w1", "lost", "healthy")

    run(go)


def test_a_drained_node_takes_no_new_work_and_comes_back_when_active():
    async def go():
        p = Pool()
        p.apply()
        await p.answered("mgr", "w1", "w2")
        p.apply(with_node(NODES, "w1", Spec__Availability="drain"))
        w1 = p.registry.nodes["w1"]
        assert w1.state == "drained" and w1.answering and not w1.usable
        assert "w1" not in [n.node_id for n in p.pool.candidates()]
        with pytest.raises(Unavailable, match="no node with gpu=a100 is usable .w1: drained"):
            p.pool.candidates(on={"gpu": "a100"})
        await p.answered("w1")  # polls go on; it stays drained
        assert w1.state == "drained"
        p.apply(with_node(NODES, "w1", Spec__Availability="pause"))
        assert w1.state == "drained" and "pause" in w1.reason
        p.apply()
        assert w1.state == "healthy" and w1.usable

    run(go)


def test_a_node_removed_from_the_swarm_leaves_the_pool_lost_first():
    async def go():
        p = Pool()
        p.apply()
        await p.answered("mgr", "w1", "w2")
        p.apply([n for n in NODES if n["Description"]["Hostname"] != "w2"])
        assert sorted(p.registry.nodes) == ["mgr", "w1"]
        assert ("w2", "healthy", "lost") in p.changes  # its work was marked lost first

    run(go)


def test_a_node_of_another_source_with_the_same_name_is_left_alone():
    async def go():
        p = Pool()
        configured = p.registry.add_known("http://127.0.0.1:9600", "t", "config", "w1")
        p.apply()
        assert p.registry.nodes["w1"] is configured and configured.url == "http://127.0.0.1:9600"
        assert configured.labels == {}

    run(go)


def test_a_new_address_moves_the_node():
    async def go():
        p = Pool()
        p.apply()
        p.apply(with_node(NODES, "w2", Status__Addr="10.214.7.9"))
        assert p.registry.nodes["w2"].url == "http://10.214.7.9:9527"

    run(go)


def test_an_unreachable_manager_leaves_the_pool_as_it_is(tmp_path):
    async def go():
        p = Pool()
        p.apply()
        p.watch.url = f"unix://{tmp_path}/no.sock"  # a real docker-py call that fails
        await p.watch.step()
        assert p.watch.problem and sorted(p.registry.nodes) == ["mgr", "w1", "w2"]
        p.watch.stop()

    run(go)


def test_settings_are_checked(tmp_path):
    settings = SwarmTraits(swarm_url="unix:///x", swarm_token_file=str(tmp_path / "none"))
    registry = NodeRegistry()
    with pytest.raises(ValueError, match="swarm_token_file: cannot read"):
        SwarmWatch.from_settings(settings, registry)
    (tmp_path / "empty").write_text("\n")
    settings.swarm_token_file = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="is empty"):
        SwarmWatch.from_settings(settings, registry)
    (tmp_path / "token").write_text(TOKEN + "\n")
    settings.swarm_token_file = str(tmp_path / "token")
    watch = SwarmWatch.from_settings(settings, registry)
    assert (watch.token, watch.agent_port, watch.service) == (TOKEN, 9527, "jupyter-remote-agent")
    for name, bad in (("swarm_agent_port", 0), ("swarm_poll_interval", 0.0)):
        with pytest.raises(Exception, match=name):
            setattr(settings, name, bad)
