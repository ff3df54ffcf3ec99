"""Session endpoints: create, list, look at and delete a session container."""

from __future__ import annotations

from jupyter_remote.agent.web.base import AgentHandler
from jupyter_remote.protocol.bodies import SessionBody


class SessionsHandler(AgentHandler):
    def get(self) -> None:
        self.send({"sessions": self.agent.sessions.list()})

    async def post(self) -> None:
        sid, spec, idle = self.agent.sessions.parse(self.body_as(SessionBody))
        session = await self.agent.blocking(self.agent.sessions.create, sid, spec, idle)
        self.send(session.to_json(), 201)


class SessionHandler(AgentHandler):
    def get(self, sid: str) -> None:
        self.send(self.agent.sessions.get(sid).to_json())

    async def delete(self, sid: str) -> None:
        self.agent.sessions.get(sid)
        self.send(await self.agent.blocking(self.agent.sessions.delete, sid))
