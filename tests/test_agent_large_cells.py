"""Cells far beyond the kernel's argv limit (~128 KiB) run: they travel on stdin, not argv."""

from __future__ import annotations

import requests

from conftest import PYTHON, new_id, output, run

FIVE_MB = 5 * 1000 * 1000


def _shell_cell() -> str:
    lines, size, i = [], 0, 0
    while size < FIVE_MB:
        line = f"# padding line {i} of a very large shell cell, nothing to run here\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines) + "n=0; for k in 1 2 3 4; do n=$((n + k)); done; echo total=$n\n"


def _python_cell() -> str:
    lines, size, i = [], 0, 0
    while size < FIVE_MB:
        line = f"v{i} = {i}  # a line of a very large Python cell\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines) + f"print('total', sum(globals()['v%d' % k] for k in range({i})))\n", i


def test_a_5_mb_shell_cell_runs_to_completion(client, session):
    cell = _shell_cell()
    assert len(cell) > FIVE_MB
    events, exit_ = run(client, session_id=session, command=cell, timeout=120)
    assert exit_["returncode"] == 0, exit_
    assert output(events) == "total=10\n"


def test_a_5_mb_python_cell_runs_to_completion(client):
    sid = new_id("big")
    client.create_session(session_id=sid, image=PYTHON, memory="512m")
    try:
        cell, n = _python_cell()
        events, exit_ = run(client, session_id=sid, python=cell, timeout=120)
    finally:
        client.delete_session(sid)
    assert exit_["returncode"] == 0, (exit_, output(events, "stderr")[-500:])
    assert output(events) == f"total {n * (n - 1) // 2}\n"


def test_the_cell_does_not_eat_the_commands_stdin(client, session):
    """What the cell's own commands read from stdin is empty, as it was with sh -c."""
    events, exit_ = run(client, session_id=session, command="cat; echo after; exit 4")
    assert output(events) == "after\n" and exit_["returncode"] == 4


def test_seed_000_execute_takes_a_large_command_too(client):
    cell = _shell_cell()
    result = client.execute(cell, timeout=120)
    assert result["returncode"] == 0 and result["output"] == "total=10\n", result


def test_other_request_bodies_keep_the_small_limit(agent, client, docker_client):
    auth = {"Authorization": f"Bearer {agent.token}"}
    before = (len(client.sessions()), len(agent.containers(docker_client)))
    body = b'{"session_id": "big-body", "env": {"A": "' + b"x" * (2 << 20) + b'"}}'
    resp = requests.post(f"{agent.url}/v1/sessions", data=body, headers=auth, timeout=30)
    assert resp.status_code == 413, resp.text
    assert resp.json()["reason"] == "payload_too_large" and "limit" in resp.json()["message"]
    assert (len(client.sessions()), len(agent.containers(docker_client))) == before


def test_execution_bodies_over_their_limit_get_413_and_run_nothing(make_agent, docker_client):
    node = make_agent(extra=("--max-execution-bytes", str(3 << 20)))
    auth = {"Authorization": f"Bearer {node.token}"}
    eid = new_id()
    cell = "echo ran >> /tmp/x\n" + "#" * (4 << 20)
    resp = requests.post(
        f"{node.url}/v1/executions",
        json={"execution_id": eid, "command": cell},
        headers=auth,
        timeout=30,
    )
    assert resp.status_code == 413, resp.text
    body = resp.json()
    assert body["reason"] == "payload_too_large" and str(3 << 20) in body["message"]
    assert node.client.executions() == [] and node.containers(docker_client) == []
    ok = requests.post(
        f"{node.url}/v1/executions",
        json={"execution_id": new_id(), "command": "echo fits\n" + "#" * (2 << 20)},
        headers=auth,
        timeout=60,
    )
    assert ok.status_code == 200 and b'"fits\\n"' in ok.content
