"""The shell cells run with (bash when the image has it, else ``/bin/sh``), how a cell is
handed to it, and the state carried from one shell cell to the next: the working directory
and the exported environment, written by each cell's EXIT trap and read back by the runner.

The environment is written by the builtin ``export -p`` where the runner can read its
output back exactly (bash's ``declare -x``, dash's and busybox ash's ``export``: checked
once at start, ``ShellState.prepare``), else by ``env``: a fork and exec of ``env`` was
~1-3 ms of every shell cell.

A cell is read from its file into a variable and ``eval``-ed, not sourced: the shell's
messages then say ``bash: line 2: foo: command not found``, with the cell's own line
numbers and no path of the runner's files (``.`` names the file it reads).
"""

from __future__ import annotations

import os
import re
import shutil
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


def read_and_eval(name: str) -> str:
    """Read the cell from the file named in ``$__jr_c`` (bash without a fork) and eval it;
    ``unset`` on its first line keeps the cell's line numbers."""
    read = '$(<"$__jr_c")' if name == "bash" else '$(cat "$__jr_c")'
    return "__jr_c=" + read + ' || exit 126; eval "unset __jr_c;$__jr_c"'


def shell_wrapper(state: str, name: str = "sh") -> str:
    """The cell comes in a file (no argv size limit); on EXIT the working directory and the
    exported environment go to state files."""
    return "__jr_c=$1; __jr_s=$2; shift 2; " + shell_trap(state) + read_and_eval(name)


def spare_wrapper(state: str, name: str = "sh") -> str:
    """The same, for a shell started ahead of its cell (a spare, see shell_cells.py): it
    waits for the cell file's and the state files' paths on stdin, a pipe; the cell itself
    gets /dev/null. A closed pipe (a spare no longer wanted) ends it at once, doing nothing."""
    return (
        "IFS= read -r __jr_c && IFS= read -r __jr_s || exit 0; exec </dev/null; "
        + shell_trap(state)
        + read_and_eval(name)
    )


def find_shell() -> str:
    """bash when the image has it (brace expansion, ``[[``, arrays), else /bin/sh."""
    found = shutil.which("bash")
    return found if found and os.access(found, os.X_OK) else "/bin/sh"


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
        self.shell = "/bin/sh"  # what runs shell cells (prepare), and its $0
        self.name = "sh"
        self.parse_exported = parse_export_p

    def prepare(self, reaper: Reaper) -> None:
        self.shell = find_shell()
        self.name = "bash" if self.shell != "/bin/sh" else "sh"
        self.parse_exported = parse_declare_x if self.name == "bash" else parse_export_p
        if export_p_reads_back(reaper, self.shell, self.parse_exported):
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
        for end, parse in ((".exp", self.parse_exported), (".env0", parse_env0)):
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


def export_p_reads_back(reaper: Reaper, shell: str = "/bin/sh", parse=None) -> bool:
    """Does this shell's ``export -p`` give back tricky values exactly? (bash quotes a
    printable value "..." and one with a newline or a control character $'...')"""
    value = "a'b\"c\\d$e`f\n g=h \u00e9''\n\x01\t\x1b!"
    printable = "a'b\"c\\d$e`f! g=h \u00e9''"
    parse = parse or parse_export_p
    try:
        proc = subprocess.Popen(
            [shell, "-c", 'export __jr_t="$1" __jr_u="$2"; export -p', "sh", value, printable],
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
    env = parse(out)
    return env is not None and env.get("__jr_t") == value and env.get("__jr_u") == printable


# bash: declare -x NAME, NAME="..." (\ before " \ $ `) or NAME=$'...' (C escapes)
DECLARE_HEAD = re.compile(rb"declare -[A-Za-z]*x[A-Za-z]* ([A-Za-z_][A-Za-z0-9_]*)(=?)")
DQ_BODY = re.compile(rb'"((?:[^"\\]|\\.)*)"\n', re.S)
DQ_ESCAPE = re.compile(rb'\\([\\"$`])')
C_BODY = re.compile(rb"\$'((?:[^'\\]|\\.)*)'\n", re.S)
C_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|c(.)|(.))", re.S)
C_NAMED = {b"a": 7, b"b": 8, b"e": 27, b"E": 27, b"f": 12, b"n": 10, b"r": 13, b"t": 9, b"v": 11}


def _c_unescape(match) -> bytes:
    octal, hexa, ctrl, other = match.groups()
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    if hexa is not None:
        return bytes([int(hexa, 16)])
    if ctrl is not None:
        return bytes([ctrl[0] & 0x1F])
    return bytes([C_NAMED[other]]) if other in C_NAMED else other


def parse_declare_x(raw: bytes):
    """bash's ``export -p`` (``declare -x``); None for anything else (an array, say)."""
    env, pos = {}, 0
    while pos < len(raw):
        head = DECLARE_HEAD.match(raw, pos)
        if head is None:
            return None
        pos = head.end()
        if not head.group(2):
            if raw[pos : pos + 1] != b"\n":
                return None
            pos += 1
            continue
        body = DQ_BODY.match(raw, pos)
        if body is not None:
            value = DQ_ESCAPE.sub(rb"\1", body.group(1))
        else:
            body = C_BODY.match(raw, pos)
            if body is None:
                return None
            value = C_ESCAPE.sub(_c_unescape, body.group(1))
        env[head.group(1).decode("ascii")] = value.decode("utf-8", "surrogateescape")
        pos = body.end()
    return env


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
