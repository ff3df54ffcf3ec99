"""The retention rule the agent (its data dir) and the server (its SQLite store) share.

Ended records are kept `max_age` seconds and `max_bytes` in all; past either, the oldest
(by end time) go first, never one that ended less than `min_age` ago, at most `per_pass` in
one pass. A removed id is remembered `expired_keep` seconds (404 expired, never run again).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from traitlets import Float, HasTraits, Int, TraitError, validate

DAY = 24 * 3600.0
# name: (lowest, highest or None, what 0 means): the one range rule of both apps' traits
RANGES = {
    "retention_max_age": (0, None, "0: no age limit"),
    "retention_max_bytes": (0, None, "0: no size limit"),
    "retention_min_age": (0, None, ""),
    "retention_interval": (0.1, 86400, ""),
    "retention_per_pass": (1, 1_000_000, ""),
    "expired_keep": (0, None, ""),
}


def out_of_range(name: str, value: float) -> str | None:
    """Why `value` is no good for the retention setting `name` (None: it is)."""
    low, high, note = RANGES[name]
    if isinstance(value, (int, float)) and math.isfinite(value) and low <= value:
        if high is None or value <= high:
            return None
    span = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
    return f"must be a finite number {span}{f' ({note})' if note else ''}; got {value!r}"


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


class RetentionTraits(HasTraits):
    """The retention settings, one definition for the agent's and the server's app.

    Mixed into AgentApp and RemoteApp, so they stay `c.AgentApp.retention_max_age` and
    `c.RemoteApp.retention_max_age`. The byte budget's default is the server's (1 GiB);
    the agent redeclares the trait with its own (4 GiB: logs too).
    """

    retention_max_age = Float(
        7 * DAY,
        help="Seconds an ended execution or job (record and output) is kept after it ended "
        "(default a week); older ones are removed oldest-first. 0: no age limit.",
    ).tag(config=True)
    retention_max_bytes = Int(
        1 << 30,
        help="Most bytes the ended execution and job records (and, on an agent, their logs) "
        "take in all (1 GiB on the server, 4 GiB on an agent); over it, the oldest ended "
        "ones are removed. 0: no size limit.",
    ).tag(config=True)
    retention_min_age = Float(
        600.0,
        help="Seconds a record is kept after it ended whatever the limits: a server cut off "
        "from a node settles its executions from the full record, and the panel still shows "
        "what just finished.",
    ).tag(config=True)
    retention_interval = Float(
        60.0, help="Seconds between retention passes (in the background)."
    ).tag(config=True)
    retention_per_pass = Int(
        1000, help="Most records one retention pass removes (bounds its time)."
    ).tag(config=True)
    expired_keep = Float(
        30 * DAY,
        help="Seconds an id removed by retention keeps answering 404 expired (with its "
        "outcome) and is refused for a new run; after that it is forgotten.",
    ).tag(config=True)

    @validate(*RANGES)
    def _check_retention(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        why = out_of_range(name, value)
        if why:
            raise TraitError(f"c.{type(self).__name__}.{name} {why}")
        return value

    def retention_policy(self) -> Policy:
        return Policy.from_traits(self)
