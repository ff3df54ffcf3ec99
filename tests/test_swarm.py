"""Docker Swarm as the engine underneath (issue 19), on a real 3-node swarm on this machine.

tests/swarm_cluster.py forms the swarm (one dockerd per network namespace); the agents run
as a global service made by `jupyter-remote swarm deploy` from an image built here, offline,
FROM jupyter-remote/python:local; a real `jupyter server` (host namespace) follows the swarm
through the manager's API. It finds the nodes with their labels, places cells by label,
loses a cut-off worker at once (Swarm's Down, not `lost_after`), reconciles it when its
link is back without running anything twice, gives a drained node no new work, and takes
in a 4th node that joins. Cells use busybox (the exec path): an agent in a container binds
its runner into session containers from a path inside its own image, which the node's engine
does not have, so runner-path images need the agent to copy its runner into the data dir
first (not done yet). Under CI=true a missing Docker, dockerd, ip, unshare or nsenter fails
the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
import requests
from swarm_cluster import SwarmCluster, agent_image, describe, need_swarm, until

from conftest import BUSYBOX
from server_process import ServerProcess

pytestmark = pytest.mark.docker

ZONES = ("a", "b", "c")
DATA_DIR = "/run/jupyter-remote"  # each node's own /run (swarm_cluster), made before it starts
# lost_after far above the 5 s the cut must take: a lost node here is Swarm's word, not ours
TIMING = {"poll_interval": 0.3, "suspect_after": 1.5, "lost_after": 60.0}
USABLE = ("healthy", "busy")
SHORT = 6  # seconds each task of the cut batch sleeps
SERVICE = "jupyter-remote-agent"  # swarm deploy's default service name


@pytest.fixture(scope="module")
def swarm(docker_client, tmp_path_factory):
    """The swarm with zone labels a/b/c and the agents deployed; all gone afterwards."""
    need_swarm()
    root = tmp_path_factory.mktemp("swarm")
    t0 = time.monotonic()
    image = agent_image(root)
    built = time.monotonic() - t0
    cluster = SwarmCluster(root / "nodes", images=(image, BUSYBOX), run_dirs=("jupyter-remote",))
    with cluster:
        for node, zone in zip(cluster.nodes, ZONES, strict=True):
            cluster.update_node(node, Labels={"zone": zone})
        token = root / "agent-token"
        token.write_text(uuid.uuid4().hex + "\n")
        token.chmod(0o600)
        deploy = subprocess.run(
            [
                sys.executable, "-m", "jupyter_remote", "swarm", "deploy",
                f"--docker-host={cluster.manager.url}", f"--image={image}",
                f"--token-file={token}", f"--data-dir={DATA_DIR}",
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        cluster.token_file = token
        yield cluster
    print(f"\nagent image {built:.1f} s; swarm: {cluster.timings}")
    assert cluster.leftovers() == []


class SwarmServer(ServerProcess):
    """The server with no configured nodes: it is up once the swarm's nodes take work
    (its start is ~12 s of imports on this machine; more room under load)."""

    def start(self) -> SwarmServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, f"--config={self.config}"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_for(lambda: len(usable(self, self.names)) >= len(self.names), 120)
        return self


@pytest.fixture(scope="module")
def server(swarm, tmp_path_factory):
    """A real Jupyter server pointed at the swarm's manager (no configured nodes)."""
    tmp = tmp_path_factory.mktemp("swarm-server")
    proc = SwarmServer(
        tmp,
        [],
        swarm_url=swarm.manager.url,
        swarm_token_file=str(swarm.token_file),
        swarm_poll_interval=0.25,
        **TIMING,
    )
    proc.names = [n.name for n in swarm.nodes]
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def nodes(server) -> dict[str, dict]:
    return {n["node_id"]: n for n in server.get("nodes")["nodes"]}


def usable(server, names) -> dict[str, dict]:
    """The server's nodes once every one of `names` takes work."""
    found = nodes(server)
    return found if all(found.get(n, {}).get("state") in USABLE for n in names) else {}


def wait_usable(swarm, server, names, timeout: float = 60) -> dict[str, dict]:
    try:
        return until(lambda: usable(server, names), timeout, f"nodes {sorted(names)} usable")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; server: {nodes(server)}; swarm: {describe(swarm)}") from None


def post(server, path: str, body: dict, timeout: float = 120) -> requests.Response:
    return requests.post(
        f"{server.url}/{path}",
        json=body,
        timeout=timeout,
        headers={"Authorization": f"token {server.token}"},
    )


def cell(server, **body) -> list[dict]:
    """One cell through the server (a fresh container): all its events."""
    body.setdefault("execution_id", f"sw-{uuid.uuid4().hex[:10]}")
    body.setdefault("image", BUSYBOX)
    resp = post(server, "executions", body)
    assert resp.status_code == 200, resp.text
    return [json.loads(line) for line in resp.text.splitlines() if line.strip()]


def agent_settled(swarm, node) -> bool:
    """One agent task runs on that node and no other is still shutting down, and it answers:
    after a partition Swarm replaces the cut-off node's agent (the old one, whose desired
    state turned to shutdown while the node was Down, is killed on reconnection)."""
    service = swarm.manager.client.services.get(SERVICE)
    tasks = [t for t in service.tasks() if t.get("NodeID") == node.node_id]
    running = [t for t in tasks if t["Status"]["State"] in ("running", "starting", "preparing")]
    if len(running) != 1 or running[0]["DesiredState"] != "running":
        return False
    if running[0]["Status"]["State"] != "running":
        return False
    token = swarm.token_file.read_text().strip()
    health = requests.get(
        f"http://{node.address}:9527/v1/health",
        timeout=2,
        headers={"Authorization": f"Bearer {token}"},
    )
    return health.status_code == 200


def created(node, since: float, **labels: str) -> Counter:
    """Containers that node's own engine created since then, by their execution or job
    label: the engine's count of what ran there."""
    wanted = [f"jupyter-remote.{k}={v}" for k, v in labels.items()]
    events = node.client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": wanted},
    )
    made = Counter()
    for event in events:
        attrs = event["Actor"]["Attributes"]
        made[attrs.get("jupyter-remote.job") or attrs.get("jupyter-remote.execution", "")] += 1
    return made


def test_the_server_finds_the_swarm_nodes_with_their_labels(swarm, server):
    want = {node.name: (node, zone) for node, zone in zip(swarm.nodes, ZONES, strict=True)}
    found = wait_usable(swarm, server, want)
    assert set(found) == set(want)
    for name, (node, zone) in want.items():
        assert found[name]["source"] == "swarm"
        assert found[name]["labels"].get("zone") == zone, found[name]
        assert found[name]["url"] == f"http://{node.address}:9527"


def test_cells_placed_by_label_land_on_that_node(swarm, server):
    wait_usable(swarm, server, [n.name for n in swarm.nodes])
    since = time.time()
    for node, zone in zip(reversed(swarm.nodes), reversed(ZONES), strict=True):
        events = cell(
            server, command="echo placed; cat /proc/sys/kernel/hostname", on={"zone": zone}
        )
        started, end = events[0], events[-1]
        assert started["event"] == "started" and end["event"] == "exit", events
        assert end["returncode"] == 0 and "placed" in "".join(e.get("data", "") for e in events)
        assert started["node_id"] == node.name, (zone, started)
        eid = started["execution_id"]
        # the node's own engine made its container, and no other engine did
        assert created(node, since, execution=eid) == Counter({eid: 1})
        others = [n for n in swarm.nodes if n is not node]
        assert all(not created(n, since, execution=eid) for n in others)


def test_a_drained_node_gets_no_new_work(swarm, server):
    wait_usable(swarm, server, [n.name for n in swarm.nodes])
    drained, zone = swarm.nodes[2], ZONES[2]
    swarm.update_node(drained, Availability="drain")
    try:
        until(
            lambda: nodes(server).get(drained.name, {}).get("state") == "drained",
            15,
            "the drained node shown drained",
        )
        placed = [cell(server, command="true")[0]["node_id"] for _ in range(6)]
        assert drained.name not in placed and set(placed) <= {n.name for n in swarm.nodes}
        refused = post(
            server, "executions", {"command": "true", "image": BUSYBOX, "on": {"zone": zone}}
        )
        print(f"\n{refused.status_code} {refused.text}")
        assert refused.status_code == 503 and refused.json()["reason"] == "no_node", refused.text
        message = refused.json()["message"]
        assert f"zone={zone}" in message and drained.name in message, message
        assert "drained" in message and "\n" not in message, message
    finally:
        swarm.update_node(drained, Availability="active")
    # a drain shuts the node's agent task down too; active again, Swarm starts a new one
    until(lambda: agent_settled(swarm, drained), 30, "the drained node's agent back")
    wait_usable(swarm, server, [drained.name])


def test_a_worker_cut_mid_batch_is_lost_at_once_then_reconciled(swarm, server):
    names = [n.name for n in swarm.nodes]
    wait_usable(swarm, server, names)
    since = time.time()
    tasks = [{"command": f"echo start {i}; sleep {SHORT}; echo end {i}"} for i in range(6)]
    job = server.post("jobs", body={"name": "cut", "image": BUSYBOX, "tasks": tasks})
    job_id = job["job_id"]

    def all_running():
        tasks = server.get("jobs", job_id)["tasks"]
        return tasks if all(t["status"] == "running" for t in tasks) else None

    tasks = until(all_running, 60, "every task running")
    assert {t["node_id"] for t in tasks} == set(names)
    victim = swarm.nodes[1]  # a worker: the manager's API stays up
    on_victim = [t["index"] for t in tasks if t["node_id"] == victim.name]
    # and one that is still running there when the link comes back
    body = {"name": "long", "image": BUSYBOX, "nodes": [victim.name]}
    long_id = server.post("jobs", body={**body, "command": "echo start long; sleep 300"})["job_id"]
    until(
        lambda: server.get("jobs", long_id)["tasks"][0]["status"] == "running",
        30,
        "the long task running",
    )
    victim.cut()
    cut_at = time.monotonic()
    try:
        until(lambda: nodes(server)[victim.name]["state"] == "lost", 10, "the cut node lost")
        lost_in = time.monotonic() - cut_at
        print(f"\ncut node lost {lost_in:.2f} s after the cut (lost_after {TIMING['lost_after']})")
        assert lost_in <= 5.0
        waited = time.monotonic()
        final = server.get("jobs", job_id, "wait", timeout=45)  # under the 60 s read
        print(f"job wait answered after {time.monotonic() - waited:.2f} s: {final['status']}")
        statuses = {t["index"]: t["status"] for t in final["tasks"]}
        assert final["status"] == "degraded" and final["degraded"] is True, statuses
        assert sorted(i for i, s in statuses.items() if s == "lost") == on_victim
        assert all(s == "completed" for i, s in statuses.items() if i not in on_victim)
        # the batch's tasks there end unseen before the link is back (the long one does not)
        ends = max(tasks[i]["started_at"] for i in on_victim) + SHORT + 1
        time.sleep(max(0.0, ends - time.time()))
    finally:
        victim.restore()
    restored_at = time.monotonic()
    until(lambda: agent_settled(swarm, victim), 30, "the cut node's agent replaced by Swarm")
    print(f"agent replaced {time.monotonic() - restored_at:.2f} s after the restore")
    wait_usable(swarm, server, [victim.name])
    print(f"node usable again {time.monotonic() - restored_at:.2f} s after the restore")

    def reconciled():
        tasks = server.get("jobs", job_id)["tasks"]
        return tasks if all(tasks[i].get("reconciled") for i in on_victim) else None

    tasks = until(reconciled, 30, "the lost tasks reconciled")
    print(f"reconciled {time.monotonic() - restored_at:.2f} s after the restore")
    assert all(tasks[i]["status"] == "lost" for i in on_victim)  # a final status stays
    for i in on_victim:  # they ended there while it was cut off
        assert tasks[i]["reconciled"]["outcome"] == "ended", tasks[i]
    long_task = until(
        lambda: server.get("jobs", long_id)["tasks"][0].get("reconciled"), 30, "long reconciled"
    )
    print(f"long task: {long_task}")
    assert long_task["outcome"] == "stopped" and "not re-run" in long_task["message"], long_task

    # nothing ran twice: one container per task in all the engines, one "start" line each
    made = sum((created(n, since, kind="job") for n in swarm.nodes), Counter())
    made = Counter({k: v for k, v in made.items() if k.startswith((f"{job_id}.", f"{long_id}."))})
    want = Counter({f"{job_id}.{i}": 1 for i in range(len(tasks))} | {f"{long_id}.0": 1})
    assert made == want, made
    for i in range(len(tasks)):
        resp = requests.get(
            f"{server.url}/jobs/{job_id}/logs",
            params={"task": i},
            timeout=30,
            headers={"Authorization": f"token {server.token}"},
        )
        assert resp.text.splitlines().count(f"start {i}") == 1, (i, resp.text)

    def left():  # anything of ours on the cut node's engine (its agent is Swarm's, unlabelled)
        return victim.client.containers.list(
            all=True, filters={"label": "jupyter-remote.managed=1"}, ignore_removed=True
        )

    until(lambda: not left(), 20, "no container of ours left on the cut node")


def test_a_fourth_node_joining_the_swarm_appears_in_the_pool(swarm, server):
    wait_usable(swarm, server, [n.name for n in swarm.nodes])
    t0 = time.monotonic()
    fourth = swarm.add_node()
    swarm.update_node(fourth, Labels={"zone": "d"})

    def with_label():
        node = usable(server, [fourth.name]).get(fourth.name)
        return node if node and node["labels"].get("zone") == "d" else None

    node = until(with_label, 60, "the 4th node in the pool with its label")
    print(f"\n4th node in the pool {time.monotonic() - t0:.2f} s after it was started")
    assert node["source"] == "swarm" and node["url"] == f"http://{fourth.address}:9527"
    events = cell(server, command="echo on d", on={"zone": "d"})
    assert events[0]["node_id"] == fourth.name and events[-1]["returncode"] == 0, events
    assert os.path.isdir(fourth.dir / "run" / "jupyter-remote")
