"""The Python API under the magics, in the shapes of seeds 000 and 002, for scripts too."""

from __future__ import annotations

import sys
import uuid

from jupyter_remote.kernel.client import RemoteClient
from jupyter_remote.protocol.errors import RemoteError
from jupyter_remote.protocol.rules import DEFAULT_COMMAND_TIMEOUT


class RemoteDockerEnvironment:
    """One environment (a session container on one node), many execute() calls, cleanup().

    Seed 000's shape: execute() answers {"output", "returncode"} and never raises for a
    failed request: it answers returncode -1 and the reason, and never re-sends.

    Example::

        with RemoteDockerEnvironment(image="jupyter-remote/python:local") as env:
            env.execute("echo data >> file.txt")
            print(env.execute("cat file.txt")["output"])
    """

    def __init__(
        self,
        server_url: str | None = None,
        image: str | None = None,
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
        *,
        token: str | None = None,
        node: str | None = None,
        memory: str | None = None,
        cpus: float | None = None,
        gpus: int | list[int] | None = None,
        on: dict[str, str] | None = None,
        client: RemoteClient | None = None,
    ) -> None:
        self.client = client or RemoteClient(server_url, token)
        self.image = image
        self.timeout = timeout
        self.node = node
        # gpus: a count or device indices, held by the session; on: only a node with every
        # one of these labels takes it
        fields = {"memory": memory, "cpus": cpus, "gpus": gpus, "on": on}
        self.limits = {k: v for k, v in fields.items() if v}
        self.owner = f"env-{uuid.uuid4().hex[:12]}"
        self.session: dict | None = None

    def _ensure_session(self) -> dict:
        if self.session is None:
            self.session = self.client.create_session(
                owner=self.owner, image=self.image, node=self.node, **self.limits
            )
        return self.session

    def execute(self, command: str, timeout: int | None = None, **kw) -> dict:
        """Run `command` once in this environment: {"output", "returncode", ...}."""
        try:
            session = self._ensure_session()
        except RemoteError as exc:
            return {"output": f"Error: {exc.message}", "returncode": -1}
        execution = self.client.execute(
            node=session["node_id"],
            session_id=session["session_id"],
            command=command,
            timeout=timeout or self.timeout,
            **kw,
        )
        result = execution.wait()
        output = execution.output
        if execution.error is not None:
            return {"output": output + f"Error: {execution.error.message}", "returncode": -1}
        if result.returncode == -1 and result.message:
            output += f"Error: {result.message}"
        answer = {
            "output": output,
            "returncode": -1 if result.returncode is None else result.returncode,
            "status": result.status,
            "node_id": session["node_id"],
        }
        if result.notices:  # what the server said about the session (replaced, limits kept)
            answer["notices"] = result.notices
        return answer

    def put(self, local: str, remote: str = ".", progress: bool | None = None) -> dict:
        """Copy a local file or directory into this environment (like `docker cp`)."""
        session = self._ensure_session()
        return self.client.put_files(self.owner, local, remote, session["image"], progress)

    def get(self, remote: str, local: str = ".", progress: bool | None = None) -> list[str]:
        """Copy a file or directory out of this environment to `local`."""
        session = self._ensure_session()
        return self.client.get_files(self.owner, remote, local, session["image"], progress)

    def cleanup(self) -> None:
        """Remove this environment's container."""
        if self.session is not None:
            self.client.delete_sessions(self.owner)
            self.session = None

    def __enter__(self) -> RemoteDockerEnvironment:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


class RemoteEnvironment:
    """A batch of tasks (and services) submitted as one job; seed 002's submit(autostop=True).

    Example::

        env = RemoteEnvironment("nightly", image="jupyter-remote/busybox:local")
        env.add("echo one").add("echo two").add("sleep 600", service=True)
        final = env.submit(autostop=True)   # blocks; the JobWidget updates in a notebook
    """

    def __init__(
        self,
        name: str = "job",
        server_url: str | None = None,
        *,
        image: str | None = None,
        nodes: list[str] | None = None,
        parallelism: int = 0,
        on: dict[str, str] | None = None,
        token: str | None = None,
        client: RemoteClient | None = None,
    ) -> None:
        self.client = client or RemoteClient(server_url, token)
        self.name = name
        self.image = image
        self.nodes = nodes
        self.on = on  # tasks only on nodes with every one of these labels
        self.parallelism = parallelism
        self.tasks: list[dict] = []
        self.job_id: str | None = None

    def add(
        self,
        command: str | None = None,
        *,
        python: str | None = None,
        service: bool = False,
        **fields,
    ) -> RemoteEnvironment:
        """Add a task (shell `command` or `python` source) with its own image and limits."""
        task = {"command": command, "python": python, "service": service, **fields}
        self.tasks.append({k: v for k, v in task.items() if v is not None})
        return self

    def submit(self, tasks: list[dict] | None = None, autostop: bool = False) -> dict:
        """Start the job; with autostop, block until it ends, then it is cleaned up."""
        body = {
            "name": self.name,
            "tasks": tasks or self.tasks,
            "autostop": autostop,
            "parallelism": self.parallelism,
        }
        if self.image:
            body["image"] = self.image
        if self.nodes:
            body["nodes"] = self.nodes
        if self.on:
            body["on"] = self.on
        job = self.client.submit_job(**body)
        self.job_id = job["job_id"]
        if not autostop:
            return job
        return self.wait()

    def wait(self) -> dict:
        """Block until the job ends (Ctrl+C stops waiting, not the job)."""
        from jupyter_remote.kernel.widgets import JobWidget, wait_with_progress

        widget = None
        if _in_kernel():
            from IPython.display import display

            widget = JobWidget(self.client, self.job_id)
            display(widget)
            widget.start()
        return wait_with_progress(self.client, self.job_id, widget, sys.stderr)

    def status(self) -> dict:
        return self.client.job(self.job_id)

    def stop(self) -> dict:
        return self.client.stop_job(self.job_id)

    def delete(self) -> dict:
        """Delete the finished job with its logs and saved outputs (409 while it runs)."""
        return self.client.delete_job(self.job_id)

    def get_output(
        self, task: int, path: str | None = None, local: str = ".", progress: bool | None = None
    ) -> list[str]:
        """A task's saved output (a path it named in `outputs`), kept after autostop."""
        return self.client.get_output(self.job_id, task, path, local, progress)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None
