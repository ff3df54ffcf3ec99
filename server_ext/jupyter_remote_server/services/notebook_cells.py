"""The latest execution and job of each cell of a notebook: what a reloaded page reattaches to.

JupyterLab sends each cell's id with its execute request; the kernel passes it on with the
cell's execution (or job), and the server files it under the kernel's notebook path. A page
that opens the notebook asks for this map and renders, from the record and the node's log,
whatever its cells miss.
"""

from __future__ import annotations

from jupyter_remote_server.services.users import SERVER, Caller

MOST_RECORDS = 5000  # per kind and notebook: far more than a notebook has cells


def latest_per_cell(
    rows: list[dict], live: dict[str, dict], key: str, caller: Caller = SERVER
) -> dict[str, dict]:
    """cell id -> the newest record of `rows` (newest first) the caller may see, live ones
    as in memory."""
    out: dict[str, dict] = {}
    for row in rows:
        if not caller.sees(row):
            continue
        cell = row.get("cell_id")
        if cell and cell not in out:
            out[cell] = live.get(row[key], row)
    return out


def notebook_cells(manager, path: str, caller: Caller = SERVER) -> dict:
    """The GET /remote/api/notebook-cells answer for notebook `path`."""
    store = manager.store
    executions = latest_per_cell(
        store.of_notebook("execution", path, MOST_RECORDS),
        manager.executions.records,
        "execution_id",
        caller,
    )
    jobs = latest_per_cell(
        store.of_notebook("job", path, MOST_RECORDS), manager.jobs.jobs, "job_id", caller
    )
    cells = []
    for cell in sorted(set(executions) | set(jobs)):
        job = jobs.get(cell)
        cells.append(
            {
                "cell_id": cell,
                "execution": executions.get(cell),
                "job": manager.jobs.model(job) if job is not None else None,
            }
        )
    return {"path": path, "cells": cells}
