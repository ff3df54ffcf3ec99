"""Secrets at rest: the server's SQLite file (it holds joined agents' tokens) is 0600."""

from __future__ import annotations

import os
import stat

from conftest import BUSYBOX
from jupyter_remote_server.store.jobstore import SQLiteJobStore
from server_fixtures import (
    agents,
    execute,
    healthy,
    jp_server_config,
    remote_config,
    remote_started,
)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["agents", "jp_server_config", "remote_config", "remote_started"]


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_sqlite_file_and_its_wal_are_0600_after_the_server_starts(jp_fetch, remote_config):
    await healthy(jp_fetch)
    events = await execute(jp_fetch, image=BUSYBOX, command="echo hi")
    assert events[-1]["returncode"] == 0, events
    path = remote_config["db_path"]
    files = [p for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)]
    assert path in files and len(files) == 3, files
    assert {p: mode(p) for p in files} == {p: 0o600 for p in files}


def test_an_older_world_readable_store_is_tightened(tmp_path):
    path = str(tmp_path / "old.sqlite")
    with open(path, "wb"):
        pass
    os.chmod(path, 0o644)
    old_umask = os.umask(0o022)
    try:
        store = SQLiteJobStore(path)
        store.save("node", "n1", {"token": "secret"})
    finally:
        os.umask(old_umask)
    try:
        for p in (path, path + "-wal", path + "-shm"):
            assert mode(p) == 0o600, p
    finally:
        store.close()
