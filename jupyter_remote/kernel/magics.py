"""IPython magics: %%remote and the %remote_* line magics.

Load with ``%load_ext jupyter_remote``; every magic has ``?`` help with examples.
"""

from __future__ import annotations

import argparse
import atexit
import html
import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, display, publish_display_data
from pydantic import TypeAdapter, ValidationError
from traitlets import Float, Int, Unicode

from jupyter_remote.kernel import variables
from jupyter_remote.kernel.client import RemoteClient
from jupyter_remote.protocol.errors import RemoteError
from jupyter_remote.protocol import SIGNALS
from jupyter_remote.protocol.bodies import Memory
from jupyter_remote.protocol.common import MAX_TIMEOUT, Cpus, PidsLimit, Seconds


@dataclass
class RemoteResult:
    """What a %%remote cell left behind (``-o NAME``; the last one is ``_remote``)."""

    execution_id: str
    node_id: str | None = None
    returncode: int | None = None
    status: str | None = None
    duration: float | None = None
    message: str | None = None
    stdout: str = ""
    stderr: str = ""
    interrupted: bool = False
    notices: list[str] = field(default_factory=list)
    displays: list[dict] = field(default_factory=list)  # mime bundles the cell displayed

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class EventFold:
    """Folds one execution's events into its RemoteResult, writing output as it comes.

    The first exit event is the result: a later one (a connection broken after the end)
    never overwrites it. A notice (the server telling of a replaced session or of limits
    that did not apply) is shown once, as one line on stderr, and kept in `notices`.
    """

    def __init__(self, result: RemoteResult) -> None:
        self.result = result
        self.ended = False
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._unflushed: str | None = None  # the stream written to since the last flush

    def _flush_pending(self) -> None:
        if self._unflushed is not None:
            (sys.stdout if self._unflushed == "stdout" else sys.stderr).flush()
            self._unflushed = None

    def feed(self, event: dict) -> None:
        if self.ended:
            return
        result, kind = self.result, event.get("event")
        if kind == "started":
            result.node_id = event.get("node_id") or result.node_id
        elif kind in ("stdout", "stderr"):
            # No flush per event: each is a round trip to the kernel's IO thread (~1.5 ms),
            # and the kernel sends what was written within its flush interval (0.2 s) and
            # before the reply anyway. Only a switch of stream flushes the other one first,
            # so stdout and stderr keep the order they came in.
            if self._unflushed is not None and self._unflushed != kind:
                self._flush_pending()
            stream = sys.stdout if kind == "stdout" else sys.stderr
            stream.write(event["data"])
            self._unflushed = kind
            (self._stdout if kind == "stdout" else self._stderr).append(event["data"])
        elif kind == "display":  # rich output of a remote cell: a plot, a table, HTML
            self._flush_pending()
            bundle = {"data": event.get("data") or {}, "metadata": event.get("metadata") or {}}
            result.displays.append(bundle)
            publish_display_data(**bundle)
        elif kind == "notice":
            message = str(event.get("message") or "").strip()
            if message and message not in result.notices:
                result.notices.append(message)
                self._flush_pending()
                print(f"[remote] {' '.join(message.split())}", file=sys.stderr, flush=True)
        elif kind == "exit":
            self.ended = True
            result.returncode = event.get("returncode", -1)
            result.status = event.get("status")
            result.duration = event.get("duration")
            result.message = event.get("message")
            result.node_id = result.node_id or event.get("node_id")

    def finish(self) -> None:
        """The kernel flushes stdout, then stderr, before its reply: no round trip here."""
        self.result.stdout = "".join(self._stdout)
        self.result.stderr = "".join(self._stderr)


class RemoteCommandFailed(Exception):
    """Raised by ``%%remote --raise`` for a non-zero exit, so "Run all" stops there."""

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the one line says it all (ipyparallel
        does the same), and IPython's one custom_exc slot stays free for others."""
        return [str(self)]


def _checked(kind, text: str, what: str, rule: str, convert=float):
    """A magic's argument through the protocol's own type, so the kernel refuses exactly
    what the server would (one line, before anything is sent)."""
    try:
        return TypeAdapter(kind).validate_python(convert(text.strip()))
    except (ValueError, ValidationError):
        raise argparse.ArgumentTypeError(f"{what} must be {rule}; got {text!r}") from None


def _timeout(text: str, zero_means_default: bool = False) -> float:
    """Seconds > 0 and finite: 0 would silently mean the agent's default, 1800 s."""
    if zero_means_default and text.strip() in ("0", "0.0"):
        return 0.0
    rule = f"> 0 seconds and at most {int(MAX_TIMEOUT)} (30 days)"
    if not zero_means_default:
        rule += " (leave it out for the default, 1800 s)"
    return _checked(Seconds, text, "timeout", rule)


def _memory(text: str) -> str:
    """A size the agent takes (512m, 2g, 1.5GiB, bytes), checked before anything is sent."""
    rule = "a size like 512m or 2g (units k, m, g, t; at least 6m)"
    _checked(Memory, text, "memory", rule, convert=lambda t: int(t) if t.isdigit() else t)
    return text.strip()


def _cpus(text: str) -> float:
    return _checked(Cpus, text, "cpus", "a finite number of CPUs like 0.5 or 2 (0.01 to 1024)")


def _pids(text: str) -> int:
    rule = "a whole number of processes, at least 16"
    return _checked(PidsLimit, text, "pids-limit", rule, convert=int)


def _names(text: str) -> list[str]:
    """NAME[,NAME...] of Python variables."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not n.isidentifier()]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...] of variables; got {text!r}")
    return names


def _kernel_id() -> str | None:
    try:
        from ipykernel.connect import get_connection_file
    except ImportError:
        return None
    try:
        name = os.path.basename(get_connection_file())
    except RuntimeError:
        return None
    return name[len("kernel-") : -len(".json")] if name.startswith("kernel-") else None


@magics_class
class RemoteMagics(Magics):
    """Run cells on the pool of Docker hosts behind the Jupyter server."""

    signal_on_interrupt = Unicode(
        "SIGTERM",
        help="Signal sent to the remote command when the kernel is interrupted "
        "(SIGKILL follows after the agent's grace period).",
    ).tag(config=True)
    default_image = Unicode(
        "", help="Image for %%remote cells that name none (empty: the server's default)."
    ).tag(config=True)
    default_timeout = Float(
        0,
        help="Timeout in seconds for %%remote cells that give none "
        "(0: the agent's default, 1800 s).",
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
        self._server_kernel: bool | None = None  # did this server start our kernel?
        self._owns_sessions = False  # the server made sessions for self.owner (other kernels)
        kernel_id = _kernel_id()
        self.owner = f"kernel-{kernel_id}" if kernel_id else f"ipython-{uuid.uuid4().hex[:12]}"

    @property
    def client(self) -> RemoteClient:
        if self._client is None:
            self._client = RemoteClient()
        return self._client

    # -- %%remote ----------------------------------------------------------------------
    @magic_arguments()
    @argument("--node", "-n", help="Run on this node (default: the pool's choice).")
    @argument("--image", help="Container image (default: the server's).")
    @argument(
        "--input",
        "-i",
        type=_names,
        metavar="NAME[,NAME...]",
        help="With --python: send these local variables into the remote interpreter first.",
    )
    @argument(
        "--timeout",
        "-t",
        type=_timeout,
        help=f"Kill the command after this many seconds (> 0, at most {MAX_TIMEOUT}).",
    )
    @argument(
        "--memory",
        "-m",
        type=_memory,
        help="Memory limit, e.g. 512m or 2g (a session takes it when it is made).",
    )
    @argument("--cpus", type=_cpus, help="CPU limit, e.g. 0.5 or 2.")
    @argument("--pids-limit", type=_pids, help="Most processes at once, e.g. 256.")
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
        type=_names,
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
        env = {}
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise UsageError(f"--env takes NAME=VALUE; got {item!r}")
            env[name] = value
        body = {"python" if args.python else "command": cell}
        for key, value in (
            ("node", args.node),
            ("image", args.image or self.default_image),
            ("timeout", args.timeout or self.default_timeout),
            ("memory", args.memory),
            ("cpus", args.cpus),
            ("pids_limit", args.pids_limit),
        ):
            if value:
                body[key] = value
        if env:
            body["env"] = env
        if (args.input or args.output) and (not args.python or args.detach or args.fresh):
            raise UsageError("-i/-o move Python variables: they need --python in the session")
        if args.detach:
            return self._detach(body, args.name)
        sig = args.signal_on_interrupt or self.signal_on_interrupt
        try:
            self._place(body, args.fresh)
            if args.input:
                self._push(body, args.input)
        except RemoteError as exc:
            result = RemoteResult("", returncode=-1, status=exc.reason, message=exc.message)
        else:
            result = self._run(body, sig)
        self.shell.user_ns["_remote"] = result
        if args.result:
            self.shell.user_ns[args.result] = result
        if args.output and result.returncode == 0:
            self._pull(body, args.output)
        if result.interrupted:  # stops "Run all", in one line rather than a traceback
            raise RemoteCommandFailed(f"[remote] interrupted: {result.message}")
        if result.returncode != 0:
            where = f" on node {result.node_id}" if result.node_id else ""
            why = f": {result.message}" if result.message else ""
            line = f"[remote] exit {result.returncode} ({result.status}){where}{why}"
            sys.stdout.flush()  # the cell's own output first, then this line
            if args.raise_:
                raise RemoteCommandFailed(line)
            print(line, file=sys.stderr)

    def _place(self, body: dict, fresh: bool) -> None:
        """This kernel's session: the server's own for kernels it started; otherwise one
        the magics own (nbval, VS Code, a terminal IPython), removed when the kernel exits."""
        if fresh:
            body["fresh"] = True
            return
        kernel_id = _kernel_id()
        if kernel_id and self._server_kernel is None:
            self._server_kernel = self.client.kernel_sessions(kernel_id)["known_kernel"]
        if kernel_id and self._server_kernel:
            body["kernel_id"] = kernel_id
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

    # -- variables (-i/-o, %remote_push/%remote_pull) ------------------------------------
    def _side_cell(self, body: dict, code: str) -> str:
        """Run `code` in the same interpreter as the cell, quietly; its stdout."""
        side = {k: v for k, v in body.items() if k not in ("command", "python", "timeout")}
        side.update(python=code, execution_id=f"x-{uuid.uuid4().hex}", timeout=600)
        out, last = [], {}
        with _one_line_errors():
            for event in self.client.execute_stream(**side):
                if event.get("event") == "stdout":
                    out.append(event["data"])
                elif event.get("event") == "exit":
                    last = event
        if last.get("returncode") != 0:
            raise UsageError(f"[remote] moving variables failed: {last.get('message') or last}")
        return "".join(out)

    def _push(self, body: dict, names: list[str]) -> None:
        missing = [n for n in names if n not in self.shell.user_ns]
        if missing:
            raise UsageError(f"[remote] -i: no local variable {missing[0]!r}")
        values = {n: self.shell.user_ns[n] for n in names}
        try:
            code = variables.push_code(values, self.variables_limit)
        except variables.VariableError as exc:
            raise UsageError(f"[remote] {exc}") from None
        _, errors = variables.parse_marks(self._side_cell(body, code))
        if errors:
            name, why = next(iter(errors.items()))
            raise UsageError(f"[remote] cannot load {name!r} in the remote session: {why}")

    def _pull(self, body: dict, names: list[str]) -> None:
        found, errors = variables.parse_marks(
            self._side_cell(body, variables.pull_code(names, self.variables_limit))
        )
        for name, blob in found.items():
            try:
                self.shell.user_ns[name] = variables.load(name, blob)
            except variables.VariableError as exc:
                errors[name] = str(exc)
        if errors:
            name, why = next(iter(errors.items()))
            raise UsageError(f"[remote] -o {name}: {why}")

    def _run(self, body: dict, sig: str) -> RemoteResult:
        result = RemoteResult(execution_id=f"x-{uuid.uuid4().hex}")
        body["execution_id"] = result.execution_id
        fold = EventFold(result)
        try:
            stream = self.client.execute_stream(**body)
            try:
                for event in stream:
                    fold.feed(event)
            except KeyboardInterrupt:
                self._interrupt(result, sig, stream, fold)
        except RemoteError as exc:
            if not fold.ended:
                result.returncode, result.status, result.message = -1, exc.reason, exc.message
        fold.finish()
        return result

    def _interrupt(self, result: RemoteResult, sig: str, stream, fold: EventFold) -> None:
        """Cancel on the node, then read the same stream on to the real exit, so the cell
        shows what the command wrote after the signal and `_remote` its real returncode.
        The wait is bounded by `interrupt_wait`; a second interrupt ends it at once."""
        result.interrupted = True
        cancel = {"message": f"{sig} sent to the command on node {result.node_id}"}

        def send() -> None:
            try:
                self.client.cancel(result.execution_id, sig)
            except RemoteError as exc:
                cancel["message"] = f"cancelling on node {result.node_id} failed: {exc.message}"

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + self.interrupt_wait
        why = f"no exit within {self.interrupt_wait:g} s"
        try:
            while not fold.ended and time.monotonic() < deadline:
                try:
                    event = stream.next(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    continue
                if event is None:
                    why = "the stream ended without an exit event"
                    break
                fold.feed(event)
            if fold.ended:
                sender.join(timeout=5)
        except KeyboardInterrupt:
            why = "interrupted again"
        except RemoteError as exc:
            why = exc.message
        if fold.ended:
            result.message = f"{cancel['message']}; it exited {result.returncode} ({result.status})"
            return
        stream.close()
        result.returncode, result.status = -1, "unknown"
        result.message = (
            f"{cancel['message']}; stopped waiting for its end ({why}); "
            f"its record: GET /remote/api/executions/{result.execution_id}"
        )

    def _detach(self, body: dict, name: str | None):
        from jupyter_remote.kernel.widgets import JobWidget

        if name:
            body["name"] = name
        try:
            job = self.client.submit_job(**body)
        except RemoteError as exc:
            print(f"[remote] {exc.message}", file=sys.stderr)
            return None
        self.shell.user_ns["_remote_job"] = job["job_id"]
        widget = JobWidget(self.client, job["job_id"])
        display(widget)
        widget.start()
        return None

    # -- line magics -------------------------------------------------------------------
    @magic_arguments()
    @argument("--add", metavar="URL", help="Add the agent at URL to the pool.")
    @argument("--token", help="The agent's token (with --add).")
    @argument("--remove", metavar="NODE_ID", help="Remove a node from the pool.")
    @line_magic
    def remote_nodes(self, line: str):
        """Show the pool's nodes (state, CPU / memory / disk, running work), refreshing.

        Examples::

            %remote_nodes
            %remote_nodes --add http://gpu-1:9527 --token s3cret
            %remote_nodes --remove gpu-1
        """
        from jupyter_remote.kernel.widgets import NodesWidget

        args = parse_argstring(self.remote_nodes, line)
        with _one_line_errors():
            if args.add:
                node = self.client.add_node(args.add, args.token)
                print(f"added node {node['node_id']} ({node['state']})")
            if args.remove:
                self.client.remove_node(args.remove)
                print(f"removed node {args.remove}")
            if not (args.add or args.remove):
                widget = NodesWidget(self.client)
                display(widget)
                widget.start()

    @line_magic
    def remote_jobs(self, line: str):
        """List the newest 100 jobs the server knows (older pages: the REST `before` cursor):
        status, tasks done/total, elapsed, autostop.

        Example::

            %remote_jobs
        """
        with _one_line_errors():
            jobs = self.client.jobs()
        esc = html.escape
        rows = "".join(
            f"<tr><td>{esc(j['job_id'])}</td><td>{esc(j['name'])}</td>"
            f"<td>{esc(j['status'])}</td>"
            f"<td>{j['tasks_done']}/{j['tasks_total']}</td><td>{j['elapsed']:.1f} s</td>"
            f"<td>{'yes' if j['autostop'] else ''}</td>"
            f"<td>{'degraded' if j['degraded'] else ''}</td></tr>"
            for j in jobs
        )
        display(
            HTML(
                "<table><tr><th>job</th><th>name</th><th>status</th><th>tasks</th>"
                f"<th>elapsed</th><th>autostop</th><th></th></tr>{rows}</table>"
                if jobs
                else "<i>no jobs</i>"
            )
        )

    @magic_arguments()
    @argument("job_id", help="The job's id (also after a kernel restart).")
    @argument("--logs", action="store_true", help="Print the task's log instead of a widget.")
    @argument("--follow", "-f", action="store_true", help="With --logs: until the task ends.")
    @argument("--task", type=int, default=0, help="Which task's log (default 0).")
    @line_magic
    def remote_job(self, line: str):
        """Reattach to a job by id: its status widget, or its log.

        Examples::

            %remote_job j-3fa2c1
            %remote_job j-3fa2c1 --logs --follow --task 2
        """
        from jupyter_remote.kernel.widgets import JobWidget

        args = parse_argstring(self.remote_job, line)
        with _one_line_errors():
            self.client.job(args.job_id)
            if args.logs:
                for chunk in self.client.job_logs(args.job_id, args.task, follow=args.follow):
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                return
            widget = JobWidget(self.client, args.job_id, task=args.task)
            display(widget)
            widget.start()

    @line_magic
    def remote_stop(self, line: str):
        """Stop a job: running tasks are stopped, pending ones dropped.

        Example::

            %remote_stop j-3fa2c1
        """
        job_id = line.strip()
        if not job_id:
            raise UsageError("%remote_stop JOB_ID")
        with _one_line_errors():
            job = self.client.stop_job(job_id)
        print(f"job {job_id}: {job['status']}")

    @line_magic
    def remote_delete(self, line: str):
        """Delete a finished job: its record, logs and saved outputs, on its nodes and here.

        The job must be final (stop it first); its id is never accepted again.

        Example::

            %remote_delete j-3fa2c1
        """
        job_id = line.strip()
        if not job_id or " " in job_id:
            raise UsageError("%remote_delete JOB_ID")
        with _one_line_errors():
            self.client.delete_job(job_id)
        print(f"job {job_id}: deleted")

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
        names = [n for item in args.names for n in _names(item)]
        body = self._session_body(args.image)
        self._push(body, names)
        print(f"sent {', '.join(names)}")

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
        names = [n for item in args.names for n in _names(item)]
        self._pull(self._session_body(args.image), names)
        print(f"received {', '.join(names)}")

    def _session_body(self, image: str | None) -> dict:
        body = {}
        if image or self.default_image:
            body["image"] = image or self.default_image
        with _one_line_errors():
            self._place(body, fresh=False)
        return body

    @line_magic
    def remote_cleanup(self, line: str):
        """Remove this kernel's session containers on their nodes (files in them go too).

        Example::

            %remote_cleanup
        """
        kernel_id = _kernel_id()
        removed = []
        with _one_line_errors():
            if kernel_id:
                removed += self.client.cleanup_kernel(kernel_id)
            if self._owns_sessions:
                removed += self.client.delete_sessions(self.owner)
        print(f"removed {len(removed)} session container(s)")

    @line_magic
    def remote_config(self, line: str):
        """Show where cells go and the defaults; set a default with NAME=VALUE.

        Examples::

            %remote_config
            %remote_config default_image=jupyter-remote/busybox:local
            %remote_config signal_on_interrupt=SIGINT
        """
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
                    value = _timeout(value, zero_means_default=True)
                except argparse.ArgumentTypeError as exc:
                    raise UsageError(f"default_{exc}") from None
            setattr(self, name, value)
        kernel_id = _kernel_id()
        with _one_line_errors():
            status = self.client.status()
            known = kernel_id and self.client.kernel_sessions(kernel_id)["known_kernel"]
        busy = status.get("busy", 0)  # under CPU/memory pressure: usable, others preferred
        kernel = (
            f"{kernel_id} (started by this server, which keeps its sessions)"
            if known
            else f"{kernel_id or 'not named by a connection file'} (not started by this "
            f"server; the magics keep its sessions as {self.owner})"
        )
        print(
            f"server: {self.client.server_url}\nkernel: {kernel}\n"
            f"nodes: {status['healthy'] + busy} usable of {status['nodes']} "
            f"({status['healthy']} healthy, {busy} busy)\n"
            f"default_image: {self.default_image or '(server default)'}\n"
            f"default_timeout: {self.default_timeout or '(agent default)'}\n"
            f"signal_on_interrupt: {self.signal_on_interrupt}"
        )


@magics_class
class EngineStateMagics(Magics):
    """%remote_states: the latest inference-engine states."""

    @magic_arguments()
    @argument("--log", metavar="PATH", help="Read a gateway's JSONL log instead of the server.")
    @argument("--stale-ms", type=int, default=2000, help="Stale after this many ms (log only).")
    @argument("--sort", default="engine_id", help="Column to sort by.")
    @line_magic
    def remote_states(self, line: str):
        """Show the latest state per engine (age, stale flag, KV-cache use), refreshing.

        From the server's engine-state gateway (c.RemoteApp.gateway_port), or from a
        `jupyter-remote gateway` log with --log.

        Examples::

            %remote_states
            %remote_states --log /data/engine_states.jsonl --stale-ms 5000 --sort age_ms
        """
        from jupyter_remote.kernel.widgets import ENGINE_COLUMNS, EngineStateWidget

        args = parse_argstring(self.remote_states, line)
        if args.sort not in ENGINE_COLUMNS:
            raise UsageError(f"--sort takes one of {', '.join(ENGINE_COLUMNS)}")
        if args.log and not os.path.exists(args.log):
            raise UsageError(f"[remote] no engine-state log at {args.log}")
        with _one_line_errors():
            source = args.log or RemoteClient()
            widget = EngineStateWidget(source, args.stale_ms, args.sort)
            widget.refresh()
        display(widget)
        widget.start()


class _one_line_errors:
    """Turn a RemoteError into one clear line (a UsageError), not a traceback."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, RemoteError):
            raise UsageError(f"[remote] {exc.message}") from None
        return False


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(RemoteMagics)
    ipython.register_magics(EngineStateMagics)
    from jupyter_remote.kernel.transfer_magics import TransferMagics

    ipython.register_magics(TransferMagics)
