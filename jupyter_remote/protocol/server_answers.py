"""Answers of the server API (/remote/api) as pydantic models: the server builds its node
answers from them, and its OpenAPI document and tests check every answer against them.

Every answer allows more fields than it declares (clients ignore what they do not know).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from jupyter_remote.protocol.common import JobStatus, TaskStatus

NodeSource = Literal["config", "api", "join", "swarm"]
# drained: it answers, but its engine (Swarm: availability drain or pause) takes no new work
NodeState = Literal["unknown", "healthy", "busy", "unhealthy", "drained", "suspect", "lost"]


class Answer(BaseModel):
    """A response: the fields clients rely on; more may come (clients ignore them)."""

    model_config = ConfigDict(extra="allow")


class Usage(Answer):
    """A figure of the node's last resource sample (cpu, memory or disk), as its agent sent it."""

    percent: float | None = None


class Node(Answer):
    """A node of the pool (GET nodes, nodes/{id}); never its token."""

    node_id: str
    url: str
    source: NodeSource
    labels: dict[str, str]  # its Swarm node's labels, or those configured for it
    state: NodeState
    reason: str
    added_at: float
    last_seen_at: float | None
    health: list[dict]  # the agent's checks, as its last health answer gave them
    warnings: list[str]
    cpu: Usage | None
    memory: Usage | None
    disk: Usage | None
    load_avg: list[float] | None
    containers: int | None
    running_executions: int
    inflight: int
    sessions: int | None
    own_containers: list[dict]
    images: list[str]
    # the agent's GPUs as its last /v1/resources gave them: count, free, sharing, source,
    # devices [{index, uuid, model, memory_used, memory_total, utilization, held_by}]
    gpus: dict | None = None

    @classmethod
    def answer(cls, **fields: object) -> dict:
        """The JSON of a node: this model's fields, in its order.

        Not validated on the way out (~2 us a node, not ~60 us, and an agent's odd resource
        report never turns GET nodes into a 500); the schemathesis run checks answers
        against the model's schema. A field the model lacks is a programming error.
        """
        unknown = fields.keys() - cls.model_fields.keys()
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        return {name: fields[name] for name in cls.model_fields if name in fields}


class Task(Answer):
    index: int
    name: str
    status: TaskStatus
    service: bool
    node_id: str | None
    agent_job_id: str | None
    returncode: int | None


class Job(Answer):
    """A server job (GET jobs, jobs/{id}, its wait and stop)."""

    job_id: str
    name: str
    status: JobStatus
    elapsed: float
    autostop: bool
    degraded: bool
    tasks_done: int
    tasks_total: int
    tasks_lost: int
    tasks: list[Task]


class Engine(Answer):
    engine_id: str
    age_ms: int
    stale: bool
    latency_pred_ms: float
    pending_tokens_total: int
    kv_cache_utilization: float | None


class EngineStates(Answer):
    """GET engine-states: the gateway's table, or enabled false and why."""

    enabled: bool
    message: str | None = None
    engines: list[Engine] | None = None


class SessionNotebook(Answer):
    path: str
    name: str


class RunningCell(Answer):
    """The cell running now; execution_id null when it was not started through this server."""

    execution_id: str | None
    started_at: float | None
    elapsed: float | None


class SessionView(Answer):
    """A session container as the Lab panel shows it: whose, where, how busy."""

    session_id: str
    owner: str
    kind: Literal["kernel", "client"]
    notebook: SessionNotebook | None
    node_id: str
    image: str
    path: Literal["runner", "exec"] | None
    state: Literal["idle", "running", "node unavailable", "gone"]
    reason: str | None
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit: int | None
    running: RunningCell | None
    idle_for: float | None
    created_at: float | None


class SessionList(Answer):
    """GET sessions: every session container this server knows; `now` is the server's clock."""

    sessions: list[SessionView]
    now: float


ANSWERS = (Node, Job, EngineStates, SessionList)
