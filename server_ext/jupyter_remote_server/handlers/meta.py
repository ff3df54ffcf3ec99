"""What the server says about itself: counts, engine states, and its OpenAPI document."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_remote.protocol.server_openapi import openapi
from jupyter_remote_server.handlers.base import RemoteHandler


class StatusHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send(self.manager.status())


class EngineStatesHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send(self.manager.engine_states())


class OpenAPIHandler(RemoteHandler):
    """The OpenAPI 3.1 document of this API, behind the same auth as the API itself."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send(openapi())
