"""The runner's code copied under the data directory (runner_src.py): named by its digest,
made once, the copy whole or not at all; a session container runs from it."""

from __future__ import annotations

import os

from conftest import PYTHON, new_id
from jupyter_remote.agent import runner_src
from jupyter_remote.agent.containers import PROTOCOL_MOUNT, PROTOCOL_SRC, RUNNER_MOUNT, RUNNER_SRC


def test_a_copy_by_digest_made_once_with_every_module(tmp_path):
    runner, protocol = runner_src.stage(str(tmp_path), RUNNER_SRC, PROTOCOL_SRC)
    assert os.path.dirname(runner) == os.path.dirname(protocol)
    assert os.path.basename(os.path.dirname(runner)) == runner_src.digest(RUNNER_SRC, PROTOCOL_SRC)
    for src, copy in ((RUNNER_SRC, runner), (PROTOCOL_SRC, protocol)):
        names = {os.path.relpath(p, src) for p in runner_src._files(src)}
        assert names and names == {os.path.relpath(p, copy) for p in runner_src._files(copy)}
        assert "__main__.py" in names or src == PROTOCOL_SRC
    again = runner_src.stage(str(tmp_path), RUNNER_SRC, PROTOCOL_SRC)
    assert again == (runner, protocol)
    assert [n for n in os.listdir(tmp_path / runner_src.SOURCES) if n.startswith(".")] == []


def test_a_changed_source_is_a_new_copy_and_the_old_one_stays(tmp_path):
    src = tmp_path / "src"
    (src / "runner").mkdir(parents=True)
    (src / "protocol").mkdir()
    (src / "runner" / "a.py").write_text("x = 1\n")
    (src / "protocol" / "r.py").write_text("y = 1\n")
    data = tmp_path / "data"
    first, _ = runner_src.stage(str(data), str(src / "runner"), str(src / "protocol"))
    (src / "runner" / "a.py").write_text("x = 2\n")
    second, _ = runner_src.stage(str(data), str(src / "runner"), str(src / "protocol"))
    assert first != second
    assert open(os.path.join(first, "a.py")).read() == "x = 1\n"
    assert open(os.path.join(second, "a.py")).read() == "x = 2\n"


def test_a_runner_session_mounts_the_copy_not_the_package(client, docker_client):
    """What a node's engine mounts must be under the data directory (the same path on the
    node and in an agent that runs as a container), never the agent's package path."""
    sid = new_id("src")
    client.create_session(session_id=sid, image=PYTHON)
    try:
        model = client.session(sid)
        binds = docker_client.api.inspect_container(model["container_id"])["HostConfig"]["Binds"]
        mounted = {b.split(":")[1]: b.split(":")[0] for b in binds}
        assert f"/{runner_src.SOURCES}/" in mounted[RUNNER_MOUNT]
        assert f"/{runner_src.SOURCES}/" in mounted[PROTOCOL_MOUNT]
        assert not mounted[RUNNER_MOUNT].startswith(os.path.dirname(RUNNER_SRC))
    finally:
        client.delete_session(sid)
