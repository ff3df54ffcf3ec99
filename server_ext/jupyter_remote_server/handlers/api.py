"""Thin handlers for /remote/api: parse, call the RemoteManager, write its JSON models."""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from jupyter_remote.protocol.errors import BadRequest, PayloadTooLarge, RemoteError, Unauthorized
from jupyter_remote.protocol.queries import ExecutionPageQuery, PageQuery, page_query
from jupyter_remote.protocol.server_bodies import (
    CancelBody,
    JoinBody,
    NodeAddBody,
    ServerExecutionBody,
    ServerJobBody,
    SessionCreateBody,
)
from jupyter_remote.protocol.server_openapi import openapi
from jupyter_remote.protocol.validation import load_object, parse_body
from jupyter_remote.http.relay import BodyWriter, ClientGone, as_ndjson, relay, wants_records
from jupyter_remote.protocol.records import RECORDS_TYPE
from jupyter_remote_server.services import sessions_view
from jupyter_remote_server.services.manager import RemoteManager

NDJSON = "application/x-ndjson"


class RemoteHandler(APIHandler):
    """JSON in and out; RemoteError becomes a 4xx/5xx with {"message", "reason"}."""

    auth_resource = "remote"

    @property
    def manager(self) -> RemoteManager:
        return self.settings["jupyter_remote_manager"]

    def body(self, model, limit: str = "max_job_body"):
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

    def send(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def int_arg(self, name: str, default: int = 0) -> int:
        raw = self.get_query_argument(name, str(default))
        if not raw.isdigit():
            raise BadRequest(f"{name} must be an integer >= 0; got {raw!r}", reason=f"bad_{name}")
        return int(raw)

    def flag(self, name: str) -> bool:
        return self.get_query_argument(name, "0").lower() in ("1", "true", "yes")

    async def stream_events(self, chunks) -> None:
        """An execution's event records; NDJSON unless the client asked for records."""
        if wants_records(self.request.headers.get("Accept")):
            await self.stream(chunks, RECORDS_TYPE)
        else:
            await self.stream(as_ndjson(chunks))

    async def stream(self, chunks, content_type: str = NDJSON) -> None:
        """Relay chunks; the first one is awaited before headers so errors stay JSON."""
        it = aiter(chunks)
        try:
            first = await anext(it)
        except StopAsyncIteration:
            first = b""
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self._gone = asyncio.Event()

        async def rest():
            try:
                yield first
                async for chunk in it:
                    yield chunk
            finally:  # a caller that left must reach the source's clean-up (cancel)
                await it.aclose()

        try:
            body = BodyWriter(self)
            await relay(rest(), body.write, body.flush, self._gone)
            self.finish()
        except (StreamClosedError, ClientGone):
            self.log.info("jupyter-remote: client left %s", self.request.path)

    def on_connection_close(self) -> None:
        if getattr(self, "_gone", None) is not None:
            self._gone.set()

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, RemoteError):
            if self._headers_written:
                self.finish()
                return
            self.clear()
            self.set_status(e.status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(e.to_json()))
            return
        super()._handle_request_exception(e)


class NodesHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send({"nodes": self.manager.registry.list()})

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
        self.send(self.manager.registry.get(node_id).to_json())

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
        given = self.request.headers.get("Authorization", "").partition(" ")[2].strip()
        # bytes: a header may hold any character, and compare_digest refuses non-ASCII str
        if not expected or not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), expected.encode()
        ):
            raise Unauthorized(
                "joining needs the server's join token (c.RemoteApp.join_token)",
                reason="bad_join_token",
            )

    async def get(self) -> None:
        """An agent checks its token before it starts, so a wrong one fails at once."""
        self.check_join_token()
        self.send({"join_token": "accepted"})

    async def post(self) -> None:
        self.check_join_token()
        body, _ = self.body(JoinBody)
        node, new = await self.manager.join_node(body.url, body.token, body.instance)
        self.send({"node_id": node["node_id"], "state": node["state"]}, 201 if new else 200)


class ExecutionsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        query = page_query(ExecutionPageQuery, self.request.query_arguments)
        got = self.manager.executions.list(query)
        self.send({"executions": got["items"], "next": got["next"]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        _, data = self.body(ServerExecutionBody, "max_execution_body")
        await self.stream_events(self.manager.executions.run(data))


class ExecutionHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        self.send(self.manager.executions.get(execution_id))


class ExecutionEventsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        events = self.manager.executions.events(
            execution_id, self.int_arg("offset"), self.flag("follow")
        )
        await self.stream_events(events)


class ExecutionCancelHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def post(self, execution_id: str) -> None:
        body, _ = self.body(CancelBody)
        self.send(await self.manager.executions.cancel(execution_id, body.signal))


class KernelSessionsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        self.send(
            {
                "sessions": self.manager.kernels.for_kernel(kernel_id),
                "known_kernel": self.manager.known_kernel(kernel_id),
            }
        )

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str) -> None:
        self.send({"removed": await self.manager.kernel_gone(kernel_id)})


class SessionsHandler(RemoteHandler):
    """Sessions for API clients (RemoteDockerEnvironment): one per owner and image."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body, data = self.body(SessionCreateBody)
        owner = body.owner or f"c-{uuid.uuid4().hex[:12]}"
        image = body.image or self.manager.executions.default_image
        kernels = self.manager.kernels
        record = await self.manager.blocking(
            lambda: kernels.ensure(owner, image, body.node, data, kind="client")
        )
        self.send(record, 201)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        notebooks = await sessions_view.notebooks_by_kernel(self.settings.get("session_manager"))
        self.send(await sessions_view.sessions_model(self.manager, notebooks))


class SessionOwnerHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def delete(self, owner: str) -> None:
        image = self.get_query_argument("image", None)
        if image:  # one session (the panel's Remove), not all of the owner's
            one = await self.manager.blocking(sessions_view.remove_one, self.manager, owner, image)
            self.send({"removed": [one]})
            return
        self.send({"removed": await self.manager.kernel_gone(owner)})


class JobsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        got = self.manager.jobs.list(page_query(PageQuery, self.request.query_arguments))
        self.send({"jobs": got["items"], "next": got["next"]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body, data = self.body(ServerJobBody, "max_job_body")
        jobs = self.manager.jobs
        self.send(await jobs.submit(jobs.parse(body, data)), 201)


class JobHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.send(self.manager.jobs.get(job_id))

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        self.send(await self.manager.jobs.delete(job_id, force=self.flag("force")))


class JobWaitHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        timeout = min(self.int_arg("timeout", 30), 300)
        self.send(await self.manager.jobs.wait(job_id, timeout))


class JobStopHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        self.send(await self.manager.jobs.stop(job_id))


class JobLogsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        logs = self.manager.jobs.logs(
            job_id, self.int_arg("task"), self.int_arg("offset"), self.flag("follow")
        )
        await self.stream(logs, "text/plain; charset=utf-8")


class EngineStatesHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send(self.manager.engine_states())


class StatusHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send(self.manager.status())


class OpenAPIHandler(RemoteHandler):
    """The OpenAPI 3.1 document of this API, behind the same auth as the API itself."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.send(openapi())


def read_token_file(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.readline().strip()
    except OSError as exc:
        raise BadRequest(
            f"cannot read token_file: {exc.strerror}", reason="bad_token_file"
        ) from None


def handlers() -> list[tuple]:
    from jupyter_remote_server.handlers.transfers import ROUTES as TRANSFER_ROUTES

    ident = r"([^/]+)"
    routes = [
        ("openapi.json", OpenAPIHandler),
        ("status", StatusHandler),
        ("engine-states", EngineStatesHandler),
        ("nodes", NodesHandler),
        ("nodes/join", JoinHandler),
        (f"nodes/{ident}", NodeHandler),
        ("executions", ExecutionsHandler),
        (f"executions/{ident}", ExecutionHandler),
        (f"executions/{ident}/events", ExecutionEventsHandler),
        (f"executions/{ident}/cancel", ExecutionCancelHandler),
        (f"kernels/{ident}/sessions", KernelSessionsHandler),
        ("sessions", SessionsHandler),
        (f"sessions/{ident}", SessionOwnerHandler),
        ("jobs", JobsHandler),
        (f"jobs/{ident}", JobHandler),
        (f"jobs/{ident}/wait", JobWaitHandler),
        (f"jobs/{ident}/stop", JobStopHandler),
        (f"jobs/{ident}/logs", JobLogsHandler),
        *TRANSFER_ROUTES,
    ]
    return [(url_path_join("/remote/api", path), h) for path, h in routes]
