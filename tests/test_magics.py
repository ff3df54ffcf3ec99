"""%%remote and the line magics in a real IPython shell against a real server and agents."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout

import pytest
from IPython.core.error import UsageError

from conftest import BUSYBOX, PYTHON, exported_stack, remote_shell
from jupyter_remote.kernel.magics import RemoteCommandFailed


@pytest.fixture(scope="module")
def stack(docker_client):
    yield from exported_stack(docker_client)


@pytest.fixture(scope="module")
def ip(stack):
    shell = remote_shell()
    magics(shell).footer = False  # these tests read the cells' own output; footer: below
    return shell


def cell(ip, line: str, body: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        ip.run_cell_magic("remote", line, body)
    return out.getvalue(), err.getvalue()


def test_remote_cell_streams_stdout_and_stderr_apart(ip):
    out, err = cell(ip, f"--image {BUSYBOX} --result res", "echo out; echo err >&2")
    assert out == "out\n" and err == "err\n"
    res = ip.user_ns["res"]
    assert res.returncode == 0 and res.stdout == "out\n" and res.node_id
    assert ip.user_ns["_remote"] is res


def test_python_cells_and_limits(ip, stack, docker_client):
    out, _ = cell(
        ip,
        f"--python --image {PYTHON} --memory 256m --cpus 0.5 --pids-limit 128 -e GREETING=hi "
        "--result res",
        "import os\nprint(os.environ['GREETING'] * 2)",
    )
    assert out == "hihi\n"
    assert ip.user_ns["res"].returncode == 0
    session = [
        c
        for a in stack.agents
        for c in a.containers(docker_client, kind="session")
        if c.attrs["Config"]["Image"] == PYTHON and magics(ip).owner in c.name
    ]
    host = session[0].attrs["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (256 << 20, 5 * 10**8, 128)


def magics(ip):
    return ip.find_magic("remote", "cell").__self__


@pytest.mark.parametrize(
    "line, words",
    [
        ("--memory lots", "memory must be a size like 512m or 2g"),
        ("--memory 1k", "at least 6m"),
        ("--timeout 0", "timeout must be > 0 seconds and at most 2592000"),
        ("--timeout -5", "timeout must be > 0"),
        ("--timeout nan", "timeout must be > 0"),
        ("--timeout inf", "timeout must be > 0"),
        ("--timeout soon", "timeout must be > 0"),
        ("--cpus 0", "cpus must be a finite number"),
        ("--cpus inf", "cpus must be a finite number"),
        ("--cpus nan", "cpus must be a finite number"),
        ("--pids-limit 4", "pids-limit must be a whole number"),
        ("--pids-limit many", "pids-limit must be a whole number"),
    ],
)
def test_bad_sizes_and_timeouts_are_one_line_and_nothing_is_sent(ip, line, words):
    before = len(magics(ip).client.executions(limit=1000))
    with pytest.raises(UsageError, match=words) as info:
        ip.run_cell_magic("remote", f"--fresh --image {BUSYBOX} {line}", "true")
    assert "\n" not in str(info.value)
    assert len(magics(ip).client.executions(limit=1000)) == before


def test_default_timeout_takes_zero_for_the_default_and_nothing_bad(ip):
    with pytest.raises(UsageError, match="default_timeout must be > 0"):
        ip.run_line_magic("remote_config", "default_timeout=-1")
    with pytest.raises(UsageError, match="default_timeout must be > 0"):
        ip.run_line_magic("remote_config", "default_timeout=nan")
    with redirect_stdout(io.StringIO()):
        ip.run_line_magic("remote_config", "default_timeout=0")
    assert magics(ip).default_timeout == 0


def test_a_failing_command_is_one_clear_line_and_raise_stops(ip):
    out, err = cell(ip, f"--image {BUSYBOX}", "exit 3")
    assert err.strip().startswith("[remote] exit 3 (failed) on node")
    shown = io.StringIO()
    with redirect_stdout(shown), redirect_stderr(shown):
        result = ip.run_cell(f"%%remote --raise --image {BUSYBOX}\nexit 4")
    assert not result.success
    assert "[remote] exit 4 (failed) on node" in str(result.error_in_exec)
    assert shown.getvalue().startswith("[remote] exit 4 (failed) on node")
    assert shown.getvalue().count("\n") == 1 and "Traceback" not in shown.getvalue()


def test_every_cell_that_ran_ends_with_one_footer_line(ip, stack):
    magics(ip).footer = True
    try:
        out, _ = cell(ip, f"--image {BUSYBOX}", "echo hi")
        failed, err = cell(ip, f"--image {BUSYBOX}", "exit 3")
    finally:
        magics(ip).footer = False
    node = ip.user_ns["_remote"].node_id
    assert out.startswith("hi\n") and out.count("\n") == 2, out
    footer = out.splitlines()[1]
    assert footer.startswith(f"[remote] {node} · {BUSYBOX} · ") and footer.endswith(" · exit 0")
    assert re.search(r" · \d+\.\d s · ", footer), footer
    assert failed.strip().endswith(" · exit 3 (failed)") and "exit 3 (failed) on node" in err


@pytest.mark.parametrize(
    "line, says",
    [
        ("--node no-such-node", "no-such-node"),
        ("--image jupyter-remote/no-such-image:local --fresh", "no-such-image"),
    ],
)
def test_a_refused_cell_raises_one_line_so_run_all_stops(ip, line, says):
    shown = io.StringIO()
    with redirect_stdout(shown), redirect_stderr(shown):
        result = ip.run_cell(f"%%remote {line}\necho ran-anyway")
    assert not result.success, shown.getvalue()
    error = str(result.error_in_exec)
    assert error.startswith("[remote] not run: ") and says in error, error
    told = shown.getvalue()
    assert "ran-anyway" not in told and "Traceback" not in told and told.count("\n") == 1, told
    assert ip.user_ns["_remote"].returncode == -1


def test_the_extension_leaves_ipythons_one_custom_exc_slot_alone(ip):
    def theirs(shell, etype, evalue, tb, tb_offset=None):
        return None

    ip.set_custom_exc((LookupError,), theirs)
    try:
        with redirect_stdout(io.StringIO()):
            ip.run_line_magic("reload_ext", "jupyter_remote")
        assert ip.custom_exceptions == (LookupError,)
    finally:
        ip.set_custom_exc((), None)


def test_remote_jobs_escapes_what_it_shows(ip):
    from IPython.utils.capture import capture_output

    name = "<script>alert(1)</script>"
    job = magics(ip).client.submit_job(image=BUSYBOX, name=name, tasks=[{"command": "true"}])
    formats = ip.display_formatter.active_types
    ip.display_formatter.active_types = [*formats, "text/html"]  # as in a notebook
    try:
        with capture_output() as captured:
            ip.run_line_magic("remote_jobs", "")
    finally:
        ip.display_formatter.active_types = formats
    table = captured.outputs[0].data["text/html"]
    assert job["job_id"] in table and "&lt;script&gt;alert(1)&lt;/script&gt;" in table
    assert "<script>" not in table


def test_bad_options_and_unknown_nodes_are_one_line(ip):
    with pytest.raises(UsageError, match="unrecognized arguments"):
        ip.run_cell_magic("remote", "--no-such-option", "true")
    with pytest.raises(RemoteCommandFailed, match="not run: no node 'nowhere'"):
        cell(ip, "--node nowhere", "true")
    with pytest.raises(RemoteCommandFailed, match="not run: no node 'nowhere'"):
        cell(ip, "--node nowhere --detach", "true")
    with pytest.raises(UsageError, match="no job"):
        ip.run_line_magic("remote_job", "j-never")


def test_line_magics_show_nodes_jobs_and_config(ip, stack):
    server_default = magics(ip).client.status()["default_image"]
    assert server_default, "GET /remote/api/status names the server's default image"
    before, magics(ip).default_image = magics(ip).default_image, ""
    shown = io.StringIO()
    with redirect_stdout(shown):
        ip.run_line_magic("remote_config", "")
    magics(ip).default_image = before
    assert f"default_image: {server_default} (the server's default)\n" in shown.getvalue()
    out = io.StringIO()
    with redirect_stdout(out):
        ip.run_line_magic("remote_config", f"default_image={BUSYBOX}")
    assert stack.server.url.rsplit("/remote/api", 1)[0] in out.getvalue()
    assert "nodes: 2 usable of 2" in out.getvalue()  # healthy or busy, as load goes
    assert f"default_image: {BUSYBOX} (set in this kernel)\n" in out.getvalue()
    ip.run_line_magic("remote_nodes", "")
    ip.run_line_magic("remote_jobs", "")
    ip.run_cell_magic("remote", "--detach --name detached", "echo detached")
    job_id = ip.user_ns["_remote_job"]
    client = magics(ip).client
    final = client.wait_job(job_id, timeout=20)
    assert final["status"] == "completed" and final["name"] == "detached"
    logs = io.StringIO()
    with redirect_stdout(logs):
        ip.run_line_magic("remote_job", f"{job_id} --logs")
    assert logs.getvalue() == "detached\n"


def test_remote_docker_environment_keeps_state_and_cleans_up(stack, docker_client):
    from jupyter_remote import RemoteDockerEnvironment

    with RemoteDockerEnvironment(image=BUSYBOX, timeout=60) as env:
        assert env.execute("echo data >> file.txt")["returncode"] == 0
        env.execute("echo data >> file.txt")
        result = env.execute("wc -l < file.txt")
        assert result == {
            "output": "2\n",
            "returncode": 0,
            "status": "completed",
            "node_id": env.session["node_id"],
        }
        assert env.execute("exit 5")["returncode"] == 5
        owner = env.owner
    assert not [
        c
        for a in stack.agents
        for c in a.containers(docker_client, kind="session")
        if owner in c.name
    ]


def test_the_python_api_runs_an_execution_through_its_handle(stack):
    from jupyter_remote import RemoteClient

    execution = RemoteClient().execute(command="echo hi; exit 3", image=BUSYBOX, fresh=True)
    result = execution.wait()
    assert (result.returncode, result.status, result.stdout) == (3, "failed", "hi\n")
    assert execution.done and execution.exit["returncode"] == 3 and execution.output == "hi\n"
    assert result.execution_id == execution.execution_id and result.node_id


def test_remote_environment_submit_autostop_blocks_until_the_end(stack):
    from jupyter_remote import RemoteEnvironment

    env = RemoteEnvironment("batch", image=BUSYBOX)
    env.add("sleep 1; echo one").add("echo two").add("sleep 600", service=True)
    final = env.submit(autostop=True)
    assert final["status"] == "completed" and final["tasks_done"] == 3
    assert [t["status"] for t in final["tasks"]] == ["completed", "completed", "stopped"]


def test_widgets_show_the_pool_and_a_job_and_stop_when_closed(stack):
    import time

    from jupyter_remote import RemoteClient
    from jupyter_remote.kernel.widgets import JobWidget, NodesWidget

    client = RemoteClient()
    nodes = NodesWidget(client, interval=0.2).start()
    assert len(nodes.children) == 2 + len(stack.agents)  # header, a row each, errors
    assert "2 node(s)" in nodes.children[0].value
    from ipywidgets.widgets.widget import _instances

    def tree(widget):  # the widget and every widget shown inside it
        yield widget.model_id
        for child in getattr(widget, "children", ()):
            yield from tree(child)

    before = set(_instances)  # other live widgets (an earlier %remote_jobs list) may add theirs
    shown = set(tree(nodes))
    for _ in range(10):
        nodes.refresh()
    made = set(_instances) - before
    assert set(tree(nodes)) == shown and not made & shown, "refreshing makes new widgets"
    calls = []
    nodes.refresh = lambda: calls.append(1)
    time.sleep(0.5)
    assert calls, "the widget does not refresh on its own"
    nodes.close()
    seen = len(calls)
    time.sleep(0.6)
    assert len(calls) == seen, "a closed widget still refreshes"

    job = client.submit_job(
        image=BUSYBOX,
        name="widget-job",
        tasks=[{"command": "echo one; sleep 1"}, {"command": "sleep 60"}],
    )
    widget = JobWidget(client, job["job_id"], interval=0.2).start()
    deadline = time.monotonic() + 10
    while widget.progress.value < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert widget.progress.value == 1 and widget.progress.max == 2
    assert "1/2 tasks" == widget.counts.value and "running" in widget.title_view.value
    assert "one" in widget.log_view.value
    widget.stop_button.click()
    assert client.job(job["job_id"])["status"] == "stopped"
    deadline = time.monotonic() + 5
    while "stopped" not in widget.title_view.value and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "stopped" in widget.title_view.value and widget.stop_button.layout.display == "none"
    widget.close()


def test_remote_states_says_in_one_line_that_the_gateway_is_off(ip):
    with pytest.raises(UsageError, match="gateway_port") as err:
        ip.run_line_magic("remote_states", "")
    assert "\n" not in str(err.value)
