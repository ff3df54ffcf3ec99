"""Quotas per tenant on one agent: what each tenant holds now (sessions, the CPU and memory
limits of its live containers, GPUs) and a check-and-reserve under one lock before anything
is made, so concurrent requests cannot together go over (tenants.py says who a tenant is)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from jupyter_remote.protocol.errors import QUOTA_KEYS, QuotaExceeded


@dataclass
class Use:
    """What a tenant holds, or what a request asks for."""

    sessions: int = 0
    cpus: float = 0.0
    memory: int = 0
    gpus: int = 0

    def add(self, other: Use) -> None:
        self.sessions += other.sessions
        self.cpus += other.cpus
        self.memory += other.memory
        self.gpus += other.gpus

    def to_json(self) -> dict:
        return {
            "sessions": self.sessions,
            "cpus": round(self.cpus, 6),
            "memory": self.memory,
            "gpus": self.gpus,
        }


def gpu_count(request, given=()) -> int:
    """Devices a container holds (given) or asks for (a count or indices)."""
    if given:
        return len(given)
    if request is None:
        return 0
    return request if isinstance(request, int) else len(request)


def ask_of(spec, sessions: int = 0) -> Use:
    """One container's share: its cpu and memory limits (defaults already filled) and GPUs."""
    return Use(sessions, spec.cpus, spec.memory, gpu_count(spec.gpu_request, spec.gpus))


def task_ask(task: dict) -> Use:
    spec = task["spec"]
    return Use(
        0,
        float(spec.get("cpus") or 0),
        int(spec.get("memory") or 0),
        gpu_count(spec.get("gpu_request"), spec.get("gpus")),
    )


def job_ask(job: dict) -> Use:
    """What a job takes when submitted: the tasks that start at once (its parallelism)."""
    use = Use()
    for task in job["tasks"][: job["parallelism"] or None]:
        use.add(task_ask(task))
    return use


def use_of(agent, tenant: str | None, skip=frozenset()) -> Use:
    """What `tenant` holds now (None: everyone): live sessions, running fresh executions
    and running job tasks, by their limits; records named in `skip` are left out."""
    use = Use()
    for s in list(agent.sessions.sessions.values()):
        if (tenant is None or s.tenant == tenant) and ("session", s.session_id) not in skip:
            use.add(ask_of(s.spec, sessions=1))
    for ex in list(agent.executions.running.values()):
        if ex.mode != "fresh" or ex.spec is None or ("execution", ex.execution_id) in skip:
            continue
        if tenant is None or ex.tenant == tenant:
            use.add(ask_of(ex.spec))
    for job in list(agent.jobs.jobs.values()):
        if (tenant is not None and job.get("tenant") != tenant) or ("job", job["job_id"]) in skip:
            continue
        for task in job["tasks"]:
            if task["status"] == "running":
                use.add(task_ask(task))
    return use


def _amount(key: str, value: float) -> str:
    if key == "memory":
        return f"{value / (1 << 30):.2f} GiB"
    return f"{value:g}"


class Quotas:
    """Check and reserve under one lock: a request's share is counted from the moment it
    passes until its record exists (and by its record from then on)."""

    def __init__(self, agent) -> None:
        self.agent = agent
        self._lock = threading.Lock()
        self._pending: dict[tuple, tuple[str, Use]] = {}

    def use(self, tenant: str | None) -> Use:
        with self._lock:
            return self._use(tenant)

    def _use(self, tenant: str | None) -> Use:
        use = use_of(self.agent, tenant, skip=set(self._pending))
        for who, ask in self._pending.values():
            if tenant is None or who == tenant:
                use.add(ask)
        return use

    def take(self, tenant: str | None, key: tuple, ask: Use, what: str) -> bool:
        """Reserve `ask` for `key`, or 403 quota_exceeded when it would take the tenant
        over a quota; False when there was nothing to reserve (the operator has no quota)."""
        quota = self.agent.credentials.quota(tenant)
        if not quota:
            return False
        with self._lock:
            use = self._use(tenant)
            for name in QUOTA_KEYS:
                limit = quota.get(name)
                have, want = getattr(use, name), getattr(ask, name)
                if limit is None or not want or have + want <= limit + 1e-9:
                    continue
                raise QuotaExceeded(
                    f"tenant {tenant}: quota {name} {_amount(name, limit)} exceeded: "
                    f"{_amount(name, have)} in use, this {what} asks {_amount(name, want)}",
                    tenant=tenant,
                    quota=name,
                    limit=limit,
                    use=round(have, 6) if name == "cpus" else have,
                    asks=round(want, 6) if name == "cpus" else want,
                )
            self._pending[key] = (tenant, ask)
        return True

    def release(self, key: tuple) -> None:
        with self._lock:
            self._pending.pop(key, None)

    @contextmanager
    def reserve(self, tenant: str | None, key: tuple, ask: Use, what: str) -> Iterator[None]:
        """Hold `ask` for `key` while the body makes the object (see take)."""
        taken = self.take(tenant, key, ask, what)
        try:
            yield
        finally:
            if taken:
                self.release(key)

    @contextmanager
    def admit_task(self, job: dict, task: dict) -> Iterator[QuotaExceeded | None]:
        """A job task's start: the first ones are covered by the job's own reservation;
        a later one is checked when its turn comes (yields the refusal, or None)."""
        if ("job", job["job_id"]) in self._pending or job.get("tenant") is None:
            yield None
            return
        key = ("task", job["job_id"], task["index"])
        try:
            taken = self.take(job["tenant"], key, task_ask(task), "task")
        except QuotaExceeded as exc:
            yield exc
            return
        try:
            yield None
        finally:
            if taken:
                self.release(key)
