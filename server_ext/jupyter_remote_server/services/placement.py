"""Where an execution runs: its owner's session (made on first use), a fresh container, or
the session it names; a session its node removed is replaced, once, with a notice."""

from __future__ import annotations

from jupyter_remote.protocol.errors import RemoteError
from jupyter_remote_server.nodes.registry import Node

SERVER_FIELDS = (
    "execution_id",
    "kernel_id",
    "owner",
    "node",
    "fresh",
    "session_id",
    "cell_id",
    "on",
)
SESSION_GONE = ("session_not_found", "session_expired")

Placed = tuple[Node, dict, list[str]]  # the node, the agent's body, notices for the user


class ExecutionPlacement:
    """Placing executions (a part of ExecutionService, which sets `registry`, `pool`,
    `kernels` and `default_image`)."""

    def place_known(self, req: dict) -> Placed | None:
        """With no I/O and no wait: the owner's session when it is known and its node
        answers (most cells), else None and then place() decides."""
        body = req["body"]
        if body.get("session_id") or not req["owner"] or body.get("fresh"):
            return None
        image = body.get("image") or self.default_image
        session = self.kernels.sessions.get(self.kernels.key(req["owner"], image))
        if session is not None and not req["caller"].sees(session):
            return None  # another user's: place() refuses it
        node = session and self.registry.nodes.get(session["node_id"])
        if not node or not node.answering or req["node"] not in (None, node.node_id):
            return None
        if not node.has_labels(body.get("on")):
            return None  # place() refuses it
        return node, self._agent_body(body, session["session_id"]), self._notices(session, body)

    async def place(self, req: dict) -> Placed:
        """Choose the node and the container; may create the owner's session. Every refusal
        (404, 409, 503) is made here."""
        body = req["body"]
        image = body.get("image") or self.default_image
        on = body.get("on")
        if body.get("session_id"):
            node = self.pool.pick(req["node"], on=on)
            return node, self._agent_body(body, body["session_id"]), []
        if req["owner"] and not body.get("fresh"):
            kind = "kernel" if req["kernel_id"] else "client"
            session = await self.kernels.ensure(
                req["owner"], image, req["node"], body, kind=kind, caller=req["caller"]
            )
            node = self.registry.get(session["node_id"])
            return node, self._agent_body(body, session["session_id"]), self._notices(session, body)
        agent_body = self._agent_body(body, None)
        agent_body["image"] = image
        if on and not req["node"]:  # a named node without the labels is pick()'s 409
            self.pool.refuse_missing_image(image, None, on)
        return self.pool.pick(req["node"], image, on=on, gpus=body.get("gpus")), agent_body, []

    @staticmethod
    def _agent_body(body: dict, session_id: str | None) -> dict:
        agent_body = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
        if session_id:
            agent_body["session_id"] = session_id
        return agent_body

    def _notices(self, session: dict, body: dict) -> list[str]:
        return self.kernels.unmet_limits(session, body)

    @staticmethod
    def _session_gone(req: dict, exc: RemoteError) -> bool:
        """The node no longer has the kernel's session (its idle timeout removed it)."""
        body = req["body"]
        return (
            exc.status == 404
            and exc.reason in SESSION_GONE
            and bool(req["owner"])
            and not body.get("session_id")
            and not body.get("fresh")
        )

    async def replace_session(self, req: dict, gone: RemoteError) -> Placed:
        """The kernel's session was removed on its node (idle): make a new one.

        Nothing ran (the node refused the request), so this is not a re-send.
        """
        body = req["body"]
        image = body.get("image") or self.default_image
        old = self.kernels.forget(req["owner"], image)
        node, agent_body, notices = await self.place(req)
        where = f" on node {old['node_id']!r}" if old else ""
        notices.insert(
            0,
            f"this {_whose(req)} {image} session{where} is gone ({gone.message}); a new one was "
            f"made on node {node.node_id!r}: the old one's files and state are not in it.",
        )
        return node, agent_body, notices


def _whose(req: dict) -> str:
    return "kernel's" if req["kernel_id"] else f"owner {req['owner']!r}'s"
