"""A pytest plugin for the nbval run of notebooks/: the notebooks run against a real stack,
two agents and a real Jupyter server.

scripts/test.sh loads it with `-p notebook_stack` (tests/ on PYTHONPATH), so notebooks/ holds
only notebooks. The stack starts at session start, before collection, because nbval starts
each notebook's kernel before any fixture runs, and the kernel must find the server in its
environment.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = os.path.join(HERE, "..", "notebooks")

_stack = None


def pytest_sessionstart(session):
    global _stack
    import docker

    from stack import Stack

    try:
        docker.from_env().ping()
    except docker.errors.DockerException as exc:
        raise SystemExit(f"the notebooks need a Docker engine: {exc}") from None
    _stack = Stack().start()
    _stack.export()


def pytest_sessionfinish(session, exitstatus):
    if _stack is not None:
        _stack.stop()
        import docker

        client = docker.from_env()
        for agent in _stack.agents:
            for c in agent.containers(client):
                try:
                    c.remove(force=True)
                except docker.errors.NotFound:
                    pass  # removed meanwhile by its agent
    path = os.path.join(NOTEBOOKS, "last_job_id.txt")  # jobs_and_autostop.ipynb's
    if os.path.exists(path):
        os.unlink(path)
