"""A real kernel, started by the real server, running %%remote: live output, interrupt, errors."""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
from jupyter_client import BlockingKernelClient

from conftest import BUSYBOX, PYTHON, remove_containers
from stack import Stack


@pytest.fixture(scope="module")
def stack(docker_client):
    running = Stack().start()
    yield running
    running.stop()
    for agent in running.agents:
        remove_containers(agent.containers(docker_client))


def start_kernel(server) -> BlockingKernelClient:
    """A kernel the server started (so it has the server's URL and token in its env), with
    jupyter_remote loaded; `stop_kernel` ends it."""
    headers = {"Authorization": f"token {server.token}"}
    base = f"http://127.0.0.1:{server.port}/api/kernels"
    kernel_id = requests.post(base, json={"name": "python3"}, headers=headers, timeout=60).json()[
        "id"
    ]
    client = BlockingKernelClient(
        connection_file=os.path.join(server.env["JUPYTER_RUNTIME_DIR"], f"kernel-{kernel_id}.json")
    )
    client.load_connection_file()
    # no heartbeat: its 1 s time-to-dead calls a kernel on two loaded cores dead before
    # it answers kernel_info; the server, which started it, knows whether it lives
    client.start_channels(hb=False)
    client.wait_for_ready(timeout=60)
    run(client, "%load_ext jupyter_remote")
    client.kernel_url = f"{base}/{kernel_id}"
    client.interrupt_url = f"{base}/{kernel_id}/interrupt"
    client.headers = headers
    client.kernel_id = kernel_id
    return client


def stop_kernel(client: BlockingKernelClient) -> None:
    client.stop_channels()
    requests.delete(client.kernel_url, headers=client.headers, timeout=60)


@pytest.fixture
def kernel(stack):
    client = start_kernel(stack.server)
    yield client
    stop_kernel(client)


def run(client, code: str, timeout: float = 60) -> list[tuple[float, str, str]]:
    """Execute; every stream output as (seconds since sent, stream name, text)."""
    seen: list[tuple[float, str, str]] = []
    t0 = time.monotonic()

    def hook(msg):
        if msg["msg_type"] == "stream":
            seen.append((time.monotonic() - t0, msg["content"]["name"], msg["content"]["text"]))
        elif msg["msg_type"] == "error":
            seen.append((time.monotonic() - t0, "error", "\n".join(msg["content"]["traceback"])))

    client.execute_interactive(code, timeout=timeout, output_hook=hook)
    return seen


def test_output_arrives_live_while_the_command_runs(kernel):
    seen = run(kernel, f"%%remote --image {BUSYBOX}\necho first; sleep 2; echo second")
    first = next(t for t, name, text in seen if "first" in text)
    second = next(t for t, name, text in seen if "second" in text)
    assert first < 1.5 and second >= 2.0 and second - first >= 1.5, seen


def test_interrupt_cancels_the_command_on_the_node(kernel, stack):
    def interrupt_later():
        time.sleep(1.5)
        requests.post(kernel.interrupt_url, headers=kernel.headers, timeout=30)

    threading.Thread(target=interrupt_later).start()
    t0 = time.monotonic()
    seen = run(kernel, f"%%remote --image {BUSYBOX}\necho started; sleep 30; echo never")
    assert time.monotonic() - t0 < 10
    text = "".join(t for _, _, t in seen)
    assert "started" in text and "never" not in text
    assert "[remote] interrupted: SIGTERM sent to the command on node" in text
    records = requests.get(
        f"{stack.server.url}/executions",
        params={"kernel_id": kernel.kernel_id},
        headers=kernel.headers,
        timeout=30,
    ).json()["executions"]
    assert records[0]["status"] == "cancelled", records[0]


def test_after_an_interrupt_the_cell_shows_the_command_to_its_real_exit(kernel):
    """The trap's last words and its exit code arrive after the signal: none is dropped."""
    interrupted = threading.Event()

    def hook(msg):
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if "ready" in text and not interrupted.is_set():
            interrupted.set()
            requests.post(kernel.interrupt_url, headers=kernel.headers, timeout=30)
        if msg["msg_type"] in ("stream", "error"):
            seen.append(text or "\n".join(msg["content"].get("traceback", [])))

    seen: list[str] = []
    kernel.execute_interactive(
        f"%%remote --image {BUSYBOX}\n"
        "trap 'echo trapped; exit 5' INT TERM; echo ready; while :; do sleep 0.1; done",
        timeout=60,
        output_hook=hook,
    )
    text = "".join(seen)
    assert interrupted.is_set() and "trapped" in text, text
    assert "it exited 5 (cancelled)" in text, text
    result = run(kernel, "print(_remote.returncode, _remote.status, _remote.interrupted)")
    assert result[-1][2].split() == ["5", "cancelled", "True"], result


def test_an_interrupted_python_cell_says_what_happened_and_keeps_its_variables(kernel):
    """The kernel's interrupt is a KeyboardInterrupt: a --python cell gets one too (SIGINT),
    and the closing line says so, in the node's words, once."""
    run(kernel, f"%%remote --python --image {PYTHON}\nkept = 41")
    seen: list[str] = []

    def hook(msg):
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if "ready" in text:
            requests.post(kernel.interrupt_url, headers=kernel.headers, timeout=30)
        if msg["msg_type"] == "error":
            seen.append("\n".join(msg["content"]["traceback"]))

    kernel.execute_interactive(
        f"%%remote --python --image {PYTHON}\n"
        "import time\nprint('ready', flush=True)\ntime.sleep(30)",
        timeout=60,
        output_hook=hook,
    )
    (line,) = seen
    node = line.split("on node ", 1)[1].split(";", 1)[0]
    assert line == (
        f"[remote] interrupted: SIGINT sent to the command on node {node}; it exited 130 "
        "(cancelled): a KeyboardInterrupt stopped the Python code; the interpreter and its "
        "variables are kept"
    ), line
    after = run(kernel, f"%%remote --python --image {PYTHON}\nprint(kept + 1)")
    assert "".join(t for _, _, t in after) == "42\n", after


def test_a_cell_is_filed_under_its_cell_id_and_its_side_cells_are_not(kernel, stack):
    """JupyterLab's cellId (the execute request's metadata) goes with the cell, so a reloaded
    page finds its output; the cell that brings -o variables back is no output of the cell."""
    code = f"%%remote --python --image {PYTHON} -o answer\nanswer = 6 * 7\nprint('filed')"
    msg = kernel.session.msg(
        "execute_request",
        {"code": code, "silent": False, "store_history": True, "allow_stdin": False},
        metadata={"cellId": "cell-filed-1"},
    )
    kernel.shell_channel.send(msg)
    while True:
        reply = kernel.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            break
    assert reply["content"]["status"] == "ok", reply["content"]
    assert run(kernel, "print(answer)")[-1][2] == "42\n"
    records = requests.get(
        f"{stack.server.url}/executions",
        params={"kernel_id": kernel.kernel_id},
        headers=kernel.headers,
        timeout=30,
    ).json()["executions"]
    filed = [r for r in records if r.get("cell_id") == "cell-filed-1"]
    assert len(records) >= 2 and len(filed) == 1, records
    assert filed[0]["status"] == "completed"


def test_a_second_interrupt_stops_waiting_and_says_so(kernel):
    """The command ignores SIGTERM (the agent's SIGKILL comes after its grace period)."""
    t0 = time.monotonic()
    interrupts: list[float] = []

    def hook(msg):
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if "ready" in text and not interrupts:
            interrupts.append(time.monotonic())
            requests.post(kernel.interrupt_url, headers=kernel.headers, timeout=30)
            threading.Timer(1.0, again).start()
        if msg["msg_type"] in ("stream", "error"):
            seen.append(text or "\n".join(msg["content"].get("traceback", [])))

    def again():
        interrupts.append(time.monotonic())
        requests.post(kernel.interrupt_url, headers=kernel.headers, timeout=30)

    seen: list[str] = []
    kernel.execute_interactive(
        f"%%remote --image {BUSYBOX}\ntrap '' TERM INT; echo ready; sleep 30",
        timeout=60,
        output_hook=hook,
    )
    ended = time.monotonic()
    text = "".join(seen)
    assert len(interrupts) == 2 and ended - interrupts[1] < 2, (interrupts, ended - t0, text)
    assert "stopped waiting for its end (interrupted again)" in text, text
    result = run(kernel, "print(_remote.returncode, _remote.status)")
    assert result[-1][2].split() == ["-1", "unknown"], result


def test_server_notices_are_one_line_once_and_kept_on_the_result(kernel, stack):
    """Limits a session was not made with, and a session removed on its node."""
    run(kernel, f"%%remote --image {BUSYBOX}\necho made > /tmp/f")
    seen = run(kernel, f"%%remote --image {BUSYBOX} --memory 96m --pids-limit 64 --result r\ntrue")
    told = "".join(t for _, name, t in seen if name == "stderr")
    assert told.startswith("[remote] limits apply when a session is made"), seen
    assert "memory=96m" in told and "pids_limit=64" in told and told.count("\n") == 1, told

    sessions = requests.get(
        f"{stack.server.url}/kernels/{kernel.kernel_id}/sessions",
        headers=kernel.headers,
        timeout=30,
    ).json()["sessions"]
    agent = next(a for a in stack.agents if a.node_id == sessions[0]["node_id"])
    agent.client.delete_session(sessions[0]["session_id"])  # as the idle reaper does
    seen = run(kernel, f"%%remote --image {BUSYBOX} --result r2\nls /tmp/f 2>/dev/null; echo fresh")
    told = [t for _, name, t in seen if name == "stderr"]
    assert len(told) == 1 and told[0].startswith("[remote] this kernel's"), seen
    assert "is gone" in told[0] and "a new one was made" in told[0], told
    assert "".join(t for _, name, t in seen if name == "stdout") == "fresh\n", seen
    shown = run(kernel, "print(len(r.notices), len(r2.notices), r2.returncode)")
    assert shown[-1][2].split() == ["1", "1", "0"], shown


def test_errors_are_one_clear_line_not_a_traceback(kernel):
    for code, words in [
        ("%%remote --node nowhere\ntrue", "no node 'nowhere'"),
        ("%remote_job j-never", "no job 'j-never'"),
        ("%%remote --bogus\ntrue", "unrecognized arguments: --bogus"),
        (f"%%remote --image {BUSYBOX}\nexit 7", "[remote] exit 7 (failed) on node"),
        (f"%%remote --raise --image {BUSYBOX}\nexit 8", "[remote] exit 8 (failed) on node"),
        ("%%remote --memory lots\ntrue", "memory must be a size like 512m or 2g"),
    ]:
        seen = run(kernel, code)
        text = "".join(t for _, _, t in seen).strip()
        assert words in text, (code, text)
        assert "Traceback" not in text and len(text.splitlines()) == 1, (code, text)


@pytest.mark.parametrize(
    "message, returncode, account",
    [
        ("cancelled (cancel requested); SIGTERM was sent; the command exited with 143", 143, ""),
        (
            "cancelled (cancel requested (SIGINT)); SIGINT was sent: a KeyboardInterrupt stopped "
            "the Python code (returncode 130); the interpreter and its variables are kept",
            130,
            "a KeyboardInterrupt stopped the Python code; the interpreter and its variables are "
            "kept",
        ),
        (
            "cancelled (cancel requested); SIGTERM was sent; still running after the 2 s grace, "
            "it was killed with SIGKILL (returncode 137)",
            137,
            "still running after the 2 s grace, it was killed with SIGKILL",
        ),
        (
            "cancelled (cancel requested); SIGTERM was sent; the command exited with 143; what it "
            "had started and was still running after the 2 s grace was killed with SIGKILL",
            143,
            "what it had started and was still running after the 2 s grace was killed with SIGKILL",
        ),
        ("the node's own words", 1, "the node's own words"),
        (None, 1, ""),
    ],
)
def test_the_interrupt_line_keeps_only_what_the_node_adds(message, returncode, account):
    from jupyter_remote.kernel.execution import node_account

    assert node_account(message, returncode) == account
