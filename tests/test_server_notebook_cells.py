"""Executions and jobs filed under their notebook's cells: what a reloaded page asks for."""

from __future__ import annotations

import hashlib

import pytest
from tornado.httpclient import HTTPClientError

from conftest import BUSYBOX
from server_fixtures import api, execute, jp_server_config, node_config, remote_started, until

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_started"]


@pytest.fixture
def agents(make_agent):
    return [make_agent(host="127.0.0.11")]


@pytest.fixture
def remote_config(agents, tmp_path):
    from processes import FAST

    return {"nodes": node_config(agents), "db_path": str(tmp_path / "remote.sqlite"), **FAST}


async def cells_of(jp_fetch, path: str) -> dict[str, dict]:
    got = await api(jp_fetch, "notebook-cells", params={"path": path})
    assert got["path"] == path
    return {c["cell_id"]: c for c in got["cells"]}


async def test_the_latest_execution_and_job_of_each_cell_by_notebook_path(
    jp_fetch, jp_serverapp, jp_root_dir
):
    async def healthy():
        return (await api(jp_fetch, "nodes"))["nodes"][0]["state"] == "healthy"

    await until(healthy)
    (jp_root_dir / "work").mkdir()
    model = await jp_serverapp.session_manager.create_session(
        path="work/a.ipynb", type="notebook", kernel_name="python3"
    )
    kernel_id = model["kernel"]["id"]
    try:
        cell = {"kernel_id": kernel_id, "image": BUSYBOX}
        first = await execute(jp_fetch, **cell, cell_id="cell-1", command="echo one")
        again = await execute(jp_fetch, **cell, cell_id="cell-1", command="echo two; exit 3")
        other = await execute(jp_fetch, **cell, cell_id="cell-2", command="echo three")
        await execute(jp_fetch, **cell, command="echo no cell id")
        job = await api(
            jp_fetch,
            "jobs",
            method="POST",
            body={**cell, "cell_id": "cell-3", "command": "echo job", "image": BUSYBOX},
        )
        cells = await cells_of(jp_fetch, "work/a.ipynb")
        assert sorted(cells) == ["cell-1", "cell-2", "cell-3"], cells
        latest = cells["cell-1"]["execution"]
        assert latest["execution_id"] == again[-1].get("execution_id", latest["execution_id"])
        assert latest["execution_id"] != first[0].get("execution_id")
        assert (latest["returncode"], latest["status"]) == (3, "failed"), latest
        assert latest["notebook_path"] == "work/a.ipynb" and latest["image"] == BUSYBOX
        assert latest["node_id"] and latest["kernel_id"] == kernel_id
        # a page whose cells got new ids finds the cell by its body instead
        digest = hashlib.sha256(b"echo two; exit 3").hexdigest()
        assert latest["source_sha256"] == digest
        assert cells["cell-2"]["execution"]["status"] == "completed", other
        assert cells["cell-2"]["job"] is None and cells["cell-3"]["execution"] is None
        assert cells["cell-3"]["job"]["job_id"] == job["job_id"]
        assert cells["cell-3"]["job"]["notebook_path"] == "work/a.ipynb"
        assert await cells_of(jp_fetch, "work/other.ipynb") == {}
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)


@pytest.mark.parametrize(
    "params, reason",
    [({}, "bad_path"), ({"path": "a\x00b"}, "bad_path"), ({"path": "a", "x": "1"}, "bad_x")],
)
async def test_a_bad_query_is_a_400_naming_it(jp_fetch, params, reason):
    with pytest.raises(HTTPClientError) as err:
        await api(jp_fetch, "notebook-cells", params=params)
    assert err.value.code == 400 and reason.encode() in err.value.response.body


@pytest.mark.parametrize("cell_id", ["", "a b", "x" * 65, "a/b", 7])
async def test_a_bad_cell_id_is_refused_before_anything_runs(jp_fetch, cell_id):
    with pytest.raises(HTTPClientError) as err:
        await execute(jp_fetch, image=BUSYBOX, command="echo never", cell_id=cell_id)
    assert err.value.code == 400 and b"cell_id" in err.value.response.body
    assert (await api(jp_fetch, "executions"))["executions"] == []


def test_a_notebooks_records_are_one_index_seek_not_a_scan_of_all(tmp_path):
    """A page's open asks this on every load: it must not read every execution ever kept."""
    from jupyter_remote_server.store.jobstore import SQLiteJobStore

    store = SQLiteJobStore(str(tmp_path / "r.sqlite"))
    for i in range(50):
        record = {"execution_id": f"x-{i}", "status": "completed", "created_at": float(i)}
        store.save("execution", f"x-{i}", {**record, "notebook_path": f"nb{i % 5}.ipynb"})
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT body FROM records WHERE kind = ? AND notebook = ? "
        "ORDER BY at DESC, key DESC LIMIT ?",
        ("execution", "nb1.ipynb", 10),
    ).fetchall()
    assert "records_notebook" in str(plan) and "TEMP B-TREE" not in str(plan), plan
    rows = store.of_notebook("execution", "nb1.ipynb", 100)
    assert [r["execution_id"] for r in rows] == [f"x-{i}" for i in range(46, 0, -5)]
