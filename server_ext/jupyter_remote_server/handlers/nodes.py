"""The pool's nodes: list, add, look at and remove them; agents joining by themselves."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_remote.http.handler import bearer, token_matches
from jupyter_remote.protocol.errors import BadRequest, Unauthorized
from jupyter_remote.protocol.server_bodies import JoinBody, NodeAddBody
from jupyter_remote_server.handlers.base import RemoteHandler
from jupyter_remote_server.services.users import node_view


class NodesHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        manager, caller = self.manager, self.caller

        async def build():
            return {"nodes": [node_view(manager, caller, n) for n in manager.registry.list()]}

        key = ("nodes", caller.user, caller.operator, manager.registry.version)
        self.send_encoded(await manager.shared.encoded(key, build))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body, _ = self.body(NodeAddBody)
        token = read_token_file(body.token_file) if body.token_file else body.token
        node, new = await self.manager.add_node(body.url, token, "api")
        self.send(node, 201 if new else 200)


class NodeHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, node_id: str) -> None:
        node = self.manager.registry.get(node_id).to_json()
        self.send(node_view(self.manager, self.caller, node))

    @web.authenticated
    @authorized
    async def delete(self, node_id: str) -> None:
        self.send(self.manager.remove_node(node_id))


class JoinHandler(RemoteHandler):
    """Agents join by themselves with the join token (they hold no Jupyter credentials)."""

    def check_xsrf_cookie(self) -> None:
        """Authenticated by a header token, never by a cookie: CSRF cannot reach it."""

    def check_join_token(self) -> None:
        expected = self.settings["jupyter_remote_join_token"]
        _, given = bearer(self.request.headers.get("Authorization", ""))
        if not expected or not token_matches(given, expected):
            raise Unauthorized(
                "joining needs the server's join token (c.RemoteApp.join_token)",
                reason="bad_join_token",
            )

    async def get(self) -> None:
        """An agent checks its token before it starts, so a wrong one fails at once."""
        self.check_join_token()
        # the tenant the joining agent mints this server's credential for
        self.send({"join_token": "accepted", "tenant": self.manager.tenant_name})

    async def post(self) -> None:
        self.check_join_token()
        body, _ = self.body(JoinBody)
        node, new = await self.manager.join_node(body.url, body.token, body.instance)
        self.send({"node_id": node["node_id"], "state": node["state"]}, 201 if new else 200)


def read_token_file(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.readline().strip()
    except OSError as exc:
        raise BadRequest(
            f"cannot read token_file: {exc.strerror}", reason="bad_token_file"
        ) from None
