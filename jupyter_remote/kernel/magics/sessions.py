"""This kernel's session container: where its cells go, and Python variables moved in and
out of it (-i/-o, %remote_push, %remote_pull); %remote_cleanup and %remote_config."""

from __future__ import annotations

import argparse
import atexit

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from jupyter_remote.kernel import variables
from jupyter_remote.kernel.magics.args import (
    UsesRemote,
    kernel_id,
    names,
    one_line_errors,
    timeout,
)
from jupyter_remote.protocol import SIGNALS
from jupyter_remote.protocol.errors import RemoteError

SIDE_CELL_TIMEOUT = 600  # seconds a cell that moves variables may take
# what a side cell does not take from its cell: the code, its time limit, and what files
# an execution under the notebook's cell (a reloaded page would show the side cell's output)
SIDE_CELL_DROPS = ("command", "python", "timeout", "cell_id", "execution_count")


class KernelSession:
    """RemoteMagics' part that places cells in this kernel's session and moves variables.

    Uses the magics' `client`, `owner`, `shell`, `default_image` and `variables_limit`.
    """

    _server_kernel: bool | None = None  # did this server start our kernel?
    _owns_sessions = False  # the server made sessions for self.owner (other kernels)

    def _place(self, body: dict, fresh: bool) -> None:
        """This kernel's session: the server's own for kernels it started; otherwise one
        the magics own (nbval, VS Code, a terminal IPython), removed when the kernel exits."""
        if fresh:
            body["fresh"] = True
            return
        kid = kernel_id()
        if kid and self._server_kernel is None:
            self._server_kernel = self.client.kernel_sessions(kid)["known_kernel"]
        if kid and self._server_kernel:
            body["kernel_id"] = kid
            return
        # The server keeps one session per owner and image, as it does for its own kernels:
        # made on first use, replaced with a notice when its node culled it for idling.
        if not self._owns_sessions:
            atexit.register(self._cleanup_own, self.owner)
            self._owns_sessions = True
        body["owner"] = self.owner

    def _cleanup_own(self, owner: str) -> None:
        try:
            self.client.delete_sessions(owner)
        except RemoteError:
            pass

    def _session_body(self, image: str | None) -> dict:
        body = {}
        if image or self.default_image:
            body["image"] = image or self.default_image
        with one_line_errors():
            self._place(body, fresh=False)
        return body

    def _side_cell(self, body: dict, code: str) -> str:
        """Run `code` in the same interpreter as the cell, quietly; its stdout."""
        side = {k: v for k, v in body.items() if k not in SIDE_CELL_DROPS}
        side.update(python=code, timeout=SIDE_CELL_TIMEOUT)
        with one_line_errors():
            execution = self.client.execute(**side)
            result = execution.wait()
            if execution.error is not None:
                raise execution.error
        last = execution.exit or {}
        if last.get("returncode") != 0:
            raise UsageError(f"[remote] moving variables failed: {last.get('message') or last}")
        return result.stdout

    def _push(self, body: dict, wanted: list[str]) -> None:
        missing = [n for n in wanted if n not in self.shell.user_ns]
        if missing:
            raise UsageError(f"[remote] -i: no local variable {missing[0]!r}")
        values = {n: self.shell.user_ns[n] for n in wanted}
        try:
            code = variables.push_code(values, self.variables_limit)
        except variables.VariableError as exc:
            raise UsageError(f"[remote] {exc}") from None
        _, errors = variables.parse_marks(self._side_cell(body, code))
        if errors:
            name, why = next(iter(errors.items()))
            raise UsageError(f"[remote] cannot load {name!r} in the remote session: {why}")

    def _pull(self, body: dict, wanted: list[str]) -> None:
        found, errors = variables.parse_marks(
            self._side_cell(body, variables.pull_code(wanted, self.variables_limit))
        )
        for name, blob in found.items():
            try:
                self.shell.user_ns[name] = variables.load(name, blob)
            except variables.VariableError as exc:
                errors[name] = str(exc)
        if errors:
            name, why = next(iter(errors.items()))
            raise UsageError(f"[remote] -o {name}: {why}")


@magics_class
class SessionMagics(UsesRemote):
    """%remote_push, %remote_pull, %remote_cleanup and %remote_config."""

    @magic_arguments()
    @argument("names", nargs="+", help="Local variables to send.")
    @argument("--image", help="The session's image (default: the default image).")
    @line_magic
    def remote_push(self, line: str):
        """Send local variables into this kernel's remote Python session (by pickle).

        Example::

            %remote_push df params
        """
        args = parse_argstring(self.remote_push, line)
        wanted = [n for item in args.names for n in names(item)]
        remote = self.remote
        remote._push(remote._session_body(args.image), wanted)
        print(f"sent {', '.join(wanted)}")

    @magic_arguments()
    @argument("names", nargs="+", help="Remote variables to bring back.")
    @argument("--image", help="The session's image (default: the default image).")
    @line_magic
    def remote_pull(self, line: str):
        """Bring variables of this kernel's remote Python session into the kernel.

        Example::

            %remote_pull model_metrics
        """
        args = parse_argstring(self.remote_pull, line)
        wanted = [n for item in args.names for n in names(item)]
        remote = self.remote
        remote._pull(remote._session_body(args.image), wanted)
        print(f"received {', '.join(wanted)}")

    @line_magic
    def remote_cleanup(self, line: str):
        """Remove this kernel's session containers on their nodes (files in them go too).

        Example::

            %remote_cleanup
        """
        remote, kid = self.remote, kernel_id()
        removed = []
        with one_line_errors():
            if kid:
                removed += remote.client.cleanup_kernel(kid)
            if remote._owns_sessions:
                removed += remote.client.delete_sessions(remote.owner)
        print(f"removed {len(removed)} session container(s)")

    @line_magic
    def remote_config(self, line: str):
        """Show where cells go and the defaults; set a default with NAME=VALUE.

        Examples::

            %remote_config
            %remote_config default_image=jupyter-remote/busybox:local
            %remote_config signal_on_interrupt=SIGINT
        """
        remote = self.remote
        for item in line.split():
            name, sep, value = item.partition("=")
            if not sep or name not in ("default_image", "default_timeout", "signal_on_interrupt"):
                raise UsageError(
                    f"%remote_config takes default_image=, default_timeout= or "
                    f"signal_on_interrupt=; got {item!r}"
                )
            if name == "signal_on_interrupt" and value not in SIGNALS:
                raise UsageError(f"signal_on_interrupt must be one of {', '.join(SIGNALS)}")
            if name == "default_timeout":
                try:
                    value = timeout(value, zero_means_default=True)
                except argparse.ArgumentTypeError as exc:
                    raise UsageError(f"default_{exc}") from None
            setattr(remote, name, value)
        kid = kernel_id()
        with one_line_errors():
            status = remote.client.status()
            known = kid and remote.client.kernel_sessions(kid)["known_kernel"]
        busy = status.get("busy", 0)  # under CPU/memory pressure: usable, others preferred
        kernel = (
            f"{kid} (started by this server, which keeps its sessions)"
            if known
            else f"{kid or 'not named by a connection file'} (not started by this "
            f"server; the magics keep its sessions as {remote.owner})"
        )
        print(
            f"server: {remote.client.server_url}\nkernel: {kernel}\n"
            f"nodes: {status['healthy'] + busy} usable of {status['nodes']} "
            f"({status['healthy']} healthy, {busy} busy)\n"
            f"default_image: {default_image(remote.default_image, status)}\n"
            f"default_timeout: {remote.default_timeout or '(agent default)'}\n"
            f"signal_on_interrupt: {remote.signal_on_interrupt}"
        )


def default_image(set_here: str, status: dict) -> str:
    """The image a cell that names none runs in: this kernel's setting, else the server's
    default as its status names it."""
    if set_here:
        return f"{set_here} (set in this kernel)"
    if status.get("default_image"):
        return f"{status['default_image']} (the server's default)"
    return "the server's default (this server does not name it)"
