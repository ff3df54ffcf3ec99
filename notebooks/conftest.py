"""nbval runs these notebooks against a real stack: two agents and a real Jupyter server.

The stack starts before collection, because nbval starts each notebook's kernel before
any fixture runs, and the kernel must find the server in its environment.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

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
    path = os.path.join(HERE, "last_job_id.txt")
    if os.path.exists(path):
        os.unlink(path)
