"""The state carried from one shell cell to the next: the working directory and the
exported environment, written by each cell's EXIT trap and read back by the runner.

The environment is written by the builtin ``export -p`` where the runner can read its
output back exactly (dash, busybox ash: checked once at start, ``ShellState.prepare``),
else by ``env``: a fork and exec of ``env`` was ~1-3 ms of every shell cell.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading

try:
    from .children import Child, Reaper
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    from children import Child, Reaper

SETTLE_WAIT = 5.0  # most seconds a cell waits for the state an ended shell cell leaves
STATE_BY_ENV = 'env -0 >"$__jr_s.env0" || env >"$__jr_s.env"'
STATE_BY_EXPORT = 'export -p >"$__jr_s.exp"'
STATE_FILES = (".cwd", ".exp", ".env0", ".env")


def shell_trap(state: str) -> str:
    return (
        'trap \'__jr_rc=$?; { pwd >"$__jr_s.cwd"; '
        + state
        + "; } 2>/dev/null; exit $__jr_rc' EXIT; "
    )


def shell_wrapper(state: str) -> str:
    """The cell is sourced by sh from a file (no argv size limit); on EXIT the working
    directory and the exported environment go to state files."""
    return "__jr_c=$1; __jr_s=$2; shift 2; " + shell_trap(state) + '. "$__jr_c"'


def spare_wrapper(state: str) -> str:
    """The same, for a shell started ahead of its cell (a spare, see shell_cells.py): it
    waits for the cell file's and the state files' paths on stdin, a pipe; the cell itself
    gets /dev/null. A closed pipe (a spare no longer wanted) ends it at once, doing nothing."""
    return (
        "IFS= read -r __jr_c && IFS= read -r __jr_s || exit 0; exec </dev/null; "
        + shell_trap(state)
        + '. "$__jr_c"'
    )


class ShellState:
    """The carried directory and environment, and how a shell cell writes them."""

    def __init__(self):
        self.cwd = os.getcwd()
        self.env = dict(os.environ)
        self.lock = threading.Lock()
        self.generation = 0  # bumped whenever cwd or env change: a spare shell is stale then
        # shell cells that have sent their exit event but not yet left their state here:
        # whoever reads the state waits for them (it is read after the exit, off its way)
        self.settling = 0
        self.settled = threading.Condition(self.lock)
        self.writer = STATE_BY_ENV  # how a shell cell writes its environment (prepare)

    def prepare(self, reaper: Reaper) -> None:
        if export_p_reads_back(reaper):
            self.writer = STATE_BY_EXPORT

    def current(self):
        """(env copy, cwd, generation), once every ended shell cell has left its state."""
        with self.lock:
            self.settled.wait_for(lambda: not self.settling, SETTLE_WAIT)
            return dict(self.env), self.cwd, self.generation

    def leave(self, state: str, overlay: dict, finish) -> None:
        """``finish()`` (the cell's exit), then the state its cell left in the files
        ``state.*`` is taken and the files removed; readers of the state wait meanwhile."""
        with self.lock:
            self.settling += 1
        try:
            finish()  # first: the state files are read after the exit, off its way
            self._take(state, overlay)
            for end in STATE_FILES:
                try:
                    os.unlink(state + end)
                except OSError:
                    pass
        finally:
            with self.lock:
                self.settling -= 1
                self.settled.notify_all()

    def _take(self, state: str, overlay: dict) -> None:
        try:
            with open(state + ".cwd", "rb") as f:
                cwd = f.read().decode("utf-8", "surrogateescape").rstrip("\n")
        except OSError:
            return  # the cell did not get to its EXIT trap (killed, exec): keep the old state
        env = None
        for end, parse in ((".exp", parse_export_p), (".env0", parse_env0)):
            try:
                with open(state + end, "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            if raw:
                env = parse(raw)
                break
        if env is None and self.writer == STATE_BY_EXPORT:
            self.writer = STATE_BY_ENV  # output it could not read: `env` from now on
        if env is None:
            try:
                with open(state + ".env", "rb") as f:
                    env = parse_env_lines(f.read())
            except OSError:
                return
        for key in ("SHLVL", "_", "PWD"):
            env.pop(key, None)
        with self.lock:
            # the request's env applies to its cell only, unless the cell changed it itself
            for key, value in overlay.items():
                if env.get(key) == value:
                    if key in self.env:
                        env[key] = self.env[key]
                    else:
                        env.pop(key, None)
                elif value is None and key not in env and key in self.env:
                    env[key] = self.env[key]
            if env != self.env or (cwd and cwd != self.cwd):
                self.generation += 1  # a spare shell with the old state is stale
            self.env = env
            if cwd:
                self.cwd = cwd


# dash and busybox ash write a value as quoted pieces: '...' (no quote inside) and "''"
# (a run of quotes), e.g. 'it'"'"'s' for it's and ''"''" for ''
EXPORT_ENTRY = re.compile(r"export ([A-Za-z_][A-Za-z0-9_]*)(=(?:'[^']*'|\"'+\")*)?\n")
EXPORT_PIECE = re.compile(r"'([^']*)'|\"('+)\"")


def parse_export_p(raw: bytes):
    """``export -p`` as dash and busybox ash write it; None for anything else."""
    text = raw.decode("utf-8", "surrogateescape")
    env, pos = {}, 0
    while pos < len(text):
        entry = EXPORT_ENTRY.match(text, pos)
        if entry is None:
            return None
        if entry.group(2) is not None:
            pieces = EXPORT_PIECE.findall(entry.group(2), 1)
            env[entry.group(1)] = "".join(quoted + quotes for quoted, quotes in pieces)
        pos = entry.end()
    return env


def export_p_reads_back(reaper: Reaper) -> bool:
    """Does this /bin/sh's ``export -p`` give back a tricky value exactly?"""
    value = "a'b\"c\\d$e`f\n g=h \u00e9''\n"
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", 'export __jr_t="$1"; export -p', "sh", value],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, ValueError):  # no /bin/sh; a value the locale cannot encode
        return False
    child = Child(reaper, proc)
    try:
        out = proc.stdout.read()
    finally:
        proc.stdout.close()
    if child.wait(5) != 0:
        return False
    env = parse_export_p(out)
    return env is not None and env.get("__jr_t") == value


def parse_env0(raw: bytes) -> dict:
    env = {}
    for item in raw.decode("utf-8", "surrogateescape").split("\0"):
        if "=" in item:
            key, value = item.split("=", 1)
            env[key] = value
    return env


ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def parse_env_lines(raw: bytes) -> dict:
    """``env`` output without ``-0``: a line not starting NAME= continues the last value."""
    env = {}
    key = None
    for line in raw.decode("utf-8", "surrogateescape").split("\n"):
        if ENV_LINE.match(line):
            key, value = line.split("=", 1)
            env[key] = value
        elif key is not None:
            env[key] += "\n" + line
    if key is not None and env[key].endswith("\n"):
        env[key] = env[key][:-1]
    return env
