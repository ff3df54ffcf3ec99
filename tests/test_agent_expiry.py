"""Containers carry their expiry; any agent on the engine removes other nodes' expired ones."""

from __future__ import annotations

import io
import tarfile
import threading
import time
import uuid

from conftest import BUSYBOX, new_id, remove_containers, run
from processes import RUN_ID

EXPIRES = "jupyter-remote.expires"


def _foreign(docker_client, node: str, kind: str, expires: float, **extra: str):
    """A container as a vanished agent of node `node` would have left it."""
    labels = {
        "jupyter-remote.managed": "1",
        "jupyter-remote.node": node,
        "jupyter-remote.kind": kind,
        EXPIRES: str(int(expires)),
        **extra,
    }
    return docker_client.containers.run(
        BUSYBOX,
        ["sleep", "300"],
        name=f"jr-{node}-{kind}-{uuid.uuid4().hex[:6]}",
        labels=labels,
        detach=True,
        network_mode="none",
        init=True,
    )


def _lease(container) -> float | None:
    try:
        stream, _ = container.get_archive("/.jupyter-remote-lease")
    except Exception:  # noqa: BLE001 - no lease written
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return float(tar.extractfile(tar.getmembers()[0]).read())


def _exists(docker_client, container) -> bool:
    return bool(docker_client.containers.list(all=True, filters={"id": container.id}))


def test_an_agent_removes_other_nodes_expired_containers_and_keeps_the_rest(
    make_agent, docker_client
):
    gone = f"pytest-{RUN_ID}-gone-{uuid.uuid4().hex[:4]}"
    now = time.time()
    long_ago = now - 3600  # well past the sweepers' grace
    expired = _foreign(docker_client, gone, "session", long_ago, **{"jupyter-remote.session": "s"})
    expired_fresh = _foreign(docker_client, gone, "fresh", long_ago)
    just_expired = _foreign(docker_client, gone, "session", now - 5)  # its owner may be alive
    future = _foreign(docker_client, gone, "session", now + 3600)
    job = _foreign(docker_client, gone, "job", long_ago)
    busy = _foreign(docker_client, gone, "session", long_ago)
    busy.exec_run(["sleep", "60"], detach=True)
    renewed = _foreign(docker_client, gone, "session", long_ago)
    data = f"{int(now + 3600)}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(".jupyter-remote-lease")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    renewed.put_archive("/", buf.getvalue())
    try:
        make_agent()  # sweeps at start
        assert not _exists(docker_client, expired) and not _exists(docker_client, expired_fresh)
        for kept in (future, just_expired, job, busy, renewed):
            assert _exists(docker_client, kept), kept.name
    finally:
        remove_containers(
            c
            for c in (expired, expired_fresh, future, just_expired, job, busy, renewed)
            if _exists(docker_client, c)
        )


def test_agent_made_containers_carry_their_expiry_and_a_used_session_renews_it(
    make_agent, docker_client
):
    node = make_agent(extra=("--idle-timeout", "600"))
    t0 = time.time()
    assert node.client.execute("true", timeout=30)["returncode"] == 0  # /execute's default
    (default,) = node.containers(docker_client, kind="session")
    assert t0 + 590 <= int(default.labels[EXPIRES]) <= time.time() + 600

    sid = new_id("lease")
    node.client.create_session(session_id=sid, image=BUSYBOX, memory="64m", idle_timeout=4)
    (session,) = node.containers(docker_client, session=sid)
    label = int(session.labels[EXPIRES])
    assert _lease(session) is None
    time.sleep(2.5)  # more than half the lease spent: the next use renews it
    used_at = time.time()
    run(node.client, session_id=sid, command="true")
    deadline = time.monotonic() + 5  # renewed just after the exit event is written
    while (lease := _lease(session)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # renewed at the use, for the idle timeout (whole seconds), however late this check runs
    assert lease is not None and lease >= label + 2 and lease >= used_at + 3


def test_a_fresh_container_carries_its_expiry_while_it_runs(make_agent, docker_client):
    node = make_agent()
    eid = new_id()
    started = time.time()
    thread = threading.Thread(
        target=run,
        args=(node.client,),
        kwargs={"execution_id": eid, "image": BUSYBOX, "timeout": 30, "command": "sleep 2"},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (fresh := node.containers(docker_client, execution=eid)):
            assert time.monotonic() < deadline, "the fresh container never appeared"
            time.sleep(0.05)
        expires = int(fresh[0].labels[EXPIRES])
        assert started + 30 < expires < time.time() + 30 + 5 + 300 + 1
    finally:
        thread.join(30)
    deadline = time.monotonic() + 20  # removed after the exit event, in the background
    while node.containers(docker_client, execution=eid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.containers(docker_client, execution=eid) == []
