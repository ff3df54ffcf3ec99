"""GPUs on the agent against the real Docker engine: device requests at creation, one holder
per GPU under 40 concurrent requests, allocations that survive kill -9, freed by removal,
fresh executions and job tasks, and bad values refused with nothing created.

This machine has no NVIDIA runtime: a container with device requests is created but cannot
start. The device-request test keeps that container (--keep-failed) to inspect it; the
others run with --gpu-mode env (NVIDIA_VISIBLE_DEVICES only), whose containers do start.
docs/gpus.md says what is verified here and what is not.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import BUSYBOX, new_id
from jupyter_remote.agent.gpus import Gpu, GpuPool
from jupyter_remote.protocol.errors import Conflict

CALM = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100", "--warm-pool-size", "0")
FOUR = ("--AgentApp.gpus_visible=0,1,2,3",)


def _post(node, path: str, body: dict, timeout: float = 120) -> requests.Response:
    return requests.post(
        f"{node.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {node.token}"},
        timeout=timeout,
    )


def _gpus(node) -> dict:
    return node.client.resources()["gpus"]


def _env(attrs: dict) -> dict:
    return dict(e.partition("=")[::2] for e in attrs["Config"]["Env"] or [])


def wait_job(client, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.job(job_id))["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def _wait_free(node, free: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        gpus = _gpus(node)
        if gpus["free"] == free or time.monotonic() > deadline:
            return gpus
        time.sleep(0.1)


def test_a_session_asking_two_gpus_is_created_with_two_device_requests(make_agent, docker_client):
    node = make_agent(extra=(*CALM, *FOUR, "--keep-failed"))
    sid = new_id("s")
    resp = _post(node, "/v1/sessions", {"session_id": sid, "image": BUSYBOX, "gpus": 2})
    # no NVIDIA runtime here: created, not started; a clear 503 and the GPUs are free again
    assert resp.status_code in (201, 503), resp.text
    if resp.status_code == 503:
        answer = resp.json()
        assert answer["reason"] == "gpu_runtime_unavailable", answer
        assert "no NVIDIA runtime" in answer["message"] and "docs/gpus.md" in answer["message"]
        assert _gpus(node)["free"] == 4
    (container,) = node.containers(docker_client, session=sid)
    attrs = docker_client.api.inspect_container(container.id)
    (request,) = attrs["HostConfig"]["DeviceRequests"]
    assert request["Driver"] == "nvidia" and request["Capabilities"] == [["gpu"]]
    ids = request["DeviceIDs"]
    assert len(ids) == 2 and len(set(ids)) == 2 and set(ids) <= {"0", "1", "2", "3"}
    assert _env(attrs)["NVIDIA_VISIBLE_DEVICES"] == ",".join(ids)

    listed = new_id("s")  # named devices: exactly those
    resp = _post(node, "/v1/sessions", {"session_id": listed, "image": BUSYBOX, "gpus": [3, 1]})
    assert resp.status_code in (201, 503), resp.text
    (container,) = node.containers(docker_client, session=listed)
    attrs = docker_client.api.inspect_container(container.id)
    assert attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["1", "3"]

    # a fresh execution and a job task that cannot start: a clear message, GPUs freed
    events = list(node.client.execute_stream(new_id(), image=BUSYBOX, gpus=1, command="true"))
    assert events[-1]["status"] == "failed" and "no NVIDIA runtime" in events[-1]["message"]
    job = node.client.submit_job(job_id=new_id("j"), image=BUSYBOX, gpus=1, command="true")
    done = wait_job(node.client, job["job_id"])
    assert done["status"] == "failed", done
    assert "no NVIDIA runtime" in (done["tasks"][0].get("message") or ""), done
    assert _wait_free(node, 4)["free"] == 4


def test_forty_concurrent_requests_for_one_gpu_on_four_then_kill_restart_and_removal(
    make_agent, docker_client
):
    node = make_agent(extra=(*CALM, *FOUR, "--gpu-mode", "env"))
    assert _gpus(node)["count"] == 4 and _gpus(node)["source"] == "configured"
    sids = [new_id("s") for _ in range(40)]

    def create(sid):
        body = {"session_id": sid, "image": BUSYBOX, "memory": "64m", "gpus": 1}
        return sid, _post(node, "/v1/sessions", body)

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(create, sids))
    made = [sid for sid, r in answers if r.status_code == 201]
    refused = [r for _, r in answers if r.status_code != 201]
    assert len(made) == 4, [r.text for _, r in answers if r.status_code not in (201, 409)]
    assert len(refused) == 36 and all(r.status_code == 409 for r in refused)
    for r in refused:
        answer = r.json()
        assert answer["reason"] == "gpus_unavailable"
        assert "has 4 GPUs and 0 free" in answer["message"], answer["message"]
        assert answer["gpus_total"] == 4 and answer["gpus_free"] == 0
    # no container for a refused request; each made one has one GPU of its own
    assert len(node.containers(docker_client)) == 4
    given = {}
    for sid in made:
        (container,) = node.containers(docker_client, session=sid)
        attrs = docker_client.api.inspect_container(container.id)
        assert not attrs["HostConfig"]["DeviceRequests"]  # env mode
        given[sid] = _env(attrs)["NVIDIA_VISIBLE_DEVICES"]
    assert sorted(given.values()) == ["0", "1", "2", "3"]
    gpus = _gpus(node)
    assert gpus["free"] == 0
    held = {d["index"]: d["held_by"] for d in gpus["devices"]}
    assert held == {int(i): [f"session:{sid}"] for sid, i in given.items()}
    # a session's cells see its own GPU; the user's env cannot widen it
    events = list(
        node.client.execute_stream(
            new_id(), session_id=made[0], command="echo $NVIDIA_VISIBLE_DEVICES"
        )
    )
    assert "".join(e.get("data", "") for e in events).strip() == given[made[0]]

    node.kill9()  # killed and started again: it neither forgets nor double-books
    node.start()
    after = _gpus(node)
    assert {d["index"]: d["held_by"] for d in after["devices"]} == held and after["free"] == 0
    resp = _post(node, "/v1/sessions", {"image": BUSYBOX, "gpus": 1})
    assert resp.status_code == 409 and resp.json()["reason"] == "gpus_unavailable"

    node.client.delete_session(made[0])  # removal frees its GPU, and only its GPU
    assert _gpus(node)["free"] == 1
    again = new_id("s")
    resp = _post(node, "/v1/sessions", {"session_id": again, "image": BUSYBOX, "gpus": 1})
    assert resp.status_code == 201, resp.text
    assert resp.json()["gpus"] == [int(given[made[0]])]
    for sid in [*made[1:], again]:
        node.client.delete_session(sid)
    assert _gpus(node)["free"] == 4


def test_fresh_executions_and_job_tasks_hold_gpus_while_they_run(make_agent, docker_client):
    node = make_agent(extra=(*CALM, *FOUR, "--gpu-mode", "env"))
    eid = new_id()
    events = list(
        node.client.execute_stream(
            eid,
            image=BUSYBOX,
            gpus=[0, 2],
            command="echo $NVIDIA_VISIBLE_DEVICES",
        )
    )
    assert "".join(e.get("data", "") for e in events).strip() == "0,2"
    assert _wait_free(node, 4)["free"] == 4  # freed once its container is gone

    # a session holds 3; a fresh execution asking 2 is refused, nothing run or recorded
    sid = new_id("s")
    assert _post(node, "/v1/sessions", {"session_id": sid, "image": BUSYBOX, "gpus": 3}).ok
    refused = new_id()
    resp = _post(
        node,
        "/v1/executions",
        {"execution_id": refused, "image": BUSYBOX, "gpus": 2, "command": "true"},
    )
    assert resp.status_code == 409 and resp.json()["reason"] == "gpus_unavailable", resp.text
    assert f"session:{sid}" in resp.json()["message"]
    assert (
        requests.get(
            f"{node.url}/v1/executions/{refused}",
            headers={"Authorization": f"Bearer {node.token}"},
            timeout=30,
        ).status_code
        == 404
    )
    # nor does a job whose first task cannot have its GPUs
    job_id = new_id("j")
    resp = _post(
        node, "/v1/jobs", {"job_id": job_id, "image": BUSYBOX, "gpus": 2, "command": "true"}
    )
    assert resp.status_code == 409 and resp.json()["reason"] == "gpus_unavailable"
    assert job_id not in {j["job_id"] for j in node.client.jobs()}
    # a cell in a session asking for other GPUs than the session's is refused
    resp = _post(
        node,
        "/v1/executions",
        {"execution_id": new_id(), "session_id": sid, "gpus": 1, "command": "true"},
    )
    assert resp.status_code == 409 and resp.json()["reason"] == "gpus_mismatch", resp.text
    node.client.delete_session(sid)

    job = node.client.submit_job(
        job_id=new_id("j"),
        image=BUSYBOX,
        gpus=1,
        tasks=[
            {"command": "echo $NVIDIA_VISIBLE_DEVICES; sleep 1"},
            {"command": "echo $NVIDIA_VISIBLE_DEVICES; sleep 1", "gpus": 2},
        ],
    )
    time.sleep(0.3)
    running = _gpus(node)
    holders = sorted(h for d in running["devices"] for h in d["held_by"])
    assert running["free"] == 1 and holders == sorted(
        [f"job:{job['job_id']}/0", f"job:{job['job_id']}/1", f"job:{job['job_id']}/1"]
    )
    done = wait_job(node.client, job["job_id"])
    assert done["status"] == "completed", done
    seen = [b"".join(node.client.job_logs(job["job_id"], task=i)).decode().strip() for i in (0, 1)]
    assert len(seen[0].split(",")) == 1 and len(seen[1].split(",")) == 2
    assert not set(seen[0].split(",")) & set(seen[1].split(","))  # none shared
    assert _wait_free(node, 4)["free"] == 4


def test_forty_concurrent_fresh_executions_for_one_gpu_each(make_agent, docker_client):
    """Fresh executions are not serialised by a session lock: only the allocator's own."""
    node = make_agent(extra=(*CALM, *FOUR, "--gpu-mode", "env"))

    def run(i):
        body = {
            "execution_id": new_id(),
            "image": BUSYBOX,
            "memory": "64m",
            "gpus": 1,
            "command": "echo gpu=$NVIDIA_VISIBLE_DEVICES; sleep 3",
        }
        resp = _post(node, "/v1/executions", body)
        return resp.status_code, resp.text

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(run, range(40)))
    ran = [text for status, text in answers if status == 200]
    refused = [text for status, text in answers if status == 409]
    assert len(ran) == 4 and len(refused) == 36, [s for s, _ in answers]
    seen = sorted(line.split("gpu=")[1][:1] for text in ran for line in [text] if "gpu=" in line)
    assert seen == ["0", "1", "2", "3"], ran
    assert all('"gpus_unavailable"' in text for text in refused)
    assert _wait_free(node, 4)["free"] == 4


def test_gpus_are_freed_by_idle_cull_and_by_holders_that_died_while_the_agent_was_down(
    make_agent, docker_client
):
    node = make_agent(extra=(*CALM, *FOUR, "--gpu-mode", "env"))
    idle, dead, kept = new_id("s"), new_id("s"), new_id("s")
    body = {"image": BUSYBOX, "memory": "64m", "gpus": 1}
    assert _post(node, "/v1/sessions", {**body, "session_id": idle, "idle_timeout": 1}).ok
    assert _wait_free(node, 4)["free"] == 4  # culled after 1 s idle, its GPU back
    job = node.client.submit_job(job_id=new_id("j"), image=BUSYBOX, gpus=1, command="sleep 2")
    for sid in (dead, kept):
        assert _post(node, "/v1/sessions", {**body, "session_id": sid}).ok
    assert _gpus(node)["free"] == 1
    node.kill9()
    (container,) = node.containers(docker_client, session=dead)
    container.remove(force=True)  # crashed and gone while the agent was down
    time.sleep(2.5)  # the job's task ends meanwhile
    node.start()
    gpus = _wait_free(node, 3)
    assert sorted(h for d in gpus["devices"] for h in d["held_by"]) == [f"session:{kept}"]
    assert wait_job(node.client, job["job_id"])["status"] == "completed"


def test_containers_without_gpus_on_a_gpu_node_get_none(make_agent, docker_client):
    """NVIDIA's runtime reads NVIDIA_VISIBLE_DEVICES when it starts a container: the agent's
    value is the container's, whatever the request's env (or a CUDA image) says."""
    node = make_agent(extra=(*CALM, *FOUR, "--gpu-mode", "env"))
    for gpus, seen in ((None, "void"), (1, "0")):
        sid = new_id("s")
        body = {"session_id": sid, "image": BUSYBOX, "env": {"NVIDIA_VISIBLE_DEVICES": "all"}}
        resp = _post(node, "/v1/sessions", {**body, **({"gpus": gpus} if gpus else {})})
        assert resp.status_code == 201, resp.text
        (container,) = node.containers(docker_client, session=sid)
        assert (
            _env(docker_client.api.inspect_container(container.id))["NVIDIA_VISIBLE_DEVICES"]
            == seen
        )
        node.client.delete_session(sid)


def test_bad_gpu_values_are_400s_and_create_nothing(make_agent, docker_client):
    node = make_agent(extra=(*CALM, *FOUR, "--gpu-mode", "env"))
    plain = make_agent(extra=CALM)  # no NVML here, nothing configured: no GPUs
    assert _gpus(plain)["count"] == 0 and _gpus(plain)["source"] == "none"
    bad = [0, 65, -1, [1, 1], [], "2", 1.0, True, [1024], 5, [4]]
    for value in bad:
        for path, body in [
            ("/v1/sessions", {"image": BUSYBOX}),
            ("/v1/executions", {"execution_id": new_id(), "image": BUSYBOX, "command": "true"}),
            ("/v1/jobs", {"image": BUSYBOX, "command": "true"}),
            ("/v1/jobs", {"image": BUSYBOX, "tasks": [{"command": "true", "gpus": value}]}),
        ]:
            resp = _post(node, path, {**body, "gpus": value} if "tasks" not in body else body)
            assert resp.status_code == 400, (value, path, resp.text)
            assert resp.json()["message"], resp.text
    for value in (5, [4]):  # well-formed, but not on this node
        resp = _post(node, "/v1/sessions", {"image": BUSYBOX, "gpus": value})
        assert (
            resp.json()["reason"] == "bad_gpus"
            and "0,1,2,3" in resp.json()["message"]
            or ("has 4 in all" in resp.json()["message"])
        )
    resp = _post(plain, "/v1/sessions", {"image": BUSYBOX, "gpus": 1})
    assert resp.status_code == 400 and resp.json()["reason"] == "bad_gpus"
    assert "has no GPUs" in resp.json()["message"]
    sid = new_id("s")  # a cell asking for GPUs in a session of a node without any: 400 too
    assert _post(plain, "/v1/sessions", {"session_id": sid, "image": BUSYBOX}).ok
    cell = {"execution_id": new_id(), "session_id": sid, "gpus": 1, "command": "true"}
    resp = _post(plain, "/v1/executions", cell)
    assert resp.status_code == 400 and resp.json()["reason"] == "bad_gpus", resp.text
    plain.client.delete_session(sid)
    assert not node.containers(docker_client) and not plain.containers(docker_client)
    assert _gpus(node)["free"] == 4


# -- pure logic: the allocator and the NVML reader without a library or driver --------------
def _pool(tmp_path, n=4, sharing=False):
    from jupyter_remote.agent.gpus import Gpu, GpuPool

    return GpuPool(
        [Gpu(i) for i in range(n)], path=str(tmp_path / "gpus.json"), sharing=sharing, node_id="n"
    )


def test_allocator_gives_all_or_none_and_names_holders(tmp_path):
    import pytest

    from jupyter_remote.protocol.errors import BadRequest, Conflict

    pool = _pool(tmp_path)
    assert pool.take("session:a", 2) == (0, 1)
    assert pool.take("session:a", 2) == (0, 1)  # the same holder asking again: the same
    assert pool.take("execution:x", (3,)) == (3,)
    with pytest.raises(Conflict) as exc:
        pool.take("job:j/0", 2)  # one free: nothing taken
    assert exc.value.reason == "gpus_unavailable"
    assert "has 4 GPUs and 1 free (0: session:a; 1: session:a; 3: execution:x)" in (
        exc.value.message
    )
    assert exc.value.details["held_by"] == {
        "0": ["session:a"],
        "1": ["session:a"],
        "3": ["execution:x"],
    }
    with pytest.raises(Conflict):
        pool.take("job:j/0", (2, 3))  # 3 is held: 2 is not taken either
    assert pool.free() == [2]
    for want in (5, (4,)):
        with pytest.raises(BadRequest):
            pool.take("job:j/1", want)
    pool.release("session:a")
    pool.release("session:a")  # twice is fine
    assert pool.free() == [0, 1, 2]


def test_allocator_persists_and_frees_holders_gone_while_down(tmp_path):
    pool = _pool(tmp_path)
    pool.take("session:a", 1)
    pool.take("job:j/0", (2, 3))
    again = _pool(tmp_path)  # an agent started again
    assert again.held("session:a") == (0,) and again.held("job:j/0") == (2, 3)
    assert again.free() == [1]
    assert again.keep_only({"session:a"}) == ["job:j/0"]
    assert _pool(tmp_path).free() == [1, 2, 3]


def test_allocator_with_sharing_spreads_counts_over_the_least_held(tmp_path):
    pool = _pool(tmp_path, n=2, sharing=True)
    assert pool.take("a", 1) == (0,)
    assert pool.take("b", 1) == (1,)
    assert pool.take("c", 2) == (0, 1)
    assert pool.take("d", (1,)) == (1,)
    assert pool.report()["devices"][1]["held_by"] == ["b", "c", "d"]


def test_allocator_under_threads_never_gives_one_gpu_twice(tmp_path):
    from jupyter_remote.protocol.errors import Conflict

    pool = _pool(tmp_path)

    def take(i):
        try:
            return pool.take(f"execution:{i}", 1)
        except Conflict:
            return None

    with ThreadPoolExecutor(40) as threads:
        got = [g for g in threads.map(take, range(200)) if g]
    assert sorted(got) == [(0,), (1,), (2,), (3,)]


def test_no_nvml_library_or_driver_means_no_gpus_and_no_error(monkeypatch, caplog):
    import sys

    from jupyter_remote.agent import gpus

    reader = gpus.NvmlReader()  # this machine: nvidia-ml-py installed, no driver
    assert not reader.available and reader.devices() == []
    assert gpus.inventory(reader, None) == ([], "none")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # the library not installed
    with caplog.at_level("INFO", logger="jupyter_remote.agent"):
        assert gpus.NvmlReader().nvml is None
    assert "nvidia-ml-py is not installed" in caplog.text
    listed, source = gpus.inventory(reader, (0, 2))  # configured, known by index only
    assert [g.index for g in listed] == [0, 2] and source == "configured"
    assert listed[0].uuid is None
    assert gpus.parse_visible("none") == () and gpus.parse_visible("3,1") == (1, 3)
    for bad in ("1,1", "a", "-1", "2000"):
        try:
            gpus.parse_visible(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_nvml_reader_reads_what_the_library_gives():
    """The reader against a stand-in module with NVML's names (no GPU here)."""
    from types import SimpleNamespace

    from jupyter_remote.agent import gpus

    class NVMLError(Exception):
        pass

    def util(handle):
        if handle == 1:
            raise NVMLError("not supported")
        return SimpleNamespace(gpu=37)

    fake = SimpleNamespace(
        NVMLError=NVMLError,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: f"GPU-{h}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100",
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=80 << 30, used=h << 30),
        nvmlDeviceGetUtilizationRates=util,
    )
    reader = gpus.NvmlReader(fake)
    listed, source = gpus.inventory(reader, (1,))  # the operator keeps 0 back
    assert source == "configured" and [g.uuid for g in listed] == ["GPU-1"]
    pool = gpus.GpuPool(listed, source=source)
    (dev,) = pool.report({1: reader.metrics(1)})["devices"]
    assert dev == {
        "index": 1,
        "uuid": "GPU-1",
        "model": "NVIDIA H100",
        "memory_used": 1 << 30,
        "memory_total": 80 << 30,
        "utilization": None,
        "held_by": [],
    }


def test_the_resource_monitor_reads_nvml_on_its_own_thread(docker_client, tmp_path):
    """NVML's figures come from the monitor's sample (off the event loop), by index."""
    from jupyter_remote.agent.monitor import ResourceMonitor

    class Reader:
        calls = 0

        def metrics(self, index):
            Reader.calls += 1
            return {"memory_used": index, "memory_total": 8, "utilization": 50.0}

    monitor = ResourceMonitor(
        docker_client,
        node_id="n",
        disk_path=str(tmp_path),
        interval=60,
        cpu_max=100,
        memory_max=100,
        disk_max=100,
    )
    monitor.refresh()
    assert monitor.gpu_metrics == {}  # no reader: nothing read
    monitor.gpu_reader, monitor.gpu_indices = Reader(), [0, 3]
    monitor.refresh()
    assert Reader.calls == 2 and monitor.gpu_metrics[3]["memory_used"] == 3


def test_a_take_waits_for_an_ending_holder_and_refuses_at_once_otherwise():
    """Pure logic: GPUs whose holder is ending (its container being removed) go to the next
    holder as soon as they are released; GPUs of a live holder are refused at once."""
    pool = GpuPool([Gpu(index=0), Gpu(index=1)], node_id="n")
    pool.take("execution:a", 2)
    t0 = time.monotonic()
    with pytest.raises(Conflict):
        pool.take("session:b", 1)
    assert time.monotonic() - t0 < 0.5  # nobody is ending: no wait
    pool.ending("execution:a")
    threading.Timer(0.3, pool.release, args=("execution:a",)).start()
    assert len(pool.take("session:b", 1)) == 1
    assert 0.2 < time.monotonic() - t0 < 5
