"""Validated request bodies: every field is checked before anything is created or run."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from jupyter_remote.errors import BadRequest

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_NAME_SAFE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MEMORY = 6 << 20  # Docker refuses less than 6 MiB


@dataclass(frozen=True)
class Limits:
    """Defaults and ceilings the agent applies to every container it creates."""

    memory: int = 2 << 30
    cpus: float = 1.0
    pids_limit: int = 1024
    max_memory: int = 0  # 0: no ceiling beyond the host
    max_cpus: float = 0.0
    allow_network: bool = False
    host_cpus: float = 0.0  # what the Docker engine's host has; 0: unknown, not checked
    host_memory: int = 0


@dataclass(frozen=True)
class ContainerSpec:
    """What a container is made from: image, limits, environment."""

    image: str
    memory: int
    cpus: float
    pids_limit: int
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    network: str = "none"

    def to_json(self) -> dict:
        return {
            "image": self.image,
            "memory": self.memory,
            "cpus": self.cpus,
            "pids_limit": self.pids_limit,
            "workdir": self.workdir,
            "network": self.network,
            "env": sorted(self.env),
        }


def check_id(value: object, what: str) -> str:
    """An id a client made: short, printable, safe in file and container names."""
    if not isinstance(value, str) or not ID_RE.match(value):
        raise BadRequest(
            f"{what} must be 1-128 characters of letters, digits and _.:- "
            f"starting with a letter or digit; got {value!r}",
            reason="bad_id",
        )
    return value


def safe_name(value: str) -> str:
    """An id turned into something Docker accepts inside a container name."""
    return value if _NAME_SAFE_RE.match(value) else re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:64]


def parse_memory(value: object) -> int:
    """Bytes from 536870912, "512m", "1g", "1.5GiB"."""
    if isinstance(value, bool):
        raise BadRequest(
            f"memory must be bytes or a size like '512m'; got {value!r}", reason="bad_memory"
        )
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _MEMORY_RE.match(value)):
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise BadRequest(
            f"memory must be bytes or a size like '512m' or '2g'; got {value!r}",
            reason="bad_memory",
        )
    if size < MIN_MEMORY:
        raise BadRequest(
            f"memory must be at least 6m (Docker's minimum); got {value!r}", reason="bad_memory"
        )
    return size


def _number(body: dict, key: str, default, kind, *, minimum=None, allow_none=False):
    value = body.get(key, default)
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float) if kind is float else int)
        or not math.isfinite(value)
    ):
        raise BadRequest(f"{key} must be a finite number; got {value!r}", reason=f"bad_{key}")
    if minimum is not None and value < minimum:
        raise BadRequest(f"{key} must be >= {minimum}; got {value!r}", reason=f"bad_{key}")
    return kind(value)


def parse_timeout(body: dict, default: float | None = None) -> float | None:
    """Seconds before the command is killed; None means no limit."""
    value = _number(body, "timeout", default, float, allow_none=True)
    if value is not None and value <= 0:
        raise BadRequest(
            f"timeout must be a positive number of seconds; got {value!r}", reason="bad_timeout"
        )
    return value


def parse_env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):  # ["A=1", "B=2"], as docker takes them
        pairs = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise BadRequest(f"env items must be 'NAME=value'; got {item!r}", reason="bad_env")
            name, _, val = item.partition("=")
            pairs[name] = val
        value = pairs
    if not isinstance(value, dict):
        raise BadRequest("env must be an object of strings", reason="bad_env")
    env = {}
    for name, val in value.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(name)):
            raise BadRequest(f"env name {name!r} is not a valid variable name", reason="bad_env")
        if not isinstance(val, (str, int, float)) or isinstance(val, bool):
            raise BadRequest(f"env value of {name} must be a string", reason="bad_env")
        env[str(name)] = str(val)
    return env


def parse_workdir(body: dict) -> str | None:
    """The working directory: absolute, or None for the image's own."""
    workdir = body.get("workdir")
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/")):
        raise BadRequest(f"workdir must be an absolute path; got {workdir!r}", reason="bad_workdir")
    return workdir


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def check_host_fits(limits: Limits, memory: int | None, cpus: float | None) -> None:
    """Refuse what the host cannot give, in our words rather than Docker's raw 400."""
    if cpus is not None and limits.host_cpus and cpus > limits.host_cpus:
        raise BadRequest(
            f"cpus {cpus:g} is more than this node's {limits.host_cpus:g} CPUs; "
            f"ask for at most {limits.host_cpus:g}",
            reason="bad_cpus",
            host_cpus=limits.host_cpus,
        )
    if memory is not None and limits.host_memory and memory > limits.host_memory:
        raise BadRequest(
            f"memory {_gib(memory)} is more than this node's {_gib(limits.host_memory)} "
            "of memory in total; ask for less",
            reason="bad_memory",
            host_memory=limits.host_memory,
        )


def parse_container_spec(body: dict, limits: Limits, default_image: str) -> ContainerSpec:
    """Image, limits and environment from a request, within the agent's ceilings."""
    image = body.get("image") or default_image
    if not isinstance(image, str) or not image.strip() or len(image) > 255:
        raise BadRequest(f"image must be an image name; got {image!r}", reason="bad_image")
    memory = parse_memory(body["memory"]) if body.get("memory") is not None else limits.memory
    check_host_fits(limits, memory, None)
    if limits.max_memory and memory > limits.max_memory:
        raise BadRequest(
            f"memory {memory} bytes is above this node's ceiling of {limits.max_memory} bytes",
            reason="bad_memory",
        )
    cpus = _number(body, "cpus", limits.cpus, float, minimum=0.01)
    check_host_fits(limits, None, cpus)
    if limits.max_cpus and cpus > limits.max_cpus:
        raise BadRequest(
            f"cpus {cpus} is above this node's ceiling of {limits.max_cpus}", reason="bad_cpus"
        )
    pids = _number(body, "pids_limit", limits.pids_limit, int, minimum=16)
    workdir = parse_workdir(body)
    network = body.get("network", "none")
    if network not in ("none", "host", "bridge"):
        raise BadRequest(
            f"network must be none, host or bridge; got {network!r}", reason="bad_network"
        )
    if network != "none" and not limits.allow_network:
        raise BadRequest(
            f"network {network!r} is not allowed on this node (containers run "
            "with network_mode=none; start the agent with --allow-network)",
            reason="network_not_allowed",
        )
    return ContainerSpec(
        image=image.strip(),
        memory=memory,
        cpus=cpus,
        pids_limit=pids,
        env=parse_env(body.get("env")),
        workdir=workdir,
        network=network,
    )


# A cell travels on stdin, never in argv: the kernel caps one argument at 128 KiB. The
# shell reads the whole cell before it runs any of it, so the cell's own commands see an
# empty stdin (as with `sh -c CELL`); a shell without `cat` fails loudly, not silently.
SHELL_FROM_STDIN = [
    "sh",
    "-c",
    '__jr_cell=$(cat) || exit 126\neval "unset __jr_cell\n$__jr_cell"',
]


def parse_command(body: dict) -> tuple[list[str], bytes | None]:
    """The argv to exec and the bytes for its stdin: shell and Python source go on stdin.

    Python parses all of stdin (`python3 -`) before it runs a line, and keeps sys.path[0]
    as '' like `-c` does.
    """
    argv = parse_argv(body)
    key = "command" if body.get("command") is not None else "python"
    if body.get(key) is None:
        return argv, None
    try:
        source = body[key].encode()
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{key} is not valid text: {exc.reason}", reason="bad_command") from None
    return (list(SHELL_FROM_STDIN) if key == "command" else [argv[0], "-"]), source


def parse_argv(body: dict) -> list[str]:
    """The command as argv: shell by default, Python source with "python", or raw "argv"."""
    given = [k for k in ("command", "python", "argv") if body.get(k) is not None]
    if len(given) != 1:
        raise BadRequest(
            "give exactly one of command (shell), python (source) or argv (list)",
            reason="bad_command",
        )
    key = given[0]
    value = body[key]
    if key == "argv":
        if not value or not all(isinstance(a, str) for a in value) or not isinstance(value, list):
            raise BadRequest("argv must be a non-empty list of strings", reason="bad_command")
        return list(value)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key} must be a non-empty string", reason="bad_command")
    if key == "python":
        interpreter = body.get("interpreter", "python3")
        if not isinstance(interpreter, str) or not interpreter:
            raise BadRequest("interpreter must be a program name", reason="bad_command")
        return [interpreter, "-c", value]
    return ["sh", "-c", value]
