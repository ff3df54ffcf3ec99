"""The agent's one route table: every endpoint of docs/agent-api.md and its handler."""

from __future__ import annotations

from tornado import web

from jupyter_remote.agent.core import Agent
from jupyter_remote.agent.web.base import AgentHandler, BodyLimits
from jupyter_remote.agent.web.executions import (
    ExecuteHandler,
    ExecutionCancelHandler,
    ExecutionEventsHandler,
    ExecutionHandler,
    ExecutionsHandler,
)
from jupyter_remote.agent.web.jobs import JobHandler, JobLogsHandler, JobsHandler, JobStopHandler
from jupyter_remote.agent.web.node import (
    HealthHandler,
    InfoHandler,
    OpenApiHandler,
    ResourcesHandler,
    WhoAmIHandler,
)
from jupyter_remote.agent.web.sessions import SessionHandler, SessionsHandler
from jupyter_remote.agent.web.transfers import FilesHandler, JobOutputsHandler
from jupyter_remote.protocol.errors import NotFound

ID = r"([^/]+)"
ROUTES = [
    (r"/v1/?", InfoHandler),
    (r"/v1/health", HealthHandler),
    (r"/v1/resources", ResourcesHandler),
    (r"/v1/openapi.json", OpenApiHandler),
    (r"/v1/whoami", WhoAmIHandler),
    (r"/v1/sessions", SessionsHandler),
    (rf"/v1/sessions/{ID}", SessionHandler),
    (rf"/v1/sessions/{ID}/files", FilesHandler),
    (r"/v1/executions", ExecutionsHandler),
    (rf"/v1/executions/{ID}", ExecutionHandler),
    (rf"/v1/executions/{ID}/events", ExecutionEventsHandler),
    (rf"/v1/executions/{ID}/cancel", ExecutionCancelHandler),
    (r"/v1/jobs", JobsHandler),
    (rf"/v1/jobs/{ID}", JobHandler),
    (rf"/v1/jobs/{ID}/logs", JobLogsHandler),
    (rf"/v1/jobs/{ID}/stop", JobStopHandler),
    (rf"/v1/jobs/{ID}/outputs", JobOutputsHandler),
    (r"/execute", ExecuteHandler),
]


class NotFoundHandler(AgentHandler):
    def prepare(self) -> None:
        super().prepare()
        raise NotFound(
            f"no such endpoint: {self.request.method} {self.request.path} (see docs/agent-api.md)",
            reason="no_endpoint",
        )


def make_app(agent: Agent, limits: BodyLimits) -> web.Application:
    """The tornado application serving one agent (its credentials are agent.credentials)."""
    kw = {"agent": agent, "limits": limits}
    return web.Application(
        [(pattern, handler, kw) for pattern, handler in ROUTES],
        default_handler_class=NotFoundHandler,
        default_handler_args=kw,
    )
