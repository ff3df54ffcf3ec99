"""The node's own endpoints: who it is, its health, its resources, the API's document, and
who the caller is (whoami)."""

from __future__ import annotations

from jupyter_remote.agent.tenants import resources_for
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
        self.send(resources_for(self.agent, self.tenant, self.agent.resources()))


class WhoAmIHandler(AgentHandler):
    """The caller: its tenant (null for the operator), its quota and what it holds now."""

    def get(self) -> None:
        self.send(
            {
                "node_id": self.agent.node_id,
                "tenant": self.tenant,
                "operator": self.tenant is None,
                "quota": self.agent.credentials.quota(self.tenant),
                "use": self.agent.quotas.use(self.tenant).to_json(),
            }
        )


class OpenApiHandler(AgentHandler):
    """The API's OpenAPI 3.1 document, generated from the protocol's models."""

    def get(self) -> None:
        self.send(agent_openapi())
