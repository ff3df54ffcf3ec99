"""Files in and out of session containers, and job outputs past autostop, through a real
server, real agents and real Docker (containers with network none)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
from contextlib import redirect_stderr, redirect_stdout

import psutil
import pytest
from IPython.core.error import UsageError

from conftest import BUSYBOX, PYTHON, exported_stack, remote_shell
from jupyter_remote.kernel.api import RemoteDockerEnvironment, RemoteEnvironment
from jupyter_remote.kernel.client import RemoteClient
from jupyter_remote.protocol.errors import BadRequest, NotFound


@pytest.fixture(scope="module")
def stack(docker_client):
    yield from exported_stack(docker_client)


# busybox has no python3: its session is reached by docker exec and its files through
# Docker's archive API; the python image's runner reads and writes them itself
@pytest.fixture(params=[BUSYBOX, PYTHON], ids=["docker-archive", "runner"])
def env(stack, request):
    with RemoteDockerEnvironment(image=request.param) as environment:
        environment.execute("true")
        yield environment


def archive_events(docker_client, since: float) -> list[str]:
    """Docker's own archive work since `since`: the events `docker cp` makes."""
    until = time.time() + 0.5
    events = docker_client.events(
        since=since,
        until=until,
        decode=True,
        filters={"type": "container", "event": ["extract-to-dir", "archive-path"]},
    )
    return [e["Action"] for e in events]


def _sha(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class PeakRss:
    """Samples the RSS of some processes on a thread; the growth over the start, per pid."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.base = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, proc in self.procs.items():
                self.peak[name] = max(self.peak[name], proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def growth_mb(self) -> dict[str, float]:
        return {n: (self.peak[n] - self.base[n]) / 2**20 for n in self.procs}


def test_300_mb_in_and_out_with_flat_memory(env, stack, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(300):
            fh.write(os.urandom(1 << 20))
    pids = {"kernel": os.getpid(), "server": stack.server.proc.pid}
    for i, agent in enumerate(stack.agents):
        pids[f"agent{i}"] = agent.proc.pid
    with PeakRss(pids) as rss:
        done = env.put(str(big), "/tmp/big.bin", progress=False)
        (tmp_path / "back").mkdir()
        env.get("/tmp/big.bin", str(tmp_path / "back"), progress=False)
    assert done["size"] == 300 << 20 and done["path"] == "/tmp/big.bin"
    assert _sha(tmp_path / "back" / "big.bin") == _sha(big)
    growth = rss.growth_mb()
    print("RSS growth (MB):", {k: round(v, 1) for k, v in growth.items()})
    assert all(v < 50 for v in growth.values()), growth


def test_directory_round_trip_keeps_layout_and_modes(env, docker_client, tmp_path):
    began = time.time()
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "deep.txt").write_text("deep")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o755)
    (src / "secret").write_text("s")
    os.chmod(src / "secret", 0o600)
    os.symlink("a/b/deep.txt", src / "link")
    env.put(str(src), "/tmp/tree", progress=False)
    listing = env.execute("cd /tmp/tree && ls -lR && cat link && ./run.sh")
    assert listing["returncode"] == 0 and "deephi" in listing["output"].replace("\n", "")
    env.get("/tmp/tree", str(tmp_path / "copy"), progress=False)
    copy = tmp_path / "copy"
    assert (copy / "a" / "b" / "deep.txt").read_text() == "deep"
    assert os.stat(copy / "run.sh").st_mode & 0o777 == 0o755
    assert os.stat(copy / "secret").st_mode & 0o777 == 0o600
    assert os.readlink(copy / "link") == "a/b/deep.txt"
    # into an existing directory: it lands inside, as with docker cp / cp -r
    env.put(str(src / "run.sh"), "/tmp", progress=False)
    assert env.execute("test -x /tmp/run.sh")["returncode"] == 0
    done = archive_events(docker_client, began)
    if env.image == PYTHON:  # the runner did it all: dockerd tarred nothing
        assert done == [], done
    else:
        assert "extract-to-dir" in done and "archive-path" in done, done


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _member(name: str, kind=tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, b"x"


@pytest.mark.parametrize(
    "members",
    [
        [_member("ok/a"), _member("ok/../../escape")],
        [_member("ok/a"), _member("/etc/escape")],
        [
            _member("ok", tarfile.DIRTYPE),
            _member("ok/l", tarfile.SYMTYPE, "/etc"),
            _member("ok/l/x"),
        ],
        [_member("ok", tarfile.DIRTYPE), _member("ok/up", tarfile.SYMTYPE, "../../..")],
        [_member("ok", tarfile.DIRTYPE), _member("ok/dev", tarfile.CHRTYPE)],
        # 24 MiB already streamed into Docker when the bad member comes: the cut put is undone
        [(tarfile.TarInfo("ok/big"), os.urandom(24 << 20)), _member("ok/../../escape")],
    ],
    ids=["dotdot", "absolute", "through-symlink", "symlink-escape", "device", "after-24-mb"],
)
def test_traversal_is_refused_and_nothing_written(env, stack, members):
    client = env.client
    before = env.execute("find / -xdev 2>/dev/null | wc -l; ls -a /tmp")["output"]
    resp = client.http.put(
        f"{client.url}/sessions/{env.owner}/files",
        params={"path": "/tmp/up", "image": env.image},
        data=_tar(*members),
        timeout=60,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["reason"] == "bad_archive" and "nothing written" in resp.json()["message"]
    # no staging directory either (.jr-upload-*): a refusal waits for the writer to stop
    assert env.execute("find / -xdev 2>/dev/null | wc -l; ls -a /tmp")["output"] == before


def test_missing_paths_are_404_json(env, tmp_path):
    client = env.client
    resp = client.http.get(
        f"{client.url}/sessions/{env.owner}/files",
        params={"path": "/no/such", "image": env.image},
        timeout=60,
    )
    assert resp.status_code == 404 and resp.json()["reason"] == "path_not_found"
    with pytest.raises(NotFound):
        env.get("/no/such", str(tmp_path), progress=False)
    with pytest.raises(NotFound, match="no such directory"):
        env.put(__file__, "/no/such/dir/x.py", progress=False)
    with pytest.raises(BadRequest):
        env.put(str(tmp_path / "missing"), "/tmp", progress=False)
    for reserved in ("/run/jupyter-remote/spool/x", "/opt/jupyter-remote/runner"):
        refused = client.http.put(  # the runner's own mounts are host directories
            f"{client.url}/sessions/{env.owner}/files",
            params={"path": reserved, "image": env.image},
            data=_tar(_member("x")),
            timeout=60,
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["reason"] == "reserved_path"
    garbage = client.http.put(
        f"{client.url}/sessions/{env.owner}/files",
        params={"path": "/tmp", "image": env.image},
        data=b"not a tar" * 100,
        timeout=60,
    )
    assert garbage.status_code == 400 and garbage.json()["reason"] == "bad_archive"


def test_magics_put_get_and_one_line_errors(stack, tmp_path):
    ip = remote_shell()
    ip.run_line_magic("remote_config", f"default_image={BUSYBOX}")
    src = tmp_path / "hello.txt"
    src.write_text("hello")
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        ip.run_line_magic("remote_put", f"{src} /tmp/hello.txt")
        ip.run_line_magic("remote_get", f"/tmp/hello.txt {tmp_path / 'again.txt'}")
    assert "put" in out.getvalue() and (tmp_path / "again.txt").read_text() == "hello"
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("remote_get", "/nope/missing.txt")
    assert "\n" not in str(err.value) and "/nope/missing.txt" in str(err.value)
    ip.run_line_magic("remote_cleanup", "")


def test_job_outputs_survive_autostop(stack, docker_client, tmp_path):
    job_env = RemoteEnvironment("outputs", image=BUSYBOX)
    job_env.add(
        "mkdir -p /out/sub && echo one > /out/a.txt && echo two > /out/sub/b.txt"
        " && echo '{\"ok\": 1}' > /tmp/result.json",
        outputs=["/out", "/tmp/result.json", "/never"],
    )
    final = job_env.submit(autostop=True)
    assert final["status"] == "completed", final
    task = final["tasks"][0]
    for agent in stack.agents:  # autostop removed the task's container
        assert not [c for c in agent.containers(docker_client) if final["job_id"] in c.name]
    listed = {o["path"]: o for o in task["outputs"]}
    assert listed["/out"]["saved"] and listed["/out"]["files"] == 2
    assert listed["/never"]["saved"] is False
    job_env.get_output(0, "/out", str(tmp_path / "out"), progress=False)
    assert (tmp_path / "out" / "sub" / "b.txt").read_text() == "two\n"
    job_env.get_output(0, "result.json", str(tmp_path), progress=False)
    assert (tmp_path / "result.json").read_text() == '{"ok": 1}\n'
    client = RemoteClient()
    resp = client.http.get(
        f"{client.url}/jobs/{final['job_id']}/tasks/0/outputs", params={"path": "/none"}
    )
    assert resp.status_code == 404 and resp.json()["reason"] == "output_not_found"
    ip = remote_shell()
    with redirect_stdout(io.StringIO()):
        ip.run_line_magic("remote_get", f"--job {final['job_id']} --task 0 /out {tmp_path / 'm'}")
    assert (tmp_path / "m" / "a.txt").read_text() == "one\n"


def test_an_unframed_docker_archive_cut_short_is_an_error():
    """The agent reads Docker's archive unframed (HTTP/1.0, ended by a close): a daemon that
    dies mid-way must not pass for a whole tar (pure logic, so a stand-in response)."""
    from jupyter_remote.agent.docker_io import unframed as _unframed
    from jupyter_remote.protocol.tarstream import BadArchive

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(3 << 20)
        info = tarfile.TarInfo("f.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    whole = buf.getvalue()

    class Response:
        def __init__(self, body: bytes) -> None:
            self.body = io.BytesIO(body)

        def read(self, size: int) -> bytes:
            return self.body.read(size)

    class Conn:
        closed = False

        def close(self) -> None:
            self.closed = True

    conn = Conn()
    assert b"".join(_unframed(Response(whole), conn, "/f.bin")) == whole
    assert conn.closed
    cut = whole[: len(whole) - (len(whole) - 512 - len(data)) - 4096]  # inside the data
    with pytest.raises(BadArchive, match="ended before the tar did"):
        list(_unframed(Response(cut), Conn(), "/f.bin"))


def test_unpack_reads_members_across_any_chunk_boundaries(tmp_path):
    """Downloads are unpacked from the response's chunks as they come (pure logic: chunks
    cut at odd places, members of odd sizes, a symlink and a long PAX name)."""
    from jupyter_remote.protocol.tarstream import unpack

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    sizes = [0, 1, 511, 512, 513, 70_000, 3 << 20]
    for i, size in enumerate(sizes):
        (src / "sub" / f"f{i}.bin").write_bytes(os.urandom(size))
    (src / ("long" * 40 + ".txt")).write_bytes(b"x" * 1000)
    os.symlink("sub/f1.bin", src / "link")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname="top")
    data = buf.getvalue()

    def chunks(cuts):
        pos = i = 0
        while pos < len(data):
            yield data[pos : pos + cuts[i % len(cuts)]]
            pos, i = pos + cuts[i % len(cuts)], i + 1

    out = tmp_path / "out"
    out.mkdir()
    names = unpack(chunks([1, 700, 100_000, 1 << 20, 333]), str(out))
    assert len(names) == len(sizes) + 4  # top, sub, the files, the long name, the link
    for i in range(len(sizes)):
        got = (out / "top" / "sub" / f"f{i}.bin").read_bytes()
        assert got == (src / "sub" / f"f{i}.bin").read_bytes()
    assert os.readlink(out / "top" / "link") == "sub/f1.bin"
    with pytest.raises(tarfile.ReadError):
        unpack(iter([data[: len(data) // 2]]), str(tmp_path / "cut"))
