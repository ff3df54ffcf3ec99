"""%%remote: parse the cell's options, run it as an Execution, render the outcome.

RemoteMagics also holds what the other magics share: the client, the defaults (traits,
`c.RemoteMagics.*`) and this kernel's session (sessions.py).
"""

from __future__ import annotations

import sys
import uuid

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display, publish_display_data
from traitlets import Bool, Float, Int, Unicode

from jupyter_remote.kernel.client import RemoteClient
from jupyter_remote.kernel.execution import RemoteResult
from jupyter_remote.kernel.footer import footer_bundle, footer_line
from jupyter_remote.kernel.magics import args as types
from jupyter_remote.kernel.magics.args import DEFAULT, cell_id, kernel_id
from jupyter_remote.kernel.magics.sessions import KernelSession
from jupyter_remote.protocol import SIGNALS
from jupyter_remote.protocol.common import MAX_TIMEOUT
from jupyter_remote.protocol.errors import RemoteError


class RemoteCommandFailed(Exception):
    """Raised by ``%%remote --raise`` for a non-zero exit, and for a cell the pool refused
    (nothing ran), so "Run all" stops there."""

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the one line says it all (ipyparallel
        does the same), and IPython's one custom_exc slot stays free for others."""
        return [str(self)]


@magics_class
class RemoteMagics(KernelSession, Magics):
    """Run cells on the pool of Docker hosts behind the Jupyter server."""

    signal_on_interrupt = Unicode(
        "SIGTERM",
        help="Signal sent to a remote shell cell when the kernel is interrupted (SIGKILL "
        "follows after the agent's grace period). A --python cell gets SIGINT, a "
        "KeyboardInterrupt in its interpreter, as a local cell does.",
    ).tag(config=True)
    footer = Bool(
        True,
        help="End each %%remote cell whose command ran with one quiet line: node · image · "
        "duration · exit.",
    ).tag(config=True)
    default_image = Unicode(
        "", help="Image for %%remote cells that name none (empty: the server's default)."
    ).tag(config=True)
    default_timeout = Float(
        0,
        help=f"Timeout in seconds for %%remote cells that give none "
        f"(0: the agent's default, {DEFAULT}).",
    ).tag(config=True)
    variables_limit = Int(
        16 << 20,
        help="Most bytes of pickled variables one -i/-o/%remote_push/%remote_pull moves "
        "(they travel inside a cell; move larger data with %remote_put/%remote_get).",
    ).tag(config=True)
    interrupt_wait = Float(
        30,
        help="After an interrupt, seconds to wait for the command's real exit (its last "
        "output, its returncode) before giving up; a second interrupt gives up at once.",
    ).tag(config=True)

    def __init__(self, shell, client: RemoteClient | None = None) -> None:
        super().__init__(shell)
        self._client = client
        kid = kernel_id()
        self.owner = f"kernel-{kid}" if kid else f"ipython-{uuid.uuid4().hex[:12]}"

    @property
    def client(self) -> RemoteClient:
        if self._client is None:
            self._client = RemoteClient()
        return self._client

    @magic_arguments()
    @argument("--node", "-n", help="Run on this node (default: the pool's choice).")
    @argument("--image", help="Container image (default: the server's).")
    @argument(
        "--input",
        "-i",
        type=types.names,
        metavar="NAME[,NAME...]",
        help="With --python: send these local variables into the remote interpreter first.",
    )
    @argument(
        "--timeout",
        "-t",
        type=types.timeout,
        help=f"Kill the command after this many seconds (> 0, at most {MAX_TIMEOUT}).",
    )
    @argument(
        "--memory",
        "-m",
        type=types.memory,
        help="Memory limit, e.g. 512m or 2g (a session takes it when it is made).",
    )
    @argument("--cpus", type=types.cpus, help="CPU limit, e.g. 0.5 or 2.")
    @argument("--pids-limit", type=types.pids, help="Most processes at once, e.g. 256.")
    @argument(
        "--gpus",
        type=types.gpus,
        metavar="N|I,J",
        help="GPUs: N free ones of the node, or these device indices (a session takes them "
        "when it is made; no two holders share one).",
    )
    @argument(
        "--on",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="Only on nodes with this label, e.g. --on zone=eu-1 (repeatable: all must match).",
    )
    @argument(
        "--env",
        "-e",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Environment variable for the command (repeatable).",
    )
    @argument("--python", "-p", action="store_true", help="The cell is Python source.")
    @argument(
        "--fresh",
        action="store_true",
        help="A new container, removed afterwards, instead of this kernel's session.",
    )
    @argument(
        "--detach",
        "-d",
        action="store_true",
        help="Start the cell as a job, show its widget, and return at once.",
    )
    @argument("--name", help="Name of the job (with --detach).")
    @argument(
        "--output",
        "-o",
        type=types.names,
        metavar="NAME[,NAME...]",
        help="With --python: bring these remote variables back into the kernel after the cell.",
    )
    @argument(
        "--result",
        metavar="NAME",
        help="Keep the result (stdout, stderr, returncode, ...) in variable NAME.",
    )
    @argument(
        "--raise",
        dest="raise_",
        action="store_true",
        help="Raise RemoteCommandFailed on a non-zero exit, so 'Run all' stops.",
    )
    @argument(
        "--signal-on-interrupt",
        choices=SIGNALS,
        help="Signal for the remote command when the kernel is interrupted.",
    )
    @cell_magic
    def remote(self, line: str, cell: str):
        """Run the cell on a remote Docker host; output streams back live.

        By default the cell is a shell script run in this kernel's session container,
        which keeps its files from one cell to the next; stdout and stderr arrive apart,
        as they are produced. The kernel's interrupt button cancels the command on the node.

        Examples::

            %%remote
            echo hello from $(hostname); ls /tmp

            %%remote --python --memory 1g --result r
            import platform; print(platform.node())

            %%remote --python -i df -o summary
            summary = df.describe()

            %%remote --fresh --image jupyter-remote/busybox:local --timeout 60
            uname -a

            %%remote --detach --name nightly
            ./run_tests.sh
        """
        args = parse_argstring(self.remote, line)
        env = types.env_pairs(args.env)
        body = {"python" if args.python else "command": cell}
        for key, value in (
            ("node", args.node),
            ("image", args.image or self.default_image),
            ("timeout", args.timeout or self.default_timeout),
            ("memory", args.memory),
            ("cpus", args.cpus),
            ("pids_limit", args.pids_limit),
            ("gpus", args.gpus),
            ("on", types.label_pairs(args.on) if args.on else None),
        ):
            if value:
                body[key] = value
        if env:
            body["env"] = env
        if (cid := cell_id()) is not None:  # a reloaded page finds the cell's output by it
            body["cell_id"] = cid
        if isinstance(count := getattr(self.shell, "execution_count", None), int):
            body["execution_count"] = count  # tracebacks say Cell In[N], as IPython's
        if (args.input or args.output) and (not args.python or args.detach or args.fresh):
            raise UsageError("-i/-o move Python variables: they need --python in the session")
        if args.detach:
            return self._detach(body, args.name)
        sig = args.signal_on_interrupt or ("SIGINT" if args.python else self.signal_on_interrupt)
        try:
            self._place(body, args.fresh)
            if args.input:
                self._push(body, args.input)
        except RemoteError as exc:
            self._refused(RemoteResult("", returncode=-1, status=exc.reason, message=exc.message))
        execution = self.client.execute(echo=True, **body)
        result = execution.wait(interrupt_signal=sig, interrupt_wait=self.interrupt_wait)
        if execution.refused or result.status == "not_started":  # nothing ran
            self._refused(result)
        self.shell.user_ns["_remote"] = result
        if args.result:
            self.shell.user_ns[args.result] = result
        if args.output and result.returncode == 0:
            self._pull(body, args.output)
        self.render_end(result, args.raise_, ended=execution.exit is not None)

    def _refused(self, result: RemoteResult) -> None:
        """Nothing ran (no node, unknown node, missing image, no usable node): one line
        that stops "Run all", as a failing local cell does."""
        self.shell.user_ns["_remote"] = result
        raise RemoteCommandFailed(f"[remote] not run: {result.message} ({result.status})")

    def render_end(self, result: RemoteResult, raise_: bool, ended: bool) -> None:
        """The cell's last lines: why it failed (one line) and, when its exit came (`ended`),
        the footer; or the error. Without the exit (the stream broke) there is no footer,
        so a reloaded page renders the cell again from the server's record."""
        sys.stdout.flush()  # the cell's own output first, then these lines
        line = None
        if result.returncode != 0 and not result.interrupted:
            where = f" on node {result.node_id}" if result.node_id else ""
            why = f": {result.message}" if result.message else ""
            line = f"[remote] exit {result.returncode} ({result.status}){where}{why}"
            if not raise_:
                print(line, file=sys.stderr, flush=True)
        if self.footer and ended and result.status != "unknown":
            text = footer_line(
                result.node_id, result.image, result.duration, result.returncode, result.status
            )
            publish_display_data(**footer_bundle(result.execution_id, text))
        if result.interrupted:  # stops "Run all", in one line rather than a traceback
            raise RemoteCommandFailed(f"[remote] interrupted: {result.message}")
        if line is not None and raise_:
            raise RemoteCommandFailed(line)

    def _detach(self, body: dict, name: str | None):
        from jupyter_remote.kernel.widgets import JobWidget

        body.pop("execution_count", None)  # a job's tasks are no notebook cells
        if "node" in body:  # --node: the job's one node
            body["nodes"] = [body.pop("node")]
        if name:
            body["name"] = name
        if body.get("cell_id") and (kid := kernel_id()):
            body["kernel_id"] = kid  # with cell_id: the job is filed under this notebook's cell
        try:
            job = self.client.submit_job(**body)
        except RemoteError as exc:
            raise RemoteCommandFailed(f"[remote] not run: {exc.message} ({exc.reason})") from None
        self.shell.user_ns["_remote_job"] = job["job_id"]
        widget = JobWidget(self.client, job["job_id"])
        display(widget)
        widget.start()
        return None
