"""The server's agent client on the event loop (jupyter_remote_server.agents), against a real
HTTP server on loopback that answers as told: whole, refused, stalled or cut."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest
import trustme

from jupyter_remote.protocol.errors import Conflict, ConnectionFailed, TimedOut
from jupyter_remote_server.agents.client import NodeClient


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


OK_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


class Agent:
    """Answers each request on a connection with the next of `answers` (bytes, or None to
    stall); counts connections and keeps the requests it read."""

    def __init__(self, answers: list) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if answer is None:
                    await asyncio.sleep(30)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def with_agent(answers, scenario):
    agent = Agent(answers)
    server = await asyncio.start_server(agent.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = NodeClient(f"http://127.0.0.1:{port}", "tok")
    try:
        return agent, await scenario(client)
    finally:
        server.close()
        await client.close()


async def read_all(stream) -> bytes:
    return b"".join([chunk async for chunk in stream])


def test_a_whole_answer_is_read_and_its_connection_reused():
    lines = b'{"event":"started"}\n', b'{"event":"exit","returncode":0}\n'

    async def scenario(client):
        got = []
        for n in range(2):
            stream = await client.open_execution(f"x-{n}", {"command": "true"}, "node 'a'")
            got.append(await read_all(stream))
            stream.close()
        return got

    agent, got = asyncio.run(with_agent([OK_HEAD + chunked(*lines)] * 2, scenario))
    assert got == [b"".join(lines)] * 2
    assert agent.connections == 1  # kept alive between the two
    body = json.loads(agent.requests[1].split(b"\r\n\r\n", 1)[1])
    assert body == {"execution_id": "x-1", "command": "true"}
    assert b"authorization: bearer tok" in agent.requests[0].lower()


def test_a_refusal_is_the_agents_error():
    error = json.dumps({"message": "seen before", "reason": "duplicate_execution"}).encode()
    answer = b"HTTP/1.1 409 Conflict\r\nContent-Length: %d\r\n\r\n%s" % (len(error), error)

    async def scenario(client):
        with pytest.raises(Conflict) as err:
            await client.open_execution("x", {"command": "true"}, "node 'a'")
        return err.value

    _, err = asyncio.run(with_agent([answer], scenario))
    assert err.reason == "duplicate_execution" and err.message == "seen before"


def test_a_stream_cut_mid_chunk_is_broken_and_sent():
    answer = OK_HEAD + b"40\r\n" + b'{"event":"started"}'

    async def scenario(client):
        stream = await client.open_execution("x", {"command": "true"}, "node 'a'")
        with pytest.raises(ConnectionFailed) as err:
            await read_all(stream)
        return err.value

    agent = Agent([answer])  # answers, then closes
    _, err = asyncio.run(with_agent(agent.answers, scenario))
    assert err.reason == "stream_broken" and err.details["sent"] is True
    assert "the stream of node 'a' broke" in err.message


def test_a_silent_agent_times_out_and_a_refused_connection_was_not_sent():
    async def stalled(client):
        with pytest.raises(TimedOut) as err:  # the request's own bound is 30 minutes
            await client.open("POST", "/v1/executions", json={"command": "true"}, timeout=0.2)
        return err.value

    _, err = asyncio.run(with_agent([None], stalled))
    assert err.details["sent"] is True

    async def refused():
        client = NodeClient("http://127.0.0.1:9", None)  # discard port: nothing listens
        try:
            with pytest.raises(ConnectionFailed) as err:
                await client.open_execution("x", {"command": "true"}, "node 'a'")
        finally:
            await client.close()
        return err.value

    err = asyncio.run(refused())
    assert err.details["sent"] is False and "connection refused" in err.message


class Hangup:
    """Reads each request's head, then either answers a health check or hangs up on it;
    counts the requests that reached it."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def serve(self, reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                if not head.startswith(b"GET /v1/health"):
                    break  # no answer: the connection drops under the request
                body = b'{"healthy": true}'
                writer.write(OK_HEAD + chunked(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def test_a_dropped_connection_is_never_re_sent_even_for_an_idempotent_call():
    async def main():
        agent = Hangup()
        server = await asyncio.start_server(agent.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = NodeClient(f"http://127.0.0.1:{port}", None)
        try:
            with pytest.raises(ConnectionFailed) as err:
                await client.job("j-1")  # a GET: aiohttp would re-send it once by itself
            return agent, err.value
        finally:
            server.close()
            await client.close()

    agent, err = asyncio.run(main())
    assert len(agent.requests) == 1 and err.details["sent"] is True


def test_liveness_calls_never_wait_behind_work_calls():
    """Every work connection held by a stalled call, a health check still answers at once."""

    async def main():
        agent = Hangup()
        stalled: list = []

        async def serve(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /v1/health"):
                agent.requests.append(head)
                writer.write(OK_HEAD + chunked(b'{"healthy": true}'))
                await writer.drain()
                await agent.serve(reader, writer)
                return
            stalled.append(head)
            await asyncio.sleep(30)  # a work call the agent never answers

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = NodeClient(f"http://127.0.0.1:{port}", None, pool_maxsize=4)  # 2 for work
        try:
            work = [asyncio.ensure_future(client.job(f"j-{n}")) for n in range(4)]
            await asyncio.sleep(0.2)
            assert len(stalled) == 2  # the work connections are all taken; two calls wait
            health = await asyncio.wait_for(client.health(5), 2)
            for call in work:
                call.cancel()
            return health
        finally:
            server.close()
            await client.close()

    assert asyncio.run(main()) == {"healthy": True}


def serve_health(requests: list[bytes]):
    async def serve(reader, writer) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                requests.append(head)
                writer.write(OK_HEAD + chunked(b'{"healthy": true}'))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return serve


def test_https_with_a_self_signed_certificate_from_the_ca_bundle(tmp_path, monkeypatch):
    ca = trustme.CA()  # a test dependency: never skipped for a missing tool
    cert = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cert))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)

    async def main(bundle: str | None):
        if bundle:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
        else:
            monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
            monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        seen: list[bytes] = []
        server = await asyncio.start_server(serve_health(seen), "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        client = NodeClient(f"https://127.0.0.1:{port}", "tok")
        try:
            return [await client.health(5) for _ in range(3)], seen
        finally:
            server.close()
            await client.close()

    answers, seen = asyncio.run(main(str(cert)))
    assert answers == [{"healthy": True}] * 3 and len(seen) == 3
    with pytest.raises(ConnectionFailed) as err:  # an unknown certificate is refused
        asyncio.run(main(None))
    assert err.value.details["sent"] is False


def test_an_environment_proxy_is_used_read_once_per_node(monkeypatch):
    async def main():
        seen: list[bytes] = []
        proxy = await asyncio.start_server(serve_health(seen), "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = NodeClient("http://agent.invalid:9527", None)  # only the proxy knows it
        for name in ("HTTP_PROXY", "http_proxy"):  # read once, when the client was made
            monkeypatch.delenv(name)
        try:
            return await client.health(5), seen
        finally:
            proxy.close()
            await client.close()

    answer, seen = asyncio.run(main())
    assert answer == {"healthy": True}
    assert seen[0].startswith(b"GET http://agent.invalid:9527/v1/health HTTP/1.1")
