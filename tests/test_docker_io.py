"""The docker-py, requests, urllib3 and http.client internals jupyter_remote.agent.docker_io
relies on are still there, on the versions pyproject allows (docker >= 7.1 on urllib3 1.26
or 2.x): a release that moves one must fail here, not break a transfer or a cell."""

from __future__ import annotations

import http.client
import io
import pathlib
import tarfile

import docker
import pytest
import requests
import urllib3
from packaging.requirements import Requirement
from packaging.version import Version

from jupyter_remote.agent import docker_io
from tests.processes import BUSYBOX

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _allowed(name: str) -> Requirement:
    """The requirement on `name` in pyproject's [agent] extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; CI runs 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = extras["optional-dependencies"]["agent"]
    return next(r for r in map(Requirement, deps) if r.name == name)


def test_the_installed_docker_py_urllib3_and_requests_are_ones_pyproject_allows():
    assert Version(docker.__version__) in _allowed("docker").specifier, docker.__version__
    assert Version(requests.__version__) in _allowed("requests").specifier, requests.__version__
    assert Version(docker.__version__).major == 7, "docker_io was checked on docker-py 7.x"
    urllib3_version = Version(urllib3.__version__)
    assert urllib3_version.major == 2 or urllib3_version.release[:2] == (1, 26), urllib3_version


def test_the_private_names_used_exist():
    api = docker.APIClient(version="1.41")  # no engine needed to build one
    try:
        for name in docker_io.PRIVATE_API_NAMES:
            assert callable(getattr(api, name, None)), name
        url = api._url("/containers/{0}/archive", "abc")
        assert url.endswith("/containers/abc/archive")
        adapter = api.get_adapter(url)
        if hasattr(adapter, "get_connection_with_tls_context"):
            pool = adapter.get_connection_with_tls_context(
                requests.Request("GET", url).prepare(), verify=api.verify
            )
        else:
            pool = adapter.get_connection(url)
        for name in docker_io.PRIVATE_POOL_NAMES:
            assert callable(getattr(pool, name, None)), name
        conn = pool._new_conn()
        # http.client's own request/getresponse are called on it unbound
        assert isinstance(conn, http.client.HTTPConnection)
        for name in docker_io.PRIVATE_CONNECTION_NAMES:
            assert hasattr(conn, name), name
        conn.close()
    finally:
        api.close()


@pytest.fixture
def container(docker_client):
    box = docker_client.containers.run(BUSYBOX, ["sleep", "300"], detach=True, auto_remove=False)
    try:
        yield box
    finally:
        box.remove(force=True)


def test_exec_output_and_the_archive_round_trip_on_a_real_engine(docker_client, container):
    """Every path through the adapter: exec_start's raw socket (its _sock and _response),
    a chunked PUT of a tar, a HEAD stat, and the HTTP/1.0 unframed GET."""
    api = docker_client.api
    sock = api.exec_start(api.exec_create(container.id, ["true"])["Id"], socket=True)
    for name in docker_io.PRIVATE_EXEC_SOCKET_NAMES:
        assert getattr(sock, name, None) is not None, name
    raw = sock._sock
    sock._response.close()
    raw.close()
    exec_id = api.exec_create(container.id, ["sh", "-c", "cat; echo err >&2"], stdin=True)["Id"]
    out = list(docker_io.exec_output(api, exec_id, b"hello\n"))
    assert b"".join(o for o, _ in out) == b"hello\n"
    assert b"".join(e for _, e in out) == b"err\n"

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("f.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    docker_io.put_archive(api, container.id, "/tmp", [buf.getvalue()])
    assert docker_io.path_stat(api, container.id, "/tmp/f.txt")["size"] == 3
    assert docker_io.path_stat(api, container.id, "/tmp/none") is None
    got = b"".join(docker_io.archive_chunks(api, container.id, "/tmp/f.txt"))
    with tarfile.open(fileobj=io.BytesIO(got)) as tar:
        assert tar.extractfile("f.txt").read() == b"abc"
