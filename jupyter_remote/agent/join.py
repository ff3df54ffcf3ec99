"""Joining a Jupyter server's pool by ourselves: `jupyter-remote agent --join SERVER_URL`."""

from __future__ import annotations

import asyncio
import logging
import socket

import requests

log = logging.getLogger("jupyter_remote.agent")

REJOIN_EVERY = 60.0  # a restarted server learns of us again within a minute
RETRY_EVERY = 5.0


def advertised_url(host: str, port: int) -> str:
    """How the server should reach us: a wildcard bind is advertised by host name."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://{host}:{port}"


def join_once(server_url: str, join_token: str, url: str, token: str | None) -> str:
    """Register with the server (an idempotent registration, not a command)."""
    resp = requests.post(
        f"{server_url.rstrip('/')}/remote/api/nodes/join",
        json={"url": url, "token": token or None},
        timeout=30,
        headers={"Authorization": f"Bearer {join_token}"},
    )
    if resp.status_code >= 400:
        try:
            message = resp.json().get("message")
        except ValueError:
            message = resp.text[:200]
        raise RuntimeError(f"{server_url} refused the join ({resp.status_code}): {message}")
    return resp.json()["state"]


async def keep_joined(server_url: str, join_token: str, url: str, token: str | None) -> None:
    """Join now, then again every minute; on failure, say why and try again in 5 s."""
    loop = asyncio.get_running_loop()
    joined = False
    while True:
        try:
            state = await loop.run_in_executor(None, join_once, server_url, join_token, url, token)
            if not joined:
                log.info("joined %s as %s (state %s)", server_url, url, state)
            joined = True
            await asyncio.sleep(REJOIN_EVERY)
        except (requests.RequestException, RuntimeError, ValueError) as exc:
            log.warning("could not join %s: %s; trying again in %g s", server_url, exc, RETRY_EVERY)
            joined = False
            await asyncio.sleep(RETRY_EVERY)
