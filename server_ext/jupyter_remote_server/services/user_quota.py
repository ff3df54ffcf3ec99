"""Per-user quota across the pool (c.RemoteApp.user_quota): checked and held before
anything is sent to an agent.

Each holder (a session, a fresh execution, a job) takes its share of the user's quota in
one synchronous step on the event loop (no await between the check and the hold), so
concurrent requests cannot together exceed it; the share is given back when the holder
ends. A container that asks no cpu or memory limit counts the agent's default limits.
"""

from __future__ import annotations

from collections.abc import Iterable

from jupyter_remote.protocol.bodies import memory_bytes
from jupyter_remote.protocol.errors import QUOTA_KEYS, QuotaExceeded

KEYS = QUOTA_KEYS
UNSET_CPUS = 1.0  # the agent's default limits (AgentApp.cpus, AgentApp.memory)
UNSET_MEMORY = 2 << 30


def parse_limits(config: dict) -> dict[str, float]:
    """The configured quota in numbers; a ValueError naming the bad key."""
    out: dict[str, float] = {}
    for key, value in (config or {}).items():
        if key not in KEYS:
            raise ValueError(f"c.RemoteApp.user_quota: unknown key {key!r} (one of {KEYS})")
        try:
            number = memory_bytes(value) if key == "memory" else float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"c.RemoteApp.user_quota[{key!r}]: {exc}") from None
        if isinstance(value, bool) or number < 0:
            raise ValueError(f"c.RemoteApp.user_quota[{key!r}] must be a number >= 0")
        out[key] = number
    return out


def ask_of(spec: dict, session: bool) -> dict[str, float]:
    """What one container asks: its limits, or the agent's defaults where it names none."""
    gpus = spec.get("gpus")
    return {
        "sessions": 1.0 if session else 0.0,
        "cpus": float(spec["cpus"]) if spec.get("cpus") is not None else UNSET_CPUS,
        "memory": float(memory_bytes(spec["memory"]) if spec.get("memory") else UNSET_MEMORY),
        "gpus": float(len(gpus) if isinstance(gpus, list) else gpus or 0),
    }


def job_ask(specs: list[dict], parallelism: int | None) -> dict[str, float]:
    """A job holds what its tasks may hold at once: all of them, or the `parallelism`
    largest of each limit."""
    asks = [ask_of(s, False) for s in specs]
    most = parallelism or len(asks)
    return {k: sum(sorted((a[k] for a in asks), reverse=True)[:most]) for k in KEYS}


def shown(key: str, value: float) -> str:
    if key == "memory":
        for unit, size in (("g", 1 << 30), ("m", 1 << 20)):
            if value >= size:
                return f"{value / size:g}{unit}"
        return f"{value:g}"
    return f"{value:g}"


class UserQuota:
    """The holds of every user, and the check against c.RemoteApp.user_quota."""

    def __init__(self, limits: dict[str, float]) -> None:
        self.limits = limits
        self.held: dict[str, tuple[str, dict[str, float]]] = {}  # holder -> (user, ask)

    def use(self, user: str) -> dict[str, float]:
        total = dict.fromkeys(KEYS, 0.0)
        for who, ask in self.held.values():
            if who == user:
                for k in KEYS:
                    total[k] += ask.get(k, 0.0)
        return total

    def take(self, user: str, holder: str, ask: dict[str, float], what: str) -> None:
        """Hold `ask` for `holder`, or a 403 naming the quota, its limit and the use."""
        if holder in self.held:
            return
        if self.limits:
            use = self.use(user)
            for key, limit in self.limits.items():
                if ask.get(key, 0.0) and use[key] + ask[key] > limit:
                    raise QuotaExceeded(
                        f"user {user or '(this server)'}: quota {key} {shown(key, limit)} "
                        f"exceeded: {shown(key, use[key])} in use, {what} asks "
                        f"{shown(key, ask[key])}",
                        quota=key,
                        limit=limit,
                        use=use[key],
                        ask=ask[key],
                    )
        self.held[holder] = (user, ask)

    def force(self, user: str, holder: str, ask: dict[str, float]) -> None:
        """Count what already runs (at the server's start), whatever the quota says."""
        self.held[holder] = (user, ask)

    def give_back(self, holder: str) -> None:
        self.held.pop(holder, None)

    def load(self, holders: Iterable[tuple[str, str, dict[str, float]]]) -> None:
        for user, holder, ask in holders:
            self.force(user, holder, ask)
