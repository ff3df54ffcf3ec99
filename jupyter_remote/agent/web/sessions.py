"""Session endpoints: create, list, look at and delete a session container."""

from __future__ import annotations

from jupyter_remote.agent.quotas import ask_of
from jupyter_remote.agent.web.base import AgentHandler
from jupyter_remote.protocol.bodies import SessionBody


class SessionsHandler(AgentHandler):
    def get(self) -> None:
        sessions = self.agent.sessions.sessions.values()
        self.send({"sessions": [s.to_json() for s in list(sessions) if self.visible(s.tenant)]})

    async def post(self) -> None:
        sid, spec, idle = self.agent.sessions.parse(self.body_as(SessionBody))
        ask = ask_of(spec, sessions=1)
        with (
            self.new_id("session", sid),
            self.agent.quotas.reserve(self.tenant, ("session", sid), ask, "session"),
        ):
            session = await self.agent.blocking(
                self.agent.sessions.create, sid, spec, idle, self.tenant
            )
        self.send(session.to_json(), 201)


class SessionHandler(AgentHandler):
    def get(self, sid: str) -> None:
        self.send(self.own("session", sid).to_json())

    async def delete(self, sid: str) -> None:
        self.own("session", sid)
        self.send(await self.agent.blocking(self.agent.sessions.delete, sid))
