"""What the magics share: argument types checked with the protocol's own types, shared
options, one-line errors, this kernel's id, and the way to the RemoteMagics state."""

from __future__ import annotations

import argparse
import os
import re

from IPython.core.error import UsageError
from IPython.core.magic import Magics
from IPython.core.magic_arguments import argument
from pydantic import TypeAdapter, ValidationError

from jupyter_remote.protocol.bodies import Memory
from jupyter_remote.protocol.common import (
    MAX_GPUS,
    MAX_LABELS,
    MAX_TIMEOUT,
    Cpus,
    Gpus,
    PidsLimit,
    PlacementLabels,
    Seconds,
)
from jupyter_remote.protocol.errors import RemoteError
from jupyter_remote.protocol.rules import DEFAULT_COMMAND_TIMEOUT
from jupyter_remote.protocol.server_bodies import CELL_ID_PATTERN

DEFAULT = f"{DEFAULT_COMMAND_TIMEOUT:g} s"  # the agent's time limit when none is given


def _checked(kind, text: str, what: str, rule: str, convert=float):
    """A magic's argument through the protocol's own type, so the kernel refuses exactly
    what the server would (one line, before anything is sent)."""
    try:
        return TypeAdapter(kind).validate_python(convert(text.strip()))
    except (ValueError, ValidationError):
        raise argparse.ArgumentTypeError(f"{what} must be {rule}; got {text!r}") from None


def timeout(text: str, zero_means_default: bool = False) -> float:
    """Seconds > 0 and finite: 0 would silently mean the agent's default, 1800 s."""
    if zero_means_default and text.strip() in ("0", "0.0"):
        return 0.0
    rule = f"> 0 seconds and at most {int(MAX_TIMEOUT)} (30 days)"
    if not zero_means_default:
        rule += f" (leave it out for the default, {DEFAULT})"
    return _checked(Seconds, text, "timeout", rule)


def memory(text: str) -> str:
    """A size the agent takes (512m, 2g, 1.5GiB, bytes), checked before anything is sent."""
    rule = "a size like 512m or 2g (units k, m, g, t; at least 6m)"
    _checked(Memory, text, "memory", rule, convert=lambda t: int(t) if t.isdigit() else t)
    return text.strip()


def cpus(text: str) -> float:
    return _checked(Cpus, text, "cpus", "a finite number of CPUs like 0.5 or 2 (0.01 to 1024)")


def pids(text: str) -> int:
    rule = "a whole number of processes, at least 16"
    return _checked(PidsLimit, text, "pids-limit", rule, convert=int)


def gpus(text: str) -> int | list[int]:
    """N (that many free GPUs) or I,J,... (those devices), checked before anything is sent."""
    rule = f"a count 1 to {MAX_GPUS} or device indices like 0,2 (distinct, 0 to 1023)"

    def convert(t: str) -> int | list[int]:
        return [int(i) for i in t.split(",")] if "," in t else int(t)

    return _checked(Gpus, text, "gpus", rule, convert=convert)


def label_pairs(items: list[str]) -> dict[str, str]:
    """--on LABEL=VALUE, repeated, as a dict: only nodes with all these labels."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--on takes LABEL=VALUE; got {item!r}")
        pairs[key.strip()] = value.strip()
    try:
        return TypeAdapter(PlacementLabels).validate_python(pairs)
    except ValidationError:
        raise UsageError(
            f"--on takes LABEL=VALUE (at most {MAX_LABELS}); a LABEL is letters, digits and "
            f". _ / - (up to 128), a VALUE up to 255 characters; got {' '.join(items)!r}"
        ) from None


def names(text: str) -> list[str]:
    """NAME[,NAME...] of Python variables."""
    found = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in found if not n.isidentifier()]
    if not found or bad:
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...] of variables; got {text!r}")
    return found


def env_pairs(items: list[str]) -> dict[str, str]:
    """--env NAME=VALUE, repeated, as a dict."""
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--env takes NAME=VALUE; got {item!r}")
        env[name] = value
    return env


def no_progress(func):
    """--no-progress: the transfer magics' switch for their progress bar."""
    return argument("--no-progress", action="store_true", help="Never show a progress bar.")(func)


def kernel_id() -> str | None:
    """This kernel's id, from its connection file (None outside a Jupyter kernel)."""
    try:
        from ipykernel.connect import get_connection_file
    except ImportError:
        return None
    try:
        name = os.path.basename(get_connection_file())
    except RuntimeError:
        return None
    return name[len("kernel-") : -len(".json")] if name.startswith("kernel-") else None


def cell_id() -> str | None:
    """The running cell's id as JupyterLab sent it (the execute request's metadata
    `cellId`): the server files the execution under it, so a reloaded page finds it."""
    try:
        from IPython import get_ipython

        parent = get_ipython().kernel.get_parent()
    except Exception:  # noqa: BLE001 - a terminal IPython has no kernel, older ones no get_parent
        return None
    value = (parent or {}).get("metadata", {}).get("cellId")
    # the server's rule (nbformat's): an id it would refuse is not sent at all
    return value if isinstance(value, str) and re.fullmatch(CELL_ID_PATTERN, value) else None


class one_line_errors:
    """Turn a RemoteError into one clear line (a UsageError), not a traceback."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, RemoteError):
            raise UsageError(f"[remote] {exc.message}") from None
        return False


class UsesRemote(Magics):
    """Base of the magics that work with RemoteMagics' client, session and defaults."""

    @property
    def remote(self):
        """The RemoteMagics of this shell (registered by %load_ext jupyter_remote)."""
        magics = self.shell.magics_manager.registry.get("RemoteMagics")
        if magics is None:
            raise UsageError("[remote] load the extension first: %load_ext jupyter_remote")
        return magics

    @property
    def client(self):
        return self.remote.client
