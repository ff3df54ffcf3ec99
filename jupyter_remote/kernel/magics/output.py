"""%remote_output: any execution's output, shown again in any notebook.

The server keeps each execution's record and its node keeps the output, across restarts of
every process; this renders them as the cell did, and follows a running one live to its end.
"""

from __future__ import annotations

import re
import sys

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from jupyter_remote.kernel.execution import EventFold, RemoteResult
from jupyter_remote.kernel.magics.args import UsesRemote, kernel_id, one_line_errors
from jupyter_remote.protocol.common import ID_PATTERN
from jupyter_remote.protocol.errors import RemoteError


@magics_class
class OutputMagics(UsesRemote):
    """Show an execution's output from the server's record and its node's log."""

    @magic_arguments()
    @argument(
        "execution_id",
        nargs="?",
        help="The execution (default: this kernel's last %%remote cell).",
    )
    @argument(
        "--no-follow",
        action="store_true",
        help="Show what it wrote so far and return, even while it still runs.",
    )
    @line_magic
    def remote_output(self, line: str):
        """Show an execution's whole output here — stdout and stderr apart, its displays,
        its exit line — and, while it runs, follow it live to its end. Works for any
        execution the server knows: another notebook's, one that ended while no page was
        open, one from before a server restart. The result is kept in `_remote_output`.

        Examples::

            %remote_output
            %remote_output x-3fa2c1d0e4b5 --no-follow
        """
        args = parse_argstring(self.remote_output, line)
        execution_id = args.execution_id or self._last()
        if not re.match(ID_PATTERN, execution_id):
            raise UsageError(f"[remote] not an execution id: {execution_id!r}")
        with one_line_errors():
            record = self.client.execution(execution_id)
            stream = self.client.execution_events(execution_id, follow=not args.no_follow)
        result = RemoteResult(execution_id, node_id=record.get("node_id"))
        fold = EventFold(result, echo=True)
        try:
            for event in stream:
                fold.feed(event)
        except KeyboardInterrupt:
            stream.close()
            print(
                f"[remote] stopped showing {execution_id} (it was not cancelled)", file=sys.stderr
            )
        except RemoteError as exc:
            raise UsageError(f"[remote] {exc.message}") from None
        fold.finish()
        self.shell.user_ns["_remote_output"] = result
        sys.stdout.flush()
        if not fold.ended:
            result.status, result.returncode = record.get("status"), record.get("returncode")
            print(f"[remote] {execution_id}: no exit yet (status {result.status})", file=sys.stderr)
            return
        result.image = result.image or record.get("image")
        self.remote.render_end(result, raise_=False, ended=True)  # as the cell itself ended

    def _last(self) -> str:
        """This kernel's last execution: the last %%remote cell's, else the server's."""
        last = self.shell.user_ns.get("_remote")
        if isinstance(last, RemoteResult) and last.execution_id:
            return last.execution_id
        kid = kernel_id()
        with one_line_errors():
            rows = self.client.executions(kernel_id=kid, limit=1) if kid else []
        if not rows:
            raise UsageError("[remote] no execution yet in this kernel: give an execution id")
        return rows[0]["execution_id"]
