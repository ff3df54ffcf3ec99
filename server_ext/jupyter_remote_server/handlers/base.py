"""The base of every /remote/api handler: the shared JSON contract on Jupyter's APIHandler."""

from __future__ import annotations

from typing import TypeVar

from jupyter_server.base.handlers import APIHandler
from pydantic import BaseModel

from jupyter_remote.http.handler import JsonApiMixin
from jupyter_remote.protocol.errors import PayloadTooLarge
from jupyter_remote.protocol.validation import load_object, parse_body
from jupyter_remote_server.services.manager import RemoteManager
from jupyter_remote_server.services.users import Caller

M = TypeVar("M", bound=BaseModel)


class RemoteHandler(JsonApiMixin, APIHandler):
    """JSON in and out (send, flag, int_arg, stream); a RemoteError answers its status and
    {"message", "reason"}; Jupyter's auth and the "remote" resource for authorization."""

    auth_resource = "remote"

    @property
    def manager(self) -> RemoteManager:
        return self.settings["jupyter_remote_manager"]

    @property
    def caller(self) -> Caller:
        """The Jupyter user of this request, and whether they are an operator."""
        return self.manager.users.caller(self.current_user)

    def own(self, kind: str, key: str) -> None:
        """Every route naming an execution or job by id asks this first: another user's
        gets the very 404 of an unknown id."""
        self.manager.users.check(self.manager, self.caller, kind, key)

    def body(self, model: type[M], limit: str = "max_job_body") -> tuple[M, dict]:
        """The typed body and its JSON (None fields dropped), checked before anything happens.

        Refused here: a body over the limit (413), JSON that is not one bounded object of
        finite numbers, and any field breaking its model's rule (400 bad_FIELD).
        """
        size, most = len(self.request.body), self.settings[f"jupyter_remote_{limit}"]
        if size > most:
            raise PayloadTooLarge(
                f"request body is {size} bytes; this server takes at most {most} "
                f"(c.RemoteApp.{limit})",
                reason="body_too_large",
            )
        data = load_object(self.request.body)
        parsed = parse_body(model, data)
        return parsed, {k: v for k, v in data.items() if v is not None}
