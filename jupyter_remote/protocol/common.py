"""Field types, statuses and status rules shared by both APIs."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

# -- ids -----------------------------------------------------------------------------------
# Fully matched (\Z, not $): "abc\n" is not an id. Safe in file and container names.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=128)]

# -- limits ----------------------------------------------------------------------------------
MAX_TIMEOUT = 30 * 24 * 3600.0  # seconds: a month; beyond that is a mistake, not a plan
MAX_CPUS = 1024.0
MAX_PIDS = 4_194_304  # the kernel's pid_max ceiling
MIN_PIDS = 16
MAX_TASKS = 1000
MAX_ENV = 1000
MAX_PATH = 4096
MAX_TEXT = 64 << 20  # a cell: the request limit bounds it first
MAX_JSON_DEPTH = 64  # request bodies nest far less; deeper is refused before parsing

Seconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT, allow_inf_nan=False, strict=True)]
Cpus = Annotated[float, Field(ge=0.01, le=MAX_CPUS, allow_inf_nan=False, strict=True)]
PidsLimit = Annotated[int, Field(ge=MIN_PIDS, le=MAX_PIDS, strict=True)]
Count = Annotated[int, Field(ge=0, le=1_000_000, strict=True)]


def no_nul(value: str) -> str:
    """No NUL (a C string ends there) and no lone surrogate (not UTF-8): Docker takes neither."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(no_nul)]
ShortText = Annotated[str, StringConstraints(max_length=1024), AfterValidator(no_nul)]

# An image reference as Docker spells it: [host[:port]/]name[/name...][:tag][@digest].
IMAGE_PATTERN = (
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
Image = Annotated[str, StringConstraints(pattern=IMAGE_PATTERN, max_length=255)]


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


Workdir = Annotated[
    str,
    StringConstraints(max_length=MAX_PATH),
    AfterValidator(no_nul),
    AfterValidator(_absolute_path),
]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")]


def _env_pairs(value: object) -> object:
    """Docker's list form ["A=1", "B=2"] read as {"A": "1", "B": "2"}; objects pass as they are."""
    if not isinstance(value, list):
        return value
    pairs = {}
    for item in value:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"env items must be 'NAME=value'; got {item!r}")
        name, _, val = item.partition("=")
        pairs[name] = val
    return pairs


Env = Annotated[dict[EnvName, ShortText], BeforeValidator(_env_pairs), Field(max_length=MAX_ENV)]

Network = Literal["none", "host", "bridge"]

# -- GPUs and node labels ----------------------------------------------------------------------
MAX_GPUS = 64  # per request; NVIDIA's largest nodes have 8-16


def _distinct(value: list[int]) -> list[int]:
    if len(set(value)) != len(value):
        raise ValueError("GPU indices must be distinct")
    return value


GpuCount = Annotated[int, Field(ge=1, le=MAX_GPUS, strict=True)]
GpuIndex = Annotated[int, Field(ge=0, le=1023, strict=True)]
GpuList = Annotated[
    list[GpuIndex], Field(min_length=1, max_length=MAX_GPUS), AfterValidator(_distinct)
]
Gpus = Annotated[
    GpuCount | GpuList,
    Field(
        description="How many GPUs (any free ones of the node), or which: a list of device indices",
        examples=[1, [0, 2]],
    ),
]
# A node label as Docker and Swarm spell them (zone, gpu.model, com.example/rack) and its value.
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=255), AfterValidator(no_nul)]
MAX_LABELS = 16
PlacementLabels = Annotated[
    dict[LabelKey, LabelValue],
    Field(
        min_length=1,
        max_length=MAX_LABELS,
        description="Only nodes with every one of these labels (Swarm's node labels, or a "
        "configured node's)",
        examples=[{"zone": "eu-1"}],
    ),
]

Signal = Literal["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL"]
SIGNALS: tuple[str, ...] = Signal.__args__  # type: ignore[attr-defined]

# -- statuses and their rules --------------------------------------------------------------
ExecutionStatus = Literal[
    "placing",
    "running",
    "completed",
    "failed",
    "timed_out",
    "cancelled",
    "lost",
    "not_started",
    "unknown",
]
EXECUTION_FINAL = ("completed", "failed", "timed_out", "cancelled", "lost", "not_started")
# Not known yet: the stream broke, or its node turned lost (a cut link), after the command
# was sent. The server asks the node until its own record settles it (`settled: true`).
EXECUTION_UNSETTLED = ("unknown",)
TaskStatus = Literal["pending", "running", "completed", "failed", "timed_out", "stopped", "lost"]
TASK_FINAL = ("completed", "failed", "timed_out", "stopped", "lost")
JobStatus = Literal["pending", "running", "stopping", "completed", "failed", "degraded", "stopped"]
JOB_FINAL = ("completed", "failed", "degraded", "stopped")
# After a partition: a task the server marked lost stays lost (a final status never
# changes, so the job stays degraded and nothing is re-run). Once its node answers again,
# the task's `reconciled.outcome` says, once, what the node did with it meanwhile.
Reconciled = Literal["stopped", "ended", "not_received"]


def reconciled_as(node_status: str | None) -> Reconciled:
    """The outcome for a lost task from its node's own status (None: the node has no record).

    Still pending or running there: the server stops it (its output is kept), "stopped";
    ended there while cut off: "ended"; never arrived: "not_received".
    """
    if node_status is None:
        return "not_received"
    return "ended" if node_status in TASK_FINAL else "stopped"


def job_status(tasks: list[dict], stop_requested: bool, autostop: bool = False) -> str:
    """One word for a job from its tasks: the one rule, for the agent and the server."""
    active = [t for t in tasks if t["status"] in ("pending", "running")]
    if stop_requested:
        return "stopping" if any(t["status"] == "running" for t in tasks) else "stopped"
    if any(not t.get("service") for t in active):
        return "pending" if all(t["status"] == "pending" for t in tasks) else "running"
    if active:  # only services left: autostop ends them, else they run until stopped
        return "stopping" if autostop else "running"
    batch = [t for t in tasks if not t.get("service")]
    if any(t["status"] in ("failed", "timed_out") for t in batch):
        return "failed"
    if any(t["status"] == "lost" for t in tasks):
        return "degraded"
    return "completed"


class Request(BaseModel):
    """A request body: unknown fields are refused, types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=False)


_no_nul = no_nul  # the name it had first
