"""The node's own endpoints: who it is, its health, its resources, the API's document."""

from __future__ import annotations

from jupyter_remote.agent.web.base import AgentHandler
from jupyter_remote.protocol.agent_openapi import agent_openapi


class InfoHandler(AgentHandler):
    def get(self) -> None:
        self.send(self.agent.info())


class HealthHandler(AgentHandler):
    def get(self) -> None:
        self.send(self.agent.health())


class ResourcesHandler(AgentHandler):
    def get(self) -> None:
        self.send(self.agent.resources())


class OpenApiHandler(AgentHandler):
    """The API's OpenAPI 3.1 document, generated from the protocol's models."""

    def get(self) -> None:
        self.send(agent_openapi())
