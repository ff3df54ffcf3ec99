"""Request bodies of the agent API; the server API's bodies extend them."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

from jupyter_remote.protocol.common import (
    MAX_TASKS,
    Count,
    Cpus,
    Env,
    Gpus,
    Id,
    Image,
    Network,
    PidsLimit,
    Request,
    Seconds,
    ShortText,
    Signal,
    Text,
    Workdir,
    no_nul,
)

_MEMORY_RE = re.compile(r"\A\s*(\d{1,12}(?:\.\d{1,6})?)\s*([kmgt]?)i?b?\s*\Z", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MEMORY = 6 << 20  # Docker refuses less than 6 MiB
MAX_MEMORY = 1 << 50  # a petabyte: anything above is a typo


def memory_bytes(value: Any) -> int:
    """Bytes from 536870912, "512m", "1g", "1.5GiB"; a ValueError saying the rule otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be bytes or a size like '512m' or '2g'; got {value!r}")
    if isinstance(value, int):
        size = value
    elif m := _MEMORY_RE.match(value):
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise ValueError(f"must be bytes or a size like '512m' or '2g'; got {value!r}")
    if not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ValueError(f"must be at least 6m (Docker's minimum) and at most 1024t; got {value!r}")
    return size


MEMORY_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": MIN_MEMORY, "maximum": MAX_MEMORY},
        {"type": "string", "pattern": r"^\s*(\d{1,12}(\.\d{1,6})?)\s*([kmgtKMGT]?)[iI]?[bB]?\s*$"},
    ],
    "description": "bytes, or a size such as '512m' or '2g' (at least 6m, at most 1024t)",
    "examples": ["512m", "2g"],
}
Memory = Annotated[int, BeforeValidator(memory_bytes), WithJsonSchema(MEMORY_SCHEMA)]
# a user inside the container: NAME, UID, NAME:GROUP or UID:GID (as `docker run --user`)
USER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"
User = Annotated[
    str,
    Field(
        pattern=USER_PATTERN,
        max_length=65,
        description="run as this user instead of the image's (NAME, UID, NAME:GROUP or "
        "UID:GID), e.g. '1000:1000' or 'nobody'",
        examples=["1000:1000", "nobody"],
    ),
]
# a Linux capability, with or without its CAP_ prefix, in any case: NET_RAW, cap_sys_ptrace
CAP_PATTERN = r"^([Cc][Aa][Pp]_)?[A-Za-z_]{2,32}$"
CapAdd = Annotated[
    list[Annotated[str, Field(pattern=CAP_PATTERN, max_length=36)]],
    Field(
        max_length=64,
        description="extra Linux capabilities for the container, each one the agent allows "
        "(--allow-extra-caps); containers otherwise keep only a small default set",
        examples=[["NET_RAW"]],
    ),
]
Argv = Annotated[
    list[Annotated[str, Field(max_length=1 << 20), AfterValidator(no_nul)]],
    Field(min_length=1, max_length=4096),
]


class ContainerFields(Request):
    """What a container is made from; absent fields take the node's defaults."""

    image: Image | None = None
    memory: Memory | None = None
    cpus: Cpus | None = None
    pids_limit: PidsLimit | None = None
    env: Env | None = None
    workdir: Workdir | None = None
    network: Network | None = None
    user: User | None = None
    read_only: (
        Annotated[
            StrictBool,
            Field(description="a read-only root filesystem; /tmp is a size-bounded writable tmpfs"),
        ]
        | None
    ) = None
    cap_add: CapAdd | None = None
    gpus: Gpus | None = None


class CommandFields(Request):
    """Exactly one of a shell cell, Python source or a raw argv."""

    command: Text | None = None
    python: Text | None = None
    argv: Argv | None = None
    interpreter: ShortText | None = None
    timeout: Seconds | None = None

    @model_validator(mode="after")
    def _one_command(self):
        given = [k for k in ("command", "python", "argv") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of command (shell), python (source) or argv (list)")
        text = self.command if self.command is not None else self.python
        if text is not None and not text.strip():
            raise ValueError(f"{given[0]} must not be empty")
        return self


def _one_of_commands() -> dict:
    """The JSON Schema side of _one_command: exactly one of command, python, argv not null."""
    keys = ("command", "python", "argv")
    return {
        "oneOf": [
            {
                "required": [key],
                "properties": {
                    k: ({"not": {"type": "null"}} if k == key else {"type": "null"}) for k in keys
                },
            }
            for key in keys
        ]
    }


class ExecutionBody(CommandFields, ContainerFields):
    """POST /v1/executions: run once in a session (session_id) or a fresh container."""

    model_config = ConfigDict(json_schema_extra=_one_of_commands())

    execution_id: Id
    session_id: Id | None = None
    execution_count: (
        Annotated[
            int,
            Field(
                ge=0,
                le=2**31 - 1,
                strict=True,
                description="The kernel's In[N] number: a Python cell's traceback names it "
                "Cell In[N]",
            ),
        ]
        | None
    ) = None


class SessionBody(ContainerFields):
    """POST /v1/sessions."""

    session_id: Id | None = None
    idle_timeout: (
        Annotated[float, Field(ge=0, le=365 * 24 * 3600.0, allow_inf_nan=False)] | None
    ) = None


OutputPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(no_nul)]
# paths saved from a task's container when it ends, before the container is removed
Outputs = Annotated[list[OutputPath], Field(max_length=32)]

# a job's top-level fields that are defaults for each of its tasks; all a task may carry
JOB_DEFAULT_FIELDS = (*ContainerFields.model_fields, "timeout", "outputs")
TASK_SPEC_FIELDS = (*CommandFields.model_fields, *ContainerFields.model_fields, "outputs")


class TaskBody(CommandFields, ContainerFields):
    """One task of a job; job-level container fields and timeout are its defaults."""

    model_config = ConfigDict(json_schema_extra=_one_of_commands())

    name: ShortText | None = None
    service: StrictBool = False
    outputs: Outputs | None = None


class JobBody(CommandFields, ContainerFields):
    """POST /v1/jobs: `tasks`, or one task given by the command fields at the top level."""

    job_id: Id | None = None
    name: ShortText | None = None
    parallelism: Count = 0
    outputs: Outputs | None = None
    tasks: Annotated[list[dict], Field(min_length=1, max_length=MAX_TASKS)] | None = None

    def _one_command(self):  # checked per task by task_bodies(), with the defaults in
        return self

    def task_bodies(self) -> list[TaskBody]:
        """Each task with the job's defaults filled in, checked (ValueError names the task)."""
        defaults = self.model_dump(
            include=set(JOB_DEFAULT_FIELDS),
            exclude_none=True,
        )
        raw = self.tasks
        if raw is None:
            raw = [
                self.model_dump(
                    include={"command", "python", "argv", "interpreter"}, exclude_none=True
                )
            ]
        out = []
        for index, task in enumerate(raw):
            if not isinstance(task, dict):
                raise ValueError(f"task {index} must be an object")
            out.append(TaskBody.model_validate({**defaults, **task}))
        return out


class CancelBody(Request):
    """POST /v1/executions/{id}/cancel."""

    signal: Signal = "SIGTERM"


class LegacyExecuteBody(Request):
    """POST /execute (seed 000): a shell command in the node's default session or another."""

    command: Text
    timeout: Seconds | None = None
    cwd: Workdir | None = None
    workdir: Workdir | None = None
    image: Image | None = None
    env: Env | None = None
    session_id: Id | None = None
    execution_id: Id | None = None

    @model_validator(mode="after")
    def _not_blank(self):
        if not self.command.strip():
            raise ValueError("command must not be empty")
        return self
