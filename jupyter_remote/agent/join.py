"""Joining a Jupyter server's pool by ourselves: `jupyter-remote agent --join SERVER_URL`.

With a tenants file, the server gets a credential of its own: its join answer names its
tenant, we mint a token for that tenant (or reuse the one the file has), write it into
the file and send it as the node's token, so the operator token never leaves this host.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import Callable

import requests

from jupyter_remote.agent.tenants import write_tenant

log = logging.getLogger("jupyter_remote.agent")

REJOIN_EVERY = 60.0  # a restarted server learns of us again within a minute
REJOIN_ENV = "JUPYTER_REMOTE_AGENT_REJOIN_EVERY"  # seconds; tests make it short
RETRY_EVERY = 5.0
# Made at process start: a server that removed this agent refuses its re-joins until the
# agent restarts (a new instance), so a DELETE sticks.
INSTANCE = uuid.uuid4().hex


class JoinRefused(Exception):
    """The server answered no (a wrong token, no jupyter-remote there): asking again won't help."""


class Removed(JoinRefused):
    """The server's operator removed this agent from the pool: stay out until restarted."""


def advertised_url(host: str, port: int, scheme: str = "http") -> str:
    """How the server should reach us: a wildcard bind is advertised by host name."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"{scheme}://{host}:{port}"


def _endpoint(server_url: str) -> str:
    return f"{server_url.rstrip('/')}/remote/api/nodes/join"


def _refusal(server_url: str, resp: requests.Response) -> Exception:
    """What an error answer means for us: refused for good (4xx), or try again (5xx)."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    message = body.get("message")
    if resp.status_code == 404 and not message:
        message = "no jupyter-remote server extension there (is the URL the Jupyter server's?)"
    text = f"{server_url} refused the join ({resp.status_code}): {message or resp.text[:200]}"
    if resp.status_code == 410:
        return Removed(text)
    if resp.status_code < 500 and body.get("reason") != "agent_unreachable":
        return JoinRefused(text)
    return RuntimeError(text)  # the server, or its way back to us, has trouble: retried


def check_join_token(server_url: str, join_token: str) -> str | None:
    """Before starting: a wrong token or URL is an error now, not a 401 in the log forever.
    Answers the server's tenant name (None from a server that names none).

    Raises JoinRefused when the server says no, requests.RequestException when it cannot
    be reached (the agent then starts and keeps trying).
    """
    resp = requests.get(
        _endpoint(server_url), timeout=10, headers={"Authorization": f"Bearer {join_token}"}
    )
    if resp.status_code >= 400:
        raise _refusal(server_url, resp)
    try:
        tenant = resp.json().get("tenant")
    except (ValueError, AttributeError):
        return None
    return tenant if isinstance(tenant, str) and TENANT.match(tenant) else None


TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")  # the Id rule


def mint(tenants_file: str, tenant: str) -> str:
    """The tenant's token in the tenants file: the one there, or a new one written into
    it (write_tenant: atomic, mode 600, the file holds every tenant's credential)."""
    try:
        with open(tenants_file) as fh:
            entry = (json.load(fh).get("tenants") or {}).get(tenant)
    except FileNotFoundError:
        entry = None
    if isinstance(entry, dict) and isinstance(entry.get("token"), str):
        return entry["token"]
    token = secrets.token_urlsafe(32)
    write_tenant(tenants_file, tenant, token, (entry or {}).get("quota"))
    log.info("minted a credential for tenant %r in %s", tenant, tenants_file)
    return token


def server_token(
    server_url: str,
    join_token: str,
    tenants_file: str,
    operator_token: str | None,
    reload: Callable[[], object] | None = None,
) -> str | None:
    """The token to send as the node's: the server's tenant credential with a tenants
    file, else (with a warning) the operator token, as before tenants."""
    if not tenants_file:
        log.warning(
            "joining %s with the operator token (no --tenants-file): that server sees and "
            "acts on everything here; give the agent a tenants file to join as a tenant",
            server_url,
        )
        return operator_token
    tenant = check_join_token(server_url, join_token)
    if tenant is None:
        raise JoinRefused(f"{server_url} names no tenant in its join answer (an older server?)")
    token = mint(tenants_file, tenant)
    if reload is not None:
        reload()
    else:  # the agent notices the file's new mtime within a second
        time.sleep(1.1)
    return token


def join_once(server_url: str, join_token: str, url: str, token: str | None) -> str:
    """Register with the server (an idempotent registration, not a command)."""
    resp = requests.post(
        _endpoint(server_url),
        json={"url": url, "token": token or None, "instance": INSTANCE},
        timeout=30,
        headers={"Authorization": f"Bearer {join_token}"},
    )
    if resp.status_code >= 400:
        raise _refusal(server_url, resp)
    return resp.json()["state"]


async def keep_joined(
    server_url: str,
    join_token: str,
    url: str,
    token: str | None,
    every: float | None = None,
    tenants_file: str = "",
    reload: Callable[[], object] | None = None,
) -> None:
    """Join now, then again every minute; retry network trouble in 5 s, never a refusal.

    With `tenants_file`, the node's token is the server's tenant credential (minted on the
    first join); `reload` makes the agent read the file at once.
    """
    every = every or float(os.environ.get(REJOIN_ENV) or REJOIN_EVERY)
    loop = asyncio.get_running_loop()
    joined = False
    sent: str | None = None
    have_token = False
    while True:
        try:
            if not have_token:
                sent = await loop.run_in_executor(
                    None, server_token, server_url, join_token, tenants_file, token, reload
                )
                have_token = True
            state = await loop.run_in_executor(None, join_once, server_url, join_token, url, sent)
        except Removed:
            log.info("removed from %s's pool; not joining again until restarted", server_url)
            return
        except JoinRefused as exc:
            log.error("%s; not trying again", exc)
            return
        except (requests.RequestException, RuntimeError, ValueError, OSError) as exc:
            log.warning("could not join %s: %s; trying again in %g s", server_url, exc, RETRY_EVERY)
            joined = False
            await asyncio.sleep(RETRY_EVERY)
            continue
        if not joined:
            log.info("joined %s as %s (state %s)", server_url, url, state)
        joined = True
        await asyncio.sleep(every)
