"""The server's agent client on the event loop (jupyter_remote_server.agents), against a real
HTTP server on loopback that answers as told: whole, refused, stalled or cut."""

from __future__ import annotations

import asyncio
import json

import pytest

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
