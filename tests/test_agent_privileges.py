"""Least privilege (issue 13): dropped capabilities, a non-root user, a read-only root
filesystem, extra capabilities only where the agent allows them (real Docker)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import BUSYBOX, PYTHON, new_id, output, run
from jupyter_remote.agent.specs import KEPT_CAPS
from jupyter_remote.protocol.errors import BadRequest

# capability numbers (linux/capability.h) of the names the tests read back from CapEff
CAP_BITS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "DAC_READ_SEARCH": 2,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "NET_BIND_SERVICE": 10,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "SYS_CHROOT": 18,
    "SYS_PTRACE": 19,
    "SYS_ADMIN": 21,
    "SYS_TIME": 25,
    "MKNOD": 27,
    "AUDIT_WRITE": 29,
    "SETFCAP": 31,
}


def cap_names(mask: int) -> set[str]:
    names = {name for name, bit in CAP_BITS.items() if mask >> bit & 1}
    unnamed = mask & ~sum(1 << bit for bit in CAP_BITS.values())
    assert not unnamed, f"capabilities outside the table: {unnamed:#x}"
    return names


def cap_eff(client, sid: str) -> set[str]:
    events, end = run(client, session_id=sid, command="grep CapEff /proc/self/status")
    assert end["returncode"] == 0, events
    return cap_names(int(output(events).split()[1], 16))


def sh(client, sid: str, command: str) -> tuple[int, str]:
    events, end = run(client, session_id=sid, command=command)
    return end["returncode"], output(events) + output(events, "stderr")


def host_config(docker_client, container_id: str) -> dict:
    return docker_client.containers.get(container_id).attrs["HostConfig"]


def test_session_container_keeps_only_the_default_capabilities(client, docker_client):
    sid = new_id("s")
    model = client.create_session(session_id=sid, image=BUSYBOX, memory="64m")
    try:
        host = host_config(docker_client, model["container_id"])
        assert host["CapDrop"] == ["ALL"]
        assert sorted(host["CapAdd"]) == sorted(KEPT_CAPS)
        assert "no-new-privileges" in host["SecurityOpt"] and host["Privileged"] is False
        assert host["ReadonlyRootfs"] is False  # the default: a writable root filesystem
        assert cap_eff(client, sid) == set(KEPT_CAPS)
        for refused in (
            "mknod /tmp/null c 1 3",
            "chroot / true",
            "mkdir -p /mnt/x && mount -t tmpfs none /mnt/x",
            "date -s '2001-01-01 00:00:00'",
        ):
            code, text = sh(client, sid, refused)  # busybox date says so, yet exits 0
            assert "not permitted" in text or "denied" in text, (refused, code, text)
        # what root still does: files of others, chown, kill
        code, text = sh(
            client,
            sid,
            "echo x > /etc/jr-test && chown 1000:1000 /etc/jr-test && chmod 4755 /etc/jr-test"
            " && echo y >> /etc/jr-test && sleep 60 & sleep 0.2; kill %1 && wait; echo done",
        )
        assert code == 0 and "done" in text, text
    finally:
        client.delete_session(sid)


PACKAGE = r"""
set -e
mkdir -p /tmp/pkg/DEBIAN /tmp/pkg/usr/local/bin
printf 'Package: jr-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n' \
  > /tmp/pkg/DEBIAN/control
printf '#!/bin/sh\necho from-package\n' > /tmp/pkg/usr/local/bin/jr-test
chmod 4755 /tmp/pkg/usr/local/bin/jr-test
dpkg-deb --build --root-owner-group /tmp/pkg /tmp/jr-test.deb >/dev/null
apt-get install -y -q /tmp/jr-test.deb >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
jr-test
stat -c '%a %U' /usr/local/bin/jr-test
dpkg -r jr-test >/dev/null
su nobody -s /bin/sh -c 'id -u'
runuser -u nobody -- id -g
setpriv --reuid=1000 --regid=1000 --clear-groups id -u
"""


def test_package_managers_and_user_switching_still_work_as_root(client):
    sid = new_id("s")
    client.create_session(session_id=sid, image=PYTHON, memory="256m")
    try:
        assert cap_eff(client, sid) == set(KEPT_CAPS)
        code, text = sh(client, sid, PACKAGE)
        assert code == 0, text
        assert text.split()[:6] == ["from-package", "4755", "root", "65534", "65534", "1000"]
        raw = "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"
        events, end = run(client, session_id=sid, python=raw)
        assert end["returncode"] != 0 or end.get("status") != "completed"
        assert "PermissionError" in output(events, "stderr") + str(events), events
    finally:
        client.delete_session(sid)


def test_runner_session_as_a_non_root_user_on_a_read_only_root(client, docker_client):
    sid = new_id("s")
    model = client.create_session(
        session_id=sid, image=PYTHON, memory="256m", user="1000:1000", read_only=True
    )
    try:
        c = docker_client.containers.get(model["container_id"])
        assert c.labels.get("jupyter-remote.path") == "runner", c.labels
        assert c.attrs["Config"]["User"] == "1000:1000"
        host = c.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
        assert "size=" in host["Tmpfs"]["/tmp"]
        code, text = sh(client, sid, "id -u; id -g; echo hi > /tmp/ok && cat /tmp/ok")
        assert code == 0 and text.split() == ["1000", "1000", "hi"], text
        code, text = sh(client, sid, "touch /root-fs-file")
        assert code != 0 and "Read-only file system" in text, text
        assert cap_eff(client, sid) == set()  # a non-root user has no effective capabilities
        events, end = run(client, session_id=sid, python="import os\nx = os.getuid()")
        assert end["returncode"] == 0, events
        events, end = run(client, session_id=sid, python="print(x, open('/tmp/ok').read())")
        assert end["returncode"] == 0 and output(events).split() == ["1000", "hi"], events
    finally:
        client.delete_session(sid)


def test_exec_session_and_fresh_execution_with_user_and_read_only(client, docker_client):
    sid = new_id("s")
    model = client.create_session(
        session_id=sid, image=BUSYBOX, memory="64m", user="65534:65534", read_only=True
    )
    try:
        c = docker_client.containers.get(model["container_id"])
        assert c.attrs["HostConfig"]["ReadonlyRootfs"] is True
        code, text = sh(client, sid, "id -u; touch /tmp/ok && echo ok; touch /nope")
        assert code != 0 and text.split()[:2] == ["65534", "ok"], text
    finally:
        client.delete_session(sid)
    events, end = run(
        client, image=BUSYBOX, memory="64m", user="1234", read_only=True, command="id -u; touch /x"
    )
    assert end["returncode"] != 0 and output(events).split() == ["1234"], events
    events, end = run(client, image=PYTHON, memory="128m", user="nobody", python="import os")
    assert end["returncode"] == 0, events


def test_job_tasks_take_user_and_read_only(client, docker_client):
    job = client.submit_job(
        image=BUSYBOX,
        memory="64m",
        user="4321:4321",
        read_only=True,
        tasks=[
            {"command": "id -u; touch /x 2>/dev/null || echo refused"},
            {"command": "id -u", "user": "7"},
        ],
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = client.job(job["job_id"])
        if all(t["status"] not in ("pending", "running") for t in state["tasks"]):
            break
        time.sleep(0.3)
    logs = [b"".join(client.job_logs(job["job_id"], task=i)).decode() for i in (0, 1)]
    assert all(t["status"] == "completed" for t in state["tasks"]), state
    assert logs[0].split() == ["4321", "refused"], logs
    assert logs[1].split() == ["7"], logs
    assert state["tasks"][0]["spec"]["read_only"] is True


def _containers_of(docker_client, node_id: str) -> list:
    return docker_client.containers.list(
        all=True, filters={"label": f"jupyter-remote.node={node_id}"}
    )


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        ({"cap_add": ["NET_RAW"]}, "cap_not_allowed", "cap_add"),
        ({"cap_add": ["NOT_A_CAP"]}, "bad_cap_add", "cap_add"),
        ({"cap_add": ["NET RAW"]}, None, "cap_add"),
        ({"user": "a b"}, None, "user"),
        ({"user": ""}, None, "user"),
        ({"read_only": "yes"}, None, "read_only"),
        ({"user": "nosuchuser"}, "bad_user", "user"),
    ],
)
def test_refused_options_create_nothing(agent, client, docker_client, body, reason, field):
    before = {c.id for c in _containers_of(docker_client, agent.node_id)}
    for attempt in ("session", "fresh", "job"):
        if reason == "bad_user" and attempt != "session":
            # a name is known only when its container starts: the run fails with the reason
            if attempt == "fresh":
                events, end = run(client, image=BUSYBOX, command="true", **body)
                assert end["returncode"] == -1 and "nosuchuser" in str(end), events
            continue
        with pytest.raises(BadRequest) as err:
            if attempt == "session":
                client.create_session(session_id=new_id("s"), image=BUSYBOX, **body)
            elif attempt == "fresh":
                run(client, image=BUSYBOX, command="true", **body)
            else:
                client.submit_job(image=BUSYBOX, command="true", **body)
        assert field in err.value.message, (attempt, err.value.message)
        if reason:
            assert err.value.reason == reason
    after = {c.id for c in _containers_of(docker_client, agent.node_id)}
    assert after <= before


def test_extra_capabilities_only_from_the_allowed_list(make_agent, docker_client):
    agent = make_agent(extra=("--allow-extra-caps", "net_raw,CAP_SYS_PTRACE"))
    client = agent.client
    sid = new_id("s")
    model = client.create_session(
        session_id=sid, image=PYTHON, memory="128m", cap_add=["cap_net_raw"]
    )
    try:
        host = host_config(docker_client, model["container_id"])
        assert host["CapDrop"] == ["ALL"] and "NET_RAW" in host["CapAdd"]
        assert cap_eff(client, sid) == {*KEPT_CAPS, "NET_RAW"}
        raw = "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"
        events, end = run(client, session_id=sid, python=raw)
        assert end["returncode"] == 0, events
    finally:
        client.delete_session(sid)
    with pytest.raises(BadRequest) as err:
        client.create_session(session_id=new_id("s"), image=BUSYBOX, cap_add=["SYS_ADMIN"])
    assert err.value.reason == "cap_not_allowed" and "SYS_PTRACE" in err.value.message
    assert _containers_of(docker_client, agent.node_id) == []


def test_agent_refuses_unknown_capabilities_in_its_allow_list(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_remote", "agent", "--data-dir", str(tmp_path)]
        + ["--allow-extra-caps", "NET_RAW,FLY"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "FLY" in proc.stderr, proc.stderr


def test_agent_warns_of_a_token_file_others_can_read(tmp_path):
    from jupyter_remote.agent.app import AgentApp

    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o644)
    app = AgentApp(token_file=str(token_file))
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert app.read_token() == "s3cret"
    assert "chmod 600" in err.getvalue()
    token_file.chmod(0o600)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert app.read_token() == "s3cret"
    assert err.getvalue() == ""


def test_files_of_a_read_only_non_root_runner_session_go_to_its_tmpfs_as_its_user(client):
    """The runner moves a runner session's files as the container's own process: an upload
    lands in the tmpfs /tmp of a read-only root, owned by the session's user (Docker's
    archive API refuses a read-only root), and comes back whole."""
    import io
    import tarfile

    sid = new_id("s")
    client.create_session(
        session_id=sid, image=PYTHON, memory="256m", user="1000:1000", read_only=True
    )
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("data.txt")
            info.size = 5
            tar.addfile(info, io.BytesIO(b"hello"))
        url = f"{client.url}/v1/sessions/{sid}/files"
        put = client.http.put(url, params={"path": "/tmp/up.txt"}, data=buf.getvalue(), timeout=60)
        assert put.status_code == 200, put.text
        assert put.json()["files"] == 1 and put.json()["size"] == 5
        code, text = sh(client, sid, "stat -c '%u:%g' /tmp/up.txt; cat /tmp/up.txt")
        assert code == 0 and text.split() == ["1000:1000", "hello"], text
        got = client.http.get(url, params={"path": "/tmp/up.txt"}, timeout=60)
        with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
            assert tar.extractfile("up.txt").read() == b"hello"
        refused = client.http.put(url, params={"path": "/up.txt"}, data=buf.getvalue(), timeout=60)
        assert refused.status_code == 409 and refused.json()["reason"] == "transfer_refused"
        code, _ = sh(client, sid, "test -e /up.txt || ls -a / | grep -c jr-upload")
        assert code != 0  # neither the file nor a staging entry on the read-only root
    finally:
        client.delete_session(sid)
