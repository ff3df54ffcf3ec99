"""A short tour of a running agent: a session kept between commands, a fresh container,
Python source, a failing command, and a detached job. Prints what ran where."""

from __future__ import annotations

import sys
import time
import uuid

from jupyter_remote.agent.client import AgentClient


def run(client: AgentClient, title: str, **body) -> None:
    print(f"\n--- {title}")
    for event in client.execute_stream(f"demo-{uuid.uuid4().hex[:8]}", **body):
        kind = event["event"]
        if kind == "started":
            where = f"session {event['session_id']}" if event["session_id"] else "a fresh container"
            print(
                f"[ran on node {event['node_id']}, in {where} "
                f"({event['container_id'][:12]}, image {event['image']})]"
            )
        elif kind in ("stdout", "stderr"):
            stream = sys.stdout if kind == "stdout" else sys.stderr
            stream.write(event["data"])
            stream.flush()
        elif kind == "exit":
            extra = f" - {event['message']}" if event.get("message") else ""
            print(
                f"[exit {event['returncode']}, {event['status']}, "
                f"{event['duration'] * 1000:.0f} ms{extra}]"
            )


def main(url: str) -> None:
    client = AgentClient(url)
    health = client.health()
    print(f"agent {url}: node {health['node_id']} is {health['status']} ({health['message']})")
    session = f"demo-{uuid.uuid4().hex[:6]}"
    client.create_session(
        session_id=session, image="jupyter-remote/python:local", memory="256m", idle_timeout=600
    )
    try:
        run(
            client,
            "a session container keeps files between commands",
            session_id=session,
            command="echo 'state kept' > /tmp/note; uname -a",
        )
        run(client, "... the next command sees them", session_id=session, command="cat /tmp/note")
        run(
            client,
            "Python source",
            session_id=session,
            python="import os, platform\nprint('python', platform.python_version(), os.getpid())",
        )
        run(
            client,
            "a fresh container, removed afterwards",
            image="jupyter-remote/busybox:local",
            command="echo hello from $(hostname)",
        )
        run(
            client,
            "a failing command is reported, not hidden",
            session_id=session,
            command="echo about to fail >&2; exit 3",
        )
        job = client.submit_job(
            name="demo-job",
            image="jupyter-remote/busybox:local",
            tasks=[{"command": "echo task one"}, {"command": "echo task two"}],
        )
        while client.job(job["job_id"])["status"] in ("pending", "running"):
            time.sleep(0.1)
        final = client.job(job["job_id"])
        print(
            f"\n--- detached job {final['job_id']}: {final['status']}, "
            f"{final['tasks_done']}/{final['tasks_total']} tasks"
        )
        for task in final["tasks"]:
            out = b"".join(client.job_logs(final["job_id"], task["index"])).decode().strip()
            print(f"  task {task['index']}: exit {task['returncode']}: {out}")
    finally:
        client.delete_session(session)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9527")
