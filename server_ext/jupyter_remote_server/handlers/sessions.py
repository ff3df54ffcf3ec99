"""Session containers: a kernel's, an API client's, and the Lab panel's view of them all."""

from __future__ import annotations

import uuid

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_remote.protocol.server_bodies import SessionCreateBody
from jupyter_remote_server.handlers.base import RemoteHandler
from jupyter_remote_server.services import sessions_view


class KernelSessionsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        self.send(
            {
                "sessions": self.manager.kernels.for_kernel(kernel_id, self.caller),
                "known_kernel": self.manager.known_kernel(kernel_id),
            }
        )

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str) -> None:
        self.send({"removed": await self.manager.kernel_gone(kernel_id, self.caller)})


class SessionsHandler(RemoteHandler):
    """Sessions for API clients (RemoteDockerEnvironment): one per owner and image."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body, data = self.body(SessionCreateBody)
        owner = body.owner or f"c-{uuid.uuid4().hex[:12]}"
        image = body.image or self.manager.executions.default_image
        kernels = self.manager.kernels
        record = await kernels.ensure(
            owner, image, body.node, data, kind="client", caller=self.caller
        )
        self.send(record, 201)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        manager, caller = self.manager, self.caller
        jupyter_sessions = self.settings.get("session_manager")

        async def build():
            notebooks = await sessions_view.notebooks_by_kernel(jupyter_sessions)
            return await sessions_view.sessions_model(manager, notebooks, caller)

        key = ("sessions", caller.user, caller.operator, manager.kernels.version)
        self.send_encoded(await manager.shared.encoded(key, build))


class SessionOwnerHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def delete(self, owner: str) -> None:
        image = self.get_query_argument("image", None)
        if image:  # one session (the panel's Remove), not all of the owner's
            one = await sessions_view.remove_one(self.manager, owner, image, self.caller)
            self.send({"removed": [one]})
            return
        self.send({"removed": await self.manager.kernel_gone(owner, self.caller)})
