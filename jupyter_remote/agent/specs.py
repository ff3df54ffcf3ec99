"""What only the agent knows about a request: its defaults, ceilings and host.

The wire types (ids, finite numbers, image names, env, memory sizes) are checked by the
models in `jupyter_remote.protocol`; this module turns a typed body into a ContainerSpec
within this node's limits, and a command into the argv and stdin it runs with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jupyter_remote.protocol.bodies import CommandFields, ContainerFields, memory_bytes
from jupyter_remote.protocol.common import ID_RE
from jupyter_remote.protocol.errors import BadRequest
from jupyter_remote.protocol.validation import parse_body

_NAME_SAFE_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")

# Every Linux capability (capabilities(7)), without the CAP_ prefix.
ALL_CAPS = frozenset(
    """AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND BPF CHECKPOINT_RESTORE CHOWN
    DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID IPC_LOCK IPC_OWNER KILL LEASE
    LINUX_IMMUTABLE MAC_ADMIN MAC_OVERRIDE MKNOD NET_ADMIN NET_BIND_SERVICE NET_BROADCAST
    NET_RAW PERFMON SETFCAP SETGID SETPCAP SETUID SYS_ADMIN SYS_BOOT SYS_CHROOT SYS_MODULE
    SYS_NICE SYS_PACCT SYS_PTRACE SYS_RAWIO SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG SYSLOG
    WAKE_ALARM""".split()
)
# What every container keeps after cap_drop=ALL (docs/security.md says why each one): what
# package managers (apt/dpkg, pip, apk) and common tools do as root in their own container.
KEPT_CAPS = (
    "CHOWN",  # dpkg, tar, cp -a: give files their owners
    "DAC_OVERRIDE",  # root writes files it does not own (apt's lists, 0644 files of others)
    "FOWNER",  # chmod/utime on files of other owners (dpkg, tar -p)
    "FSETID",  # keep setuid/setgid bits when dpkg or tar sets modes
    "SETUID",  # apt drops to _apt, su/runuser/gosu switch user
    "SETGID",  # the same for groups, initgroups()
    "KILL",  # root signals processes running as another user (a cell's su'd child)
    "NET_BIND_SERVICE",  # a service task listening on a port below 1024 (network none: local)
)


def normalize_cap(name: str) -> str:
    """NET_RAW from net_raw, CAP_NET_RAW or cap_net_raw."""
    name = name.strip().upper()
    return name[4:] if name.startswith("CAP_") else name


def parse_caps(text: str) -> frozenset[str]:
    """Capabilities from a comma-separated list (the agent's --allow-extra-caps); ValueError
    names the unknown ones. ALL stands for every capability."""
    names = {normalize_cap(n) for n in text.split(",") if n.strip()}
    if "ALL" in names:
        return ALL_CAPS
    unknown = sorted(names - ALL_CAPS)
    if unknown:
        raise ValueError(f"unknown capabilities {', '.join(unknown)}")
    return frozenset(names)


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
    allow_caps: frozenset[str] = frozenset()  # what a request's cap_add may name
    tmp_size: int = 256 << 20  # the /tmp tmpfs of a read_only container
    gpus_visible: tuple[int, ...] | None = None  # None: what NVML sees (gpus.py)
    gpu_sharing: bool = False  # may two holders hold one GPU at once
    gpu_mode: str = "device_requests"  # or "env": NVIDIA_VISIBLE_DEVICES only (gpus.py)
    keep_failed: bool = False  # leave containers Docker could not start, for docker inspect


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
    user: str | None = None  # None: the image's user
    read_only: bool = False
    cap_add: tuple[str, ...] = ()  # on top of KEPT_CAPS
    tmp_size: int = 0  # the /tmp tmpfs when read_only
    gpus: tuple[int, ...] = ()  # the device indices it was given (gpus.py)
    gpu_request: int | tuple[int, ...] | None = None  # what was asked: a count or indices

    def to_json(self) -> dict:
        out = {
            "image": self.image,
            "memory": self.memory,
            "cpus": self.cpus,
            "pids_limit": self.pids_limit,
            "workdir": self.workdir,
            "network": self.network,
            "env": sorted(self.env),
        }
        if self.user is not None:
            out["user"] = self.user
        if self.read_only:
            out["read_only"] = True
            out["tmp_size"] = self.tmp_size
        if self.cap_add:
            out["cap_add"] = list(self.cap_add)
        if self.gpu_request is not None:
            out["gpu_request"] = (
                self.gpu_request if isinstance(self.gpu_request, int) else list(self.gpu_request)
            )
        if self.gpus:
            out["gpus"] = list(self.gpus)
        return out

    @classmethod
    def from_json(cls, data: dict) -> ContainerSpec:
        """Back from a record's spec (to_json with the env's values); absent fields default."""
        env = data.get("env") or {}
        return cls(
            image=data["image"],
            memory=data["memory"],
            cpus=data["cpus"],
            pids_limit=data["pids_limit"],
            env=dict(env) if isinstance(env, dict) else {},
            workdir=data.get("workdir"),
            network=data.get("network", "none"),
            user=data.get("user"),
            read_only=bool(data.get("read_only", False)),
            cap_add=tuple(data.get("cap_add") or ()),
            tmp_size=int(data.get("tmp_size", 0)),
            gpus=tuple(data.get("gpus") or ()),
            gpu_request=gpu_request(data.get("gpu_request")),
        )


def gpu_request(value: int | list[int] | tuple[int, ...] | None):
    """A body's gpus as the spec keeps it: a count, a tuple of indices, or None."""
    if value is None or isinstance(value, int):
        return value
    return tuple(value)


def check_id(value: object, what: str) -> str:
    """An id a client made: short, printable, safe in file and container names (full match)."""
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
    """Bytes from 536870912, "512m", "1g", "1.5GiB" (the agent's own options use it too)."""
    try:
        return memory_bytes(value)
    except ValueError as exc:
        raise BadRequest(f"memory {exc}", reason="bad_memory") from None


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


def container_spec(body: ContainerFields, limits: Limits, default_image: str) -> ContainerSpec:
    """A typed body's container, with this node's defaults, within its ceilings and host."""
    memory = body.memory if body.memory is not None else limits.memory
    cpus = body.cpus if body.cpus is not None else limits.cpus
    check_host_fits(limits, memory, cpus)
    if limits.max_memory and memory > limits.max_memory:
        raise BadRequest(
            f"memory {memory} bytes is above this node's ceiling of {limits.max_memory} bytes",
            reason="bad_memory",
        )
    if limits.max_cpus and cpus > limits.max_cpus:
        raise BadRequest(
            f"cpus {cpus} is above this node's ceiling of {limits.max_cpus}", reason="bad_cpus"
        )
    network = body.network or "none"
    if network != "none" and not limits.allow_network:
        raise BadRequest(
            f"network {network!r} is not allowed on this node (containers run "
            "with network_mode=none; start the agent with --allow-network)",
            reason="network_not_allowed",
        )
    read_only = bool(body.read_only)
    return ContainerSpec(
        image=body.image or default_image,
        memory=memory,
        cpus=float(cpus),
        pids_limit=body.pids_limit if body.pids_limit is not None else limits.pids_limit,
        env=dict(body.env or {}),
        workdir=body.workdir,
        network=network,
        user=body.user,
        read_only=read_only,
        cap_add=check_cap_add(body.cap_add, limits),
        tmp_size=limits.tmp_size if read_only else 0,
        gpu_request=gpu_request(body.gpus),
    )


def check_cap_add(requested: list[str] | None, limits: Limits) -> tuple[str, ...]:
    """A request's extra capabilities: known, and each one this node allows (400 otherwise)."""
    if not requested:
        return ()
    names = sorted({normalize_cap(n) for n in requested} - set(KEPT_CAPS))
    unknown = [n for n in names if n not in ALL_CAPS]
    if unknown:
        raise BadRequest(
            f"cap_add: unknown capabilities {', '.join(unknown)}", reason="bad_cap_add"
        )
    refused = [n for n in names if n not in limits.allow_caps]
    if refused:
        allowed = ", ".join(sorted(limits.allow_caps)) or "none"
        raise BadRequest(
            f"cap_add: {', '.join(refused)} not allowed on this node (allowed: {allowed}; "
            "start the agent with --allow-extra-caps)",
            reason="cap_not_allowed",
            allowed=sorted(limits.allow_caps),
        )
    return tuple(names)


# A cell travels on stdin, never in argv: the kernel caps one argument at 128 KiB. The
# shell reads the whole cell before it runs any of it, so the cell's own commands see an
# empty stdin (as with `sh -c CELL`); a shell without `cat` fails loudly, not silently.
# bash runs it when the image has bash (as in a live session: docs/runner.md), else sh;
# `unset` on the cell's first line keeps its line numbers in the shell's messages.
SHELL_FROM_STDIN = [
    "sh",
    "-c",
    'command -v bash >/dev/null 2>&1 && exec bash -c "$1" bash; __jr_w=$1; shift; eval "$__jr_w"',
    "sh",
    'unset __jr_w; __jr_cell=$(cat) || exit 126; eval "unset __jr_cell;$__jr_cell"',
]


def argv_of(body: CommandFields) -> list[str]:
    """The command as argv: shell by default, Python source with "python", or raw "argv"."""
    if body.argv is not None:
        return list(body.argv)
    if body.python is not None:
        return [body.interpreter or "python3", "-c", body.python]
    return ["sh", "-c", body.command]


def command_of(body: CommandFields) -> tuple[list[str], bytes | None]:
    """The argv to exec and the bytes for its stdin: shell and Python source go on stdin.

    Python parses all of stdin (`python3 -`) before it runs a line, and keeps sys.path[0]
    as '' like `-c` does.
    """
    argv = argv_of(body)
    key = "command" if body.command is not None else "python"
    text = body.command if key == "command" else body.python
    if text is None:
        return argv, None
    try:
        source = text.encode()
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{key} is not valid text: {exc.reason}", reason="bad_command") from None
    return (list(SHELL_FROM_STDIN) if key == "command" else [argv[0], "-"]), source


# -- dict-taking wrappers, kept while the server extension still imports them ------------
def _only(model, body: dict) -> dict:
    return {k: v for k, v in body.items() if k in model.model_fields}


def parse_container_spec(body: dict, limits: Limits, default_image: str) -> ContainerSpec:
    """Deprecated: parse with the protocol's models and call container_spec()."""
    return container_spec(
        parse_body(ContainerFields, _only(ContainerFields, body)), limits, default_image
    )


def parse_argv(body: dict) -> list[str]:
    """Deprecated: parse with the protocol's models and call argv_of()."""
    return argv_of(parse_body(CommandFields, _only(CommandFields, body)))
