"""The in-container runner, run on the host as a real process and driven by RunnerClient."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

import jupyter_remote.runner
from jupyter_remote.agent.runner_client import RunnerClient, RunnerRefused, RunnerUnavailable
from jupyter_remote.protocol import records

RUNNER_DIR = os.path.dirname(jupyter_remote.runner.__file__)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


# the interpreter that runs the runner (and its Python worker): RUNNER_PYTHON=/path/python3.8
# runs this whole file against an old python3, as found in images
PYTHON = os.environ.get("RUNNER_PYTHON") or sys.executable


class Runner:
    def __init__(self, *, module: bool = False, python: str = PYTHON):
        self.dir = tempfile.mkdtemp(prefix="jrr-")  # short: unix socket paths are <108 bytes
        self.socket = os.path.join(self.dir, "runner.sock")
        self.spool = os.path.join(self.dir, "spool")
        head = [python, "-m", "jupyter_remote.runner"] if module else [python, RUNNER_DIR]
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(RUNNER_DIR)))
        self.proc = subprocess.Popen(
            [*head, "--socket", self.socket, "--spool", self.spool], cwd=self.dir, env=env
        )
        self.client = RunnerClient(self.socket)
        self.client.wait_ready(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def runner():
    r = Runner()
    yield r
    r.stop()


def new_id() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def run(client: RunnerClient, kind: str, code: str, **kw) -> tuple[list[dict], dict]:
    events = list(client.run(kw.pop("id", None) or new_id(), kind, code, **kw))
    assert [e["event"] for e in events].count("exit") == 1
    assert events[-1]["event"] == "exit"
    assert events[0]["event"] == "started" or len(events) == 1  # a cell that cannot start
    return events, events[-1]


def text(events: list[dict], stream: str = "stdout") -> str:
    return "".join(e["data"] for e in events if e["event"] == stream)


def displays(events: list[dict]) -> list[dict]:
    return [e["data"] for e in events if e["event"] == "display"]


# -- shell cells --------------------------------------------------------------------------


def test_shell_cwd_and_exported_env_carry_over(runner):
    _, end = run(runner.client, "shell", "cd /tmp; export A=1; B=local")
    assert end["returncode"] == 0 and end["status"] == "completed"
    events, _ = run(runner.client, "shell", 'pwd; echo $A; echo "[$B]"')
    assert text(events) == "/tmp\n1\n[]\n"
    assert runner.client.status()["cwd"] == "/tmp"


def test_shell_multiline_env_value_and_request_env_is_for_one_cell(runner):
    run(runner.client, "shell", "export ML='one\ntwo'")
    events, _ = run(runner.client, "shell", 'printf "%s|%s" "$ML" "$ONLY"', env={"ONLY": "x"})
    assert text(events) == "one\ntwo|x"
    events, _ = run(runner.client, "shell", 'printf "[%s]" "$ONLY"')
    assert text(events) == "[]"


@pytest.mark.parametrize(
    "value",
    ["it's", "''", "'", "a''b'''c", "x\"''\"y", '$HOME `id` \\ "', "trail\n\n", "é ü 😀", ""],
)
def test_exported_values_carry_over_exactly(runner, value):
    """The state a shell cell leaves is read back from `export -p` (dash, ash) or `env`: a
    value survives either way, quotes and newlines included."""
    run(runner.client, "shell", 'export V="$V_IN"', env={"V_IN": value})
    events, _ = run(runner.client, "shell", 'printf "[%s]" "$V"')
    assert text(events) == f"[{value}]"


def test_export_p_output_is_parsed_or_refused():
    from jupyter_remote.runner.shell_state import parse_export_p

    got = parse_export_p(b"export A='it'\"'\"'s'\nexport B\nexport C='x\ny'\"''\"''\n")
    assert got == {"A": "it's", "C": "x\ny''"}
    assert parse_export_p(b'export A="bash style"\n') is None  # then `env` is used
    assert parse_export_p(b"declare -x A='x'\n") is None


def test_shell_stdout_stderr_apart_and_exit_codes(runner):
    events, end = run(runner.client, "shell", "echo out; echo err >&2; exit 7")
    assert text(events) == "out\n" and text(events, "stderr") == "err\n"
    assert end["returncode"] == 7 and end["status"] == "failed"
    _, end = run(runner.client, "shell", "false")
    assert end["returncode"] == 1
    _, end = run(runner.client, "shell", "this-command-does-not-exist")
    assert end["returncode"] == 127


def test_shell_workdir_and_missing_workdir(runner):
    events, _ = run(runner.client, "shell", "pwd", workdir="/")
    assert text(events) == "/\n"
    _, end = run(runner.client, "shell", "pwd", workdir="/no/such/dir")
    assert (
        end["status"] == "failed" and end["returncode"] == -1 and "/no/such/dir" in end["message"]
    )


def test_shell_output_is_live(runner):
    stream = runner.client.run(new_id(), "shell", "echo first; sleep 1; echo second")
    t0 = time.monotonic()
    got = []
    for event in stream:
        if event["event"] == "stdout":
            got.append((event["data"], time.monotonic() - t0))
    assert got[0][0] == "first\n" and got[0][1] < 0.5
    assert stream.exit["returncode"] == 0


def test_big_shell_cell(runner):
    line = "# " + "x" * 98 + "\n"
    code = line * 50_000 + "echo done\n"  # 5 MB
    assert len(code) > 5_000_000
    events, end = run(runner.client, "shell", code)
    assert end["returncode"] == 0 and text(events) == "done\n"


def test_big_output_arrives_whole(runner):
    events, end = run(runner.client, "shell", "head -c 3000000 /dev/zero | tr '\\0' a")
    assert end["returncode"] == 0 and text(events) == "a" * 3_000_000


def test_a_flood_comes_in_events_up_to_1_mib(runner):
    """The output pipes are widened to 1 MiB: a fast writer fills events 16x the old 64 KiB
    (fewer events on every hop), and none is larger."""
    events, end = run(runner.client, "shell", "head -c 8000000 /dev/zero | tr '\\0' a")
    sizes = [len(e["data"]) for e in events if e["event"] == "stdout"]
    assert end["returncode"] == 0 and sum(sizes) == 8_000_000
    assert max(sizes) > 65536 and max(sizes) <= 1 << 20


WRITTEN = 'q"uote\\back\nnl\rcr\ttab \x00\x1b é ü \u2028 \U0001f600\n' * 3000


def test_output_records_keep_bytes_and_characters_whole(runner, tmp_path):
    """Output goes as sized records, not JSON-escaped; quotes, backslashes, control bytes
    and multi-byte characters arrive as written, even when writes cut a character."""
    (tmp_path / "written.txt").write_text(WRITTEN, encoding="utf-8")
    script = tmp_path / "write.py"
    script.write_text(
        "import os, sys\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "for i in range(0, len(data), 4093):\n"  # 4093: cuts characters
        "    os.write(1, data[i:i + 4093])\n"
    )
    events, end = run(runner.client, "shell", f"{PYTHON} {script} {tmp_path / 'written.txt'}")
    assert end["returncode"] == 0 and text(events) == WRITTEN  # no U+FFFD: nothing split


def test_blocks_copy_the_spool_in_pieces_and_keep_the_exit_apart(runner):
    cid = new_id()
    stream = runner.client.run(cid, "shell", "seq 1 20000; echo tail >&2")
    copied = b"".join(stream.blocks())
    with open(os.path.join(runner.spool, f"{cid}.ndjson"), "rb") as f:
        spool = f.read()
    assert stream.exit["returncode"] == 0 and stream.offset == len(spool)
    assert spool.startswith(copied) and json.loads(spool[len(copied) :])["event"] == "exit"
    events = list(records.events(copied))
    assert text(events) == "".join(f"{i}\n" for i in range(1, 20001))
    assert text(events, "stderr") == "tail\n"
    with pytest.raises(RunnerRefused) as err:  # an error event is raised, not copied
        list(runner.client.run(cid, "shell", "true").blocks())
    assert err.value.reason == "duplicate"


def test_duplicate_id_is_refused_and_never_runs_twice(runner):
    cid = new_id()
    run(runner.client, "shell", "echo once", id=cid)
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.run(cid, "shell", "echo twice"))
    assert err.value.reason == "duplicate"
    replay = list(runner.client.attach(cid, 0))
    assert text(replay) == "once\n"
    runner.client.forget(cid)
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.run(cid, "shell", "echo again"))
    assert err.value.reason == "duplicate"
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.attach(cid, 0))
    assert err.value.reason == "unknown_id"


def test_bad_requests_get_clear_errors(runner):
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.run("../etc/passwd", "shell", "true"))
    assert err.value.reason == "bad_request"
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.run(new_id(), "perl", "1"))
    assert err.value.reason == "bad_request"
    cid = new_id()  # the protocol's id rule, matched in full: no trailing newline
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.run(cid + "\n", "shell", "true"))
    assert err.value.reason == "bad_request"
    assert not os.path.exists(os.path.join(runner.spool, cid + "\n.ndjson"))
    with pytest.raises(RunnerRefused) as err:
        runner.client.signal(new_id(), "SIGINT")
    assert err.value.reason == "unknown_id"
    with pytest.raises(RunnerRefused) as err:
        runner.client.signal(new_id(), "SIGNOPE")
    assert err.value.reason == "bad_request"


def test_unavailable_runner_is_a_clear_error(tmp_path):
    client = RunnerClient(str(tmp_path / "nothing.sock"))
    with pytest.raises(RunnerUnavailable):
        client.status()
    with pytest.raises(RunnerUnavailable):
        client.wait_ready(0.3)


def test_spool_holds_every_event_before_it_is_sent(runner):
    cid = new_id()
    events, _ = run(runner.client, "shell", "echo a; echo b >&2", id=cid)
    with open(os.path.join(runner.spool, cid + ".ndjson"), "rb") as f:
        assert list(records.events(f.read())) == events


# -- Python cells -------------------------------------------------------------------------


def test_python_state_persists(runner):
    run(runner.client, "python", "x = 41")
    events, end = run(runner.client, "python", "print(x + 1)")
    assert text(events) == "42\n" and end["status"] == "completed"
    events, _ = run(runner.client, "python", "import sys\n__name__, sys.argv")
    assert displays(events) == [{"text/plain": "('__main__', [''])"}]


def test_python_final_expression_is_displayed_and_sets_underscore(runner):
    events, _ = run(runner.client, "python", "y = 2\ny * 21")
    assert displays(events) == [{"text/plain": "42"}]
    events, _ = run(runner.client, "python", "print(_)\nNone")
    assert text(events) == "42\n" and displays(events) == []


def test_python_rich_output(runner):
    code = f"""
import base64
class H:
    def _repr_html_(self):
        return "<b>hi</b>"
class P:
    def _repr_png_(self):
        return base64.b64decode({base64.b64encode(PNG).decode()!r})
class B:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {{"application/vnd.custom+json": {{"a": 1}}, "text/plain": "B!"}}
class S:
    def _repr_svg_(self):
        return "<svg/>"
    def _repr_markdown_(self):
        return "**m**"
    def _repr_json_(self):
        return {{"k": [1]}}
    def _repr_latex_(self):
        return "$x$"
display(H(), P())
display(B())
S()
"""
    events, end = run(runner.client, "python", code)
    assert end["status"] == "completed", text(events, "stderr")
    html, png, bundle, many = displays(events)
    assert html["text/html"] == "<b>hi</b>" and html["text/plain"].startswith("<__main__.H")
    assert base64.b64decode(png["image/png"]) == PNG
    assert bundle == {"application/vnd.custom+json": {"a": 1}, "text/plain": "B!"}
    assert many["image/svg+xml"] == "<svg/>" and many["text/markdown"] == "**m**"
    assert many["application/json"] == {"k": [1]} and many["text/latex"] == "$x$"


def test_python_exception_shows_the_remote_traceback_only(runner):
    events, end = run(runner.client, "python", "def f():\n    return 1 / 0\n\nf()")
    err = text(events, "stderr")
    assert end["returncode"] == 1 and end["status"] == "failed"
    assert err.startswith("Traceback (most recent call last):\n")
    assert "ZeroDivisionError: division by zero" in err and "return 1 / 0" in err
    assert "pyworker" not in err
    events, end = run(runner.client, "python", "def (:")
    assert end["returncode"] == 1 and "SyntaxError" in text(events, "stderr")


def test_python_subprocess_output_is_captured_live(runner):
    code = (
        "import subprocess, sys, time\n"
        "print('before')\n"
        "subprocess.run(['sh', '-c', 'echo from-child; echo child-err >&2'])\n"
        "sys.stderr.write('e\\n')\n"
        "time.sleep(0.8)\n"
        "print('after')"
    )
    stream = runner.client.run(new_id(), "python", code)
    t0 = time.monotonic()
    first = None
    events = []
    for event in stream:
        events.append(event)
        if first is None and text(events).startswith("before\n"):
            first = time.monotonic() - t0
    assert text(events) == "before\nfrom-child\nafter\n"
    assert "child-err\n" in text(events, "stderr")
    assert first < 0.5


def test_big_python_cell(runner):
    code = "data = '" + "y" * 5_000_000 + "'\nprint(len(data))"
    events, end = run(runner.client, "python", code)
    assert end["status"] == "completed" and text(events) == "5000000\n"


def test_python_sys_exit(runner):
    _, end = run(runner.client, "python", "import sys; sys.exit(3)")
    assert end["returncode"] == 3 and end["status"] == "failed"
    events, end = run(runner.client, "python", "print('still here')")
    assert text(events) == "still here\n" and not [e for e in events if e["event"] == "notice"]


def test_python_interrupt_keeps_state(runner):
    run(runner.client, "python", "x = 41")
    cid = new_id()
    stream = runner.client.run(cid, "python", "print('looping', flush=True)\nwhile True: pass")
    for event in stream:
        if event["event"] == "stdout":
            break
    answer = runner.client.signal(cid, "SIGINT", grace=5)
    assert answer["ok"] and answer["signal"] == "SIGINT"
    events = list(stream)
    end = stream.exit
    assert end["status"] == "cancelled", events
    assert "KeyboardInterrupt" in text(events, "stderr")
    events, _ = run(runner.client, "python", "x")
    assert displays(events) == [{"text/plain": "41"}]
    assert not [e for e in events if e["event"] == "notice"]


def test_python_crash_loses_only_the_interpreter(runner):
    pid = runner.proc.pid
    run(runner.client, "python", "x = 41")
    events, end = run(runner.client, "python", "import os; os._exit(1)")
    assert end["status"] == "failed" and end["returncode"] == 1
    events, end = run(runner.client, "python", "print('fresh'); 'x' in globals()")
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert len(notices) == 1 and "state was lost" in notices[0]
    assert text(events) == "fresh\n" and displays(events) == [{"text/plain": "False"}]
    assert runner.client.status()["pid"] == pid


def test_python_interrupt_ignored_kills_and_restarts_the_interpreter(runner):
    run(runner.client, "python", "x = 41")
    cid = new_id()
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)"
    )
    stream = runner.client.run(cid, "python", code)
    for event in stream:
        if event["event"] == "stdout":
            break
    old = runner.client.status()["python"]["pid"]
    t0 = time.monotonic()
    runner.client.signal(cid, "SIGINT", grace=0.5)
    events = list(stream)
    assert time.monotonic() - t0 < 3
    assert stream.exit["status"] == "cancelled"
    assert any("killed" in e["message"] for e in events if e["event"] == "notice")
    events, _ = run(runner.client, "python", "print('works')")
    assert text(events) == "works\n"
    assert not [e for e in events if e["event"] == "notice"]  # said once, in the killed cell
    assert runner.client.status()["python"]["pid"] != old


def test_python_cells_queue_one_at_a_time(runner):
    first = runner.client.run(new_id(), "python", "import time; time.sleep(0.5); print(1)")
    second = runner.client.run(new_id(), "python", "print(2)")
    assert text(list(second)) == "2\n"
    assert text(list(first)) == "1\n"


# -- attach, signals, timeouts ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["shell", "python"])
def test_cell_keeps_running_when_the_client_goes_and_attach_recovers_everything(runner, kind):
    cid = new_id()
    if kind == "shell":
        code = "for i in $(seq 1 15); do echo line $i; sleep 0.2; done; exit 4"
    else:
        code = (
            "import time, sys\n"
            "for i in range(1, 16):\n"
            "    print('line', i); time.sleep(0.2)\n"
            "sys.exit(4)"
        )
    stream = runner.client.run(cid, kind, code)
    t0 = time.monotonic()
    for _ in stream:
        if time.monotonic() - t0 > 1:
            break
    stream.close()
    assert cid in runner.client.status()["running"]
    events = list(runner.client.attach(cid, 0))
    assert text(events) == "".join(f"line {i}\n" for i in range(1, 16))
    assert events[-1]["returncode"] == 4 and events[-1]["status"] == "failed"
    assert cid not in runner.client.status()["running"]


def test_attach_from_an_offset_continues_without_gap_or_repeat(runner):
    cid = new_id()
    stream = runner.client.run(cid, "shell", "for i in 1 2 3 4 5; do echo $i; sleep 0.1; done")
    first = [next(stream), next(stream)]  # started + "1"
    stream.close()
    rest = list(runner.client.attach(cid, stream.offset))
    assert text(first + rest) == "1\n2\n3\n4\n5\n"
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.attach(cid, 10**9))
    assert err.value.reason == "bad_offset"


def test_shell_cell_ignoring_sigint_is_killed_after_grace(runner):
    cid = new_id()
    stream = runner.client.run(cid, "shell", "trap '' INT; echo ready; sleep 30")
    for event in stream:
        if event["event"] == "stdout":
            break
    t0 = time.monotonic()
    runner.client.signal(cid, "SIGINT", grace=0.5)
    list(stream)
    assert 0.4 < time.monotonic() - t0 < 3
    assert stream.exit["status"] == "cancelled" and stream.exit["returncode"] == 128 + 9


def test_shell_sigterm_cancels_the_whole_group(runner):
    cid = new_id()
    stream = runner.client.run(cid, "shell", "sleep 30 & sleep 30; echo not-reached")
    next(stream)
    time.sleep(0.2)
    runner.client.signal(cid, "SIGTERM", grace=2)
    events = list(stream)
    assert stream.exit["status"] == "cancelled" and "not-reached" not in text(events)


def test_shell_timeout(runner):
    t0 = time.monotonic()
    events, end = run(runner.client, "shell", "echo start; sleep 30", timeout=0.5)
    assert end["status"] == "timed_out" and time.monotonic() - t0 < 3
    assert text(events) == "start\n"


def test_python_timeout_keeps_state(runner):
    run(runner.client, "python", "kept = 'yes'")
    events, end = run(runner.client, "python", "while True: pass", timeout=0.5)
    assert end["status"] == "timed_out" and "KeyboardInterrupt" in text(events, "stderr")
    events, _ = run(runner.client, "python", "print(kept)")
    assert text(events) == "yes\n"


def test_forget_running_is_refused_and_status_reports(runner):
    cid = new_id()
    stream = runner.client.run(cid, "shell", "sleep 0.5")
    next(stream)
    with pytest.raises(RunnerRefused) as err:
        runner.client.forget(cid)
    assert err.value.reason == "running"
    status = runner.client.status()
    assert cid in status["running"] and status["rss_bytes"] > 0 and status["version"]
    list(stream)
    assert runner.client.forget(cid)["ok"]
    assert not os.path.exists(os.path.join(runner.spool, cid + ".ndjson"))


def test_a_run_forgets_earlier_cells_once_it_has_ended(runner):
    """The agent hands the ids it has on disk to the next cell of the same runner."""
    first, second = new_id(), new_id()
    run(runner.client, "shell", "echo one", id=first)
    stream = runner.client.run(second, "shell", "sleep 0.3; echo two", forget=[first])
    next(stream)
    assert os.path.exists(os.path.join(runner.spool, first + ".ndjson"))  # not before its end
    assert text(list(stream)) == "two\n"
    for _ in range(50):  # the forget follows the exit event
        if not os.path.exists(os.path.join(runner.spool, first + ".ndjson")):
            break
        time.sleep(0.02)
    assert not os.path.exists(os.path.join(runner.spool, first + ".ndjson"))
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.run(first, "shell", "echo again"))
    assert err.value.reason == "duplicate"
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.run(new_id(), "shell", "true", forget="not a list"))
    assert err.value.reason == "bad_request"


# -- the process itself -------------------------------------------------------------------


def test_runs_as_module_and_stops_on_sigterm_with_its_cells():
    r = Runner(module=True)
    try:
        cid = new_id()
        stream = r.client.run(cid, "shell", "echo $$; sleep 30")
        pid = None
        for event in stream:
            if event["event"] == "stdout":
                pid = int(event["data"])
                break
        t0 = time.monotonic()
        r.proc.send_signal(signal.SIGTERM)
        assert r.proc.wait(5) == 0 and time.monotonic() - t0 < 2
        list(stream)
        assert stream.exit["status"] == "cancelled"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not os.path.exists(r.socket)
    finally:
        r.stop()


def test_unfinished_spool_from_an_earlier_runner_is_marked_lost():
    r = Runner()
    try:
        cid = new_id()
        stream = r.client.run(cid, "shell", "echo $$; sleep 30")
        next(stream)
        group = int(next(stream)["data"])
        r.proc.kill()  # no chance to write the exit event
        r.proc.wait()
        spool_file = os.path.join(r.spool, cid + ".ndjson")
        r.proc = subprocess.Popen([PYTHON, RUNNER_DIR, "--socket", r.socket, "--spool", r.spool])
        r.client.wait_ready(10)
        events = list(r.client.attach(cid, 0))
        assert text(events) == f"{group}\n" and events[-1]["status"] == "lost"
        with open(spool_file, encoding="utf-8") as f:
            assert json.loads(f.readlines()[-1])["status"] == "lost"
        with pytest.raises(RunnerRefused):
            list(r.client.run(cid, "shell", "echo again"))
        os.killpg(group, signal.SIGKILL)  # the cell's group, orphaned by the kill -9
    finally:
        r.stop()


OLD_PYTHON = os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python3")


@pytest.mark.skipif(not os.path.exists(OLD_PYTHON), reason="no Python 3.8 on this machine")
def test_runs_with_python_3_8():
    r = Runner(python=OLD_PYTHON)
    try:
        events, end = run(r.client, "shell", "cd /tmp; export A=1")
        events, end = run(r.client, "shell", "pwd; echo $A")
        assert text(events) == "/tmp\n1\n"
        run(r.client, "python", "x = 41")
        code = "import sys\nclass H:\n    def _repr_html_(self): return '<i>'\n"
        code += "H()\nsys.version_info[:2]"
        events, end = run(r.client, "python", "print(x + 1)\n" + code)
        assert text(events) == "42\n" and displays(events) == [{"text/plain": "(3, 8)"}]
        events, end = run(r.client, "python", "display(H())")
        assert displays(events)[0]["text/html"] == "<i>"
    finally:
        r.stop()


def test_display_keeps_its_place_between_prints(runner):
    events, _ = run(runner.client, "python", "print('a')\ndisplay(1)\nprint('b')\n2")
    order = [e["data"] if e["event"] == "stdout" else e["data"]["text/plain"] for e in events[1:-1]]
    assert "".join(order) == "a\n1b\n2"
    assert [e["event"] for e in events[1:-1]][-1] == "display"


# -- files (issue 12) -----------------------------------------------------------------------


def _framed_tar(tmp_path, top: str) -> list:
    """A tree as an uploaded tar, checked and framed by the agent's StreamCheck."""
    import io
    import tarfile

    from jupyter_remote.protocol.tarstream import StreamCheck

    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "deep.txt").write_bytes(b"deep" * 100_000)
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o755)
    os.symlink("a/b/deep.txt", src / "link")
    os.link(src / "run.sh", src / "hard")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname="src")
    data = buf.getvalue()
    check = StreamCheck(iter([data[i : i + 7000] for i in range(0, len(data), 7000)]))
    check.peek()
    return list(check.framed(top))


def test_files_put_stat_get_rename_remove(runner, tmp_path):
    """The runner writes an upload itself and tars a download itself (sendfile): the same
    tree, modes, links and bytes come back."""
    import io
    import tarfile

    into = tmp_path / "into"
    into.mkdir()
    answer = runner.client.put(str(into), _framed_tar(tmp_path, ".stage"))
    assert answer["files"] == 2 and answer["size"] == 400_000 + 18  # the hard link: a link
    assert runner.client.stat(str(into / ".stage")) == {"ok": True, "exists": True, "dir": True}
    runner.client.rename(str(into / ".stage"), str(into / "tree"))
    tree = into / "tree"
    assert (tree / "a" / "b" / "deep.txt").read_bytes() == b"deep" * 100_000
    assert os.stat(tree / "run.sh").st_mode & 0o777 == 0o755
    assert os.readlink(tree / "link") == "a/b/deep.txt"
    assert os.stat(tree / "hard").st_ino == os.stat(tree / "run.sh").st_ino

    tar_bytes = b"".join(runner.client.get(str(tree)))
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = {m.name: m for m in tar}
        assert tar.extractfile(members["tree/a/b/deep.txt"]).read() == b"deep" * 100_000
        assert members["tree/link"].issym() and members["tree/link"].linkname == "a/b/deep.txt"
        assert members["tree/run.sh"].mode == 0o755 and members["tree"].isdir()

    runner.client.remove(str(tree))
    assert not tree.exists()
    assert runner.client.stat(str(tree))["exists"] is False


def test_files_refuse_bad_paths_and_missing_places(runner, tmp_path):
    with pytest.raises(RunnerRefused) as err:
        list(runner.client.get(str(tmp_path / "missing")))
    assert err.value.reason == "path_not_found"
    with pytest.raises(RunnerRefused) as err:
        runner.client.put(str(tmp_path / "missing"), [b'{"end":true}\n'])
    assert err.value.reason == "path_not_found"
    with pytest.raises(RunnerRefused) as err:
        runner.client.stat("/" + "a" * 4096)  # the protocol's path rule: at most 4096
    assert err.value.reason == "bad_request"
    with pytest.raises(RunnerRefused) as err:
        runner.client.stat("relative/path")
    assert err.value.reason == "bad_request"
    escape = b'{"name":"../escape","type":"file","mode":420,"mtime":0,"size":1}\nx{"end":true}\n'
    with pytest.raises(RunnerRefused) as err:
        runner.client.put(str(tmp_path), [escape])
    assert err.value.reason == "bad_request" and not (tmp_path.parent / "escape").exists()
    cut = b'{"name":"f","type":"file","mode":420,"mtime":0,"size":100}\nshort'
    with pytest.raises(RunnerRefused) as err:
        runner.client.put(str(tmp_path), [cut])
    assert err.value.reason == "bad_request" and "ended inside a file" in err.value.message


def test_a_put_refused_on_the_way_returns_only_once_the_runner_stopped_writing(runner, tmp_path):
    """When the agent refuses a member half-way (a bad one after good ones), put() raises
    only after the runner has answered: everything it was sent is written by then, so the
    staging path removed next cannot come back (a leftover .jr-upload-* in CI)."""

    def pieces():
        for i in range(50):
            yield b'{"name":"stage/d%d","type":"dir","mode":493,"mtime":0}\n' % i
        raise ValueError("a bad member")

    with pytest.raises(ValueError):
        runner.client.put(str(tmp_path), pieces())
    assert len(os.listdir(tmp_path / "stage")) == 50  # all written before put() raised
    runner.client.remove(str(tmp_path / "stage"))
    time.sleep(0.2)
    assert not (tmp_path / "stage").exists()


def test_a_tar_lists_kernel_filesystems_but_not_their_contents(tmp_path, monkeypatch):
    """A download of / must end: /proc, /sys and /dev are listed, never walked."""
    from jupyter_remote.runner import files

    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "proc" / "1" / "status").write_text("x")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("h")
    monkeypatch.setattr(files, "PSEUDO", (str(tmp_path / "proc"),))
    names = [name for _, name in files._entries(str(tmp_path))]
    top = tmp_path.name
    assert names == [top, f"{top}/etc", f"{top}/proc", f"{top}/etc/hosts"]
