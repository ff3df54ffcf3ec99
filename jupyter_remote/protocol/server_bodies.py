"""Request bodies of the server API (/remote/api), built on the agent API's bodies."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from jupyter_remote.protocol.bodies import (
    CancelBody,
    ExecutionBody,
    JobBody,
    Memory,
    SessionBody,
    TaskBody,
)
from jupyter_remote.protocol.common import (
    MAX_TASKS,
    Cpus,
    Gpus,
    Id,
    Image,
    Network,
    PidsLimit,
    PlacementLabels,
    Request,
    ShortText,
    _no_nul,
)

__all__ = [
    "CancelBody",
    "JoinBody",
    "NodeAddBody",
    "ServerExecutionBody",
    "ServerJobBody",
    "SessionBody",
    "SessionCreateBody",
    "TaskBody",
    "check_url",
]

MAX_JOB_BODY = 1 << 20  # like the agent's request limit: a job is a list of commands
MAX_EXECUTION_BODY = 32 << 20  # a cell may carry data; still bounded

# A node id: an agent's own name, or host:port for a node known by URL only.
NodeId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[^/\s]+$"),
    AfterValidator(_no_nul),
]

# An agent's token goes into an Authorization header: visible ASCII, no spaces.
Token = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[!-~]+$")]


def check_url(url: str) -> str:
    """An agent's base URL, http(s)://host[:port]; a ValueError naming the rule otherwise."""
    try:
        parsed = urlparse(url)
        ok = parsed.scheme in ("http", "https") and bool(parsed.hostname)
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"must be an http(s)://host:port URL ({exc}); got {url!r}") from None
    if not ok or any(c.isspace() or c == "\x00" for c in url):
        raise ValueError(f"must be an http(s)://host:port URL; got {url!r}")
    return url.rstrip("/")


Url = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048),
    AfterValidator(check_url),
    Field(json_schema_extra={"format": "uri", "examples": ["http://10.0.0.5:9527"]}),
]


# nbformat's cell id rule (JupyterLab sends the cell's id as `cellId` with each execution)
CELL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CellId = Annotated[
    str,
    StringConstraints(pattern=CELL_ID_PATTERN),
    Field(description="The notebook cell's id: a reloaded page finds the cell's output by it."),
]


class ServerExecutionBody(ExecutionBody):
    """POST /remote/api/executions: a cell, placed in its kernel's or owner's session."""

    execution_id: Id | None = None
    kernel_id: Id | None = None
    owner: Id | None = None
    node: NodeId | None = None
    fresh: StrictBool = False
    cell_id: CellId | None = None
    on: PlacementLabels | None = None


class ServerJobBody(JobBody):
    """POST /remote/api/jobs: tasks spread over `nodes` (default: all), autostop services."""

    nodes: Annotated[list[NodeId], Field(min_length=1, max_length=1000)] | None = None
    autostop: StrictBool = False
    on: PlacementLabels | None = None
    kernel_id: Id | None = None  # with cell_id: a notebook cell's job (--detach), filed under it
    cell_id: CellId | None = None
    # checked one by one with the job's defaults filled in (JobService); documented as TaskBody
    tasks: (
        Annotated[
            list[dict],
            Field(min_length=1, max_length=MAX_TASKS),
            WithJsonSchema(
                {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/TaskBody"},
                    "minItems": 1,
                    "maxItems": MAX_TASKS,
                }
            ),
        ]
        | None
    ) = None

    @field_validator("job_id")
    @classmethod
    def _no_dot(cls, value: str | None) -> str | None:
        if value is not None and "." in value:
            raise ValueError("must not contain '.' (the server names its tasks JOB.INDEX)")
        return value


class NodeAddBody(Request):
    """POST /remote/api/nodes: an agent the server must reach now."""

    url: Url
    token: Token | None = None
    token_file: ShortText | None = None


class JoinBody(Request):
    """POST /remote/api/nodes/join: an agent joining by itself (with the join token)."""

    url: Url
    token: Token | None = None
    instance: Annotated[str, StringConstraints(max_length=128), AfterValidator(_no_nul)] | None = (
        None
    )


class SessionCreateBody(Request):
    """POST /remote/api/sessions: an API client's session, one per owner and image."""

    owner: Id | None = None
    image: Image | None = None
    node: NodeId | None = None
    memory: Memory | None = None
    cpus: Cpus | None = None
    pids_limit: PidsLimit | None = None
    network: Network | None = None
    gpus: Gpus | None = None
    on: PlacementLabels | None = None
