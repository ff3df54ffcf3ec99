"""The retention rule the agent (its data dir) and the server (its SQLite store) share.

Ended records are kept `max_age` seconds and `max_bytes` in all; past either, the oldest
(by end time) go first, never one that ended less than `min_age` ago, at most `per_pass` in
one pass. A removed id is remembered `expired_keep` seconds (404 expired, never run again).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DAY = 24 * 3600.0


@dataclass(frozen=True)
class Policy:
    """How much is kept; 0 turns a limit off."""

    max_age: float = 7 * DAY
    max_bytes: int = 4 << 30
    min_age: float = 600.0
    per_pass: int = 1000
    interval: float = 60.0
    expired_keep: float = 30 * DAY

    @classmethod
    def from_traits(cls, app) -> Policy:
        """From an app's retention_* and expired_keep traits (agent and server alike)."""
        return cls(
            max_age=app.retention_max_age,
            max_bytes=app.retention_max_bytes,
            min_age=app.retention_min_age,
            per_pass=app.retention_per_pass,
            interval=app.retention_interval,
            expired_keep=app.expired_keep,
        )


def to_remove(
    candidates: Iterable[tuple[float, str, str, int]], total: int, policy: Policy, now: float
) -> list[tuple[str, str]]:
    """(kind, id) of the records to remove now, from (end, kind, id, bytes) oldest first."""
    over = total - policy.max_bytes if policy.max_bytes else 0
    out: list[tuple[str, str]] = []
    for ended, kind, record_id, size in candidates:
        age = now - ended
        if len(out) >= policy.per_pass or age < policy.min_age:
            break  # oldest first: every later one is younger still
        if not (policy.max_age and age > policy.max_age) and over <= 0:
            break
        out.append((kind, record_id))
        over -= size
    return out
