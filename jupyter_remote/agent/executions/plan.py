"""From a typed request to an Execution: which container, which path (runner or exec),
its time limit; checked here, nothing created or run."""

from __future__ import annotations

from jupyter_remote.agent.executions.record import Execution
from jupyter_remote.agent.specs import command_of, container_spec
from jupyter_remote.protocol.bodies import ExecutionBody
from jupyter_remote.protocol.errors import Conflict


def check_session_gpus(sessions, session_id: str, want: int | list[int] | None) -> None:
    """A session's GPUs are given when it is made: a cell asking for others is refused
    (409 `gpus_mismatch`), never run without them."""
    if want is None:
        return
    sessions.gpus.check(want)  # more than the node has: 400, as for a new container
    held = sessions.gpus.held(sessions.holder(session_id))
    if (len(held) == want) if isinstance(want, int) else (sorted(want) == list(held)):
        return
    asked = f"{want}" if isinstance(want, int) else ",".join(map(str, want))
    raise Conflict(
        f"session {session_id!r} holds GPUs {','.join(map(str, held)) or 'none'}; GPUs are "
        f"given when a session is made, so gpus {asked} cannot apply to it: delete the "
        "session and make it again with these gpus, or run the cell in a fresh container",
        reason="gpus_mismatch",
        gpus=list(held),
    )


def plan(mgr, body: ExecutionBody) -> Execution:
    """`mgr` gives node_id, sessions, limits, default_image and default_timeout."""
    argv, stdin = command_of(body)
    runner_kind = None
    if body.command is not None:
        runner_kind = "shell"
    elif body.python is not None and body.interpreter in (None, "python3"):
        runner_kind = "python"  # another interpreter named: a docker exec of it
    code = (body.command if runner_kind == "shell" else body.python) if runner_kind else None
    timeout = body.timeout if body.timeout is not None else mgr.default_timeout
    common = dict(
        timeout=timeout,
        env=dict(body.env or {}),
        workdir=body.workdir,
        execution_count=body.execution_count,
    )
    if body.session_id is not None:
        session = mgr.sessions.get(body.session_id)
        check_session_gpus(mgr.sessions, body.session_id, body.gpus)
        # the runner takes the cell's text itself; the exec path feeds it on stdin
        how = (
            dict(path="runner", runner_kind=runner_kind, code=code, runner_dir=session.runner_dir)
            if runner_kind and session.path == "runner"
            else dict(stdin=stdin)
        )
        return Execution(
            body.execution_id,
            mgr.node_id,
            argv,
            "session",
            session.spec.image,
            session_id=body.session_id,
            container_id=session.container_id,
            input_bytes=len(stdin or b""),
            **common,
            **how,
        )
    spec = container_spec(body, mgr.limits, mgr.default_image)
    return Execution(
        body.execution_id,
        mgr.node_id,
        argv,
        "fresh",
        spec.image,
        spec=spec,
        stdin=stdin,
        input_bytes=len(stdin or b""),
        runner_kind=runner_kind,
        code=code,
        **common,
    )
