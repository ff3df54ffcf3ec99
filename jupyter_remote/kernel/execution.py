"""One submitted execution on the kernel side: its handle, its events folded once.

`Execution` is what the %%remote magic, its side cells (moving variables) and
`RemoteDockerEnvironment` hold, as ipyparallel's `%%px` holds an `AsyncResult`: made when
the cell is sent, it streams the output while it runs (`wait()`), cancels the command on
its node (`cancel()`, or `wait(interrupt_signal=...)` on the kernel's interrupt) and keeps
the outcome in `result`, a `RemoteResult`. `EventFold` is the one place that reads an
execution's events.
"""

from __future__ import annotations

import contextlib
import queue
import re
import signal as signals
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from jupyter_remote.protocol.errors import RemoteError


def new_execution_id() -> str:
    """A client-made execution id (the server refuses a second use of one)."""
    return f"x-{uuid.uuid4().hex}"


@dataclass
class RemoteResult:
    """What a %%remote cell left behind (``-o NAME``; the last one is ``_remote``)."""

    execution_id: str
    node_id: str | None = None
    image: str | None = None
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
    """Folds one execution's events into its RemoteResult; with `echo`, writes output as
    it comes (stdout, stderr, display data, notices) to the notebook.

    The first exit event is the result: a later one (a connection broken after the end)
    never overwrites it, and `exit` keeps it as it came. A notice (the server telling of a
    replaced session or of limits that did not apply) is kept once in `notices`; echoed,
    it is one line on stderr.
    """

    def __init__(self, result: RemoteResult, echo: bool = True) -> None:
        self.result = result
        self.echo = echo
        self.exit: dict | None = None
        self._chunks: list[tuple[str, str]] = []  # (stream, data) in the order they came
        self._unflushed: str | None = None  # the stream written to since the last flush

    @property
    def ended(self) -> bool:
        return self.exit is not None

    @property
    def output(self) -> str:
        """stdout and stderr together, in the order they came."""
        return "".join(data for _, data in self._chunks)

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
            result.image = event.get("image") or result.image
        elif kind in ("stdout", "stderr"):
            self._chunks.append((kind, event["data"]))
            if self.echo:
                self._write(kind, event["data"])
        elif kind == "display":  # rich output of a remote cell: a plot, a table, HTML
            bundle = {"data": event.get("data") or {}, "metadata": event.get("metadata") or {}}
            result.displays.append(bundle)
            if self.echo:
                from IPython.display import publish_display_data

                self._flush_pending()
                publish_display_data(**bundle)
        elif kind == "notice":
            message = str(event.get("message") or "").strip()
            if message and message not in result.notices:
                result.notices.append(message)
                if self.echo:
                    self._flush_pending()
                    print(f"[remote] {' '.join(message.split())}", file=sys.stderr, flush=True)
        elif kind == "exit":
            self.exit = event
            result.returncode = event.get("returncode", -1)
            result.status = event.get("status")
            result.duration = event.get("duration")
            result.message = event.get("message")
            result.node_id = result.node_id or event.get("node_id")

    def _write(self, kind: str, data: str) -> None:
        # No flush per event: each is a round trip to the kernel's IO thread (~1.5 ms),
        # and the kernel sends what was written within its flush interval (0.2 s) and
        # before the reply anyway. Only a switch of stream flushes the other one first,
        # so stdout and stderr keep the order they came in.
        if self._unflushed is not None and self._unflushed != kind:
            self._flush_pending()
        (sys.stdout if kind == "stdout" else sys.stderr).write(data)
        self._unflushed = kind

    def finish(self) -> None:
        """The kernel flushes stdout, then stderr, before its reply: no round trip here."""
        self.result.stdout = "".join(d for k, d in self._chunks if k == "stdout")
        self.result.stderr = "".join(d for k, d in self._chunks if k == "stderr")


class Execution:
    """One execution sent to the server: stream it, wait for it, cancel it, read its result.

    Made by `RemoteClient.execute` (`Execution.submit`); a request the server refused (or
    that could not be sent) is already in `result` (returncode -1, the reason as status)
    and kept in `error`.

    Example::

        execution = client.execute(echo=True, command="echo hi", kernel_id=kid)
        result = execution.wait(interrupt_signal="SIGTERM")   # output streams meanwhile
        result.returncode, result.stdout
    """

    def __init__(self, client, execution_id: str, echo: bool = True) -> None:
        self.client = client
        self.execution_id = execution_id
        self.result = RemoteResult(execution_id)
        self.error: RemoteError | None = None  # why the stream failed before its exit
        self._fold = EventFold(self.result, echo)
        self._stream = None

    @classmethod
    def submit(cls, client, body: dict, echo: bool = True) -> Execution:
        """Send `body` (a POST /executions body; an execution id is added when it has
        none); the events are read by `wait()`."""
        body.setdefault("execution_id", new_execution_id())
        execution = cls(client, body["execution_id"], echo)
        try:
            execution._stream = client.execute_stream(**body)
        except RemoteError as exc:
            execution._failed(exc)
        return execution

    @property
    def refused(self) -> bool:
        """Nothing ran: the server refused the cell (no such node or image, no usable node)
        or could not be reached."""
        return self._stream is None and self.error is not None

    @property
    def done(self) -> bool:
        """The exit event came, or the stream failed."""
        return self._fold.ended or self.error is not None

    @property
    def exit(self) -> dict | None:
        """The exit event as it came (None before it, or when none came)."""
        return self._fold.exit

    @property
    def output(self) -> str:
        """stdout and stderr together, in the order they came."""
        return self._fold.output

    def _failed(self, exc: RemoteError) -> None:
        if not self._fold.ended:
            self.error = exc
            result = self.result
            result.returncode, result.status, result.message = -1, exc.reason, exc.message

    def wait(self, interrupt_signal: str | None = None, interrupt_wait: float = 30.0):
        """Read the events to the first exit (echoing them) and answer the result.

        With `interrupt_signal`, a KeyboardInterrupt (the kernel's interrupt) cancels the
        command on its node with that signal and reads on (see `interrupt`); without, it
        is raised and the stream stays open for `interrupt`.
        """
        try:
            if self._stream is not None:
                for event in self._stream:
                    self._fold.feed(event)
        except KeyboardInterrupt:
            if interrupt_signal is None:
                raise
            self.interrupt(interrupt_signal, interrupt_wait)
        except RemoteError as exc:
            self._failed(exc)
        self._fold.finish()
        return self.result

    def cancel(self, signal: str = "SIGTERM") -> str:
        """Send `signal` to the command on its node; what happened, in words."""
        try:
            self.client.cancel(self.execution_id, signal)
        except RemoteError as exc:
            return f"cancelling on node {self.result.node_id} failed: {exc.message}"
        return f"{signal} sent to the command on node {self.result.node_id}"

    def interrupt(self, signal: str, wait: float) -> RemoteResult:
        """Cancel on the node, then read the same stream on to the real exit, so the cell
        shows what the command wrote after the signal and the result its real returncode.
        The wait is bounded by `wait` seconds; a second interrupt ends it at once."""
        result, fold, stream = self.result, self._fold, self._stream
        if stream is None:  # never sent: nothing to cancel
            return result
        result.interrupted = True
        cancel = {"failed": None}  # why the cancel request failed, if it did

        def send() -> None:
            try:
                self.client.cancel(self.execution_id, signal)
            except RemoteError as exc:
                cancel["failed"] = exc.message

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + wait
        why = f"no exit within {wait:g} s"
        again = threading.Event()
        try:
            with _second_interrupt_sets(again):
                while not fold.ended and not again.is_set() and time.monotonic() < deadline:
                    try:
                        event = stream.next(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                    except queue.Empty:
                        continue
                    if event is None:
                        why = "the stream ended without an exit event"
                        break
                    fold.feed(event)
            if fold.ended:
                sender.join(timeout=5)
        except KeyboardInterrupt:
            again.set()
        except RemoteError as exc:
            why = exc.message
        if again.is_set() and not fold.ended:
            why = "interrupted again"
        fold.finish()
        where = f"on node {result.node_id}" if result.node_id else "on its node"
        sent = (
            f"cancelling the command {where} failed ({cancel['failed']})"
            if cancel["failed"]
            else f"{signal} sent to the command {where}"
        )
        if fold.ended:
            told = node_account((fold.exit or {}).get("message"), result.returncode)
            ended = f"it exited {result.returncode} ({result.status})"
            result.message = f"{sent}; {ended}" + (f": {told}" if told else "")
            return result
        stream.close()
        result.returncode, result.status = -1, "unknown"
        result.message = (
            f"{sent}; stopped waiting for its end ({why}); "
            f"its record: GET /remote/api/executions/{self.execution_id}"
        )
        return result


def node_account(message: str | None, returncode: int | None) -> str:
    """What the node says a stop did, less what the interrupt line says already (the
    stop's reason, the signal sent, the exit code): "a KeyboardInterrupt stopped the
    Python code; the interpreter and its variables are kept", "... killed with SIGKILL"."""
    text = re.sub(r"^(cancelled|timed out)[^;]*; ", "", (message or "").strip())
    text = re.sub(r"^SIG[A-Z0-9]+ was sent[:;] ?", "", text)
    text = re.sub(rf"^the command exited with {returncode}(; |$)", "", text)
    return re.sub(rf" \(returncode {returncode}\)", "", text).strip()


@contextlib.contextmanager
def _second_interrupt_sets(flag: threading.Event):
    """While reading on after an interrupt, a second SIGINT sets `flag` instead of raising.

    A KeyboardInterrupt can land anywhere, even where no `try` covers it (CPython checks
    for signals on a loop's back edge, outside the loop's handler); a flag cannot.
    Off the main thread, where no handler can be set, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signals.signal(signals.SIGINT, lambda *_: flag.set())
    try:
        yield
    finally:
        signals.signal(signals.SIGINT, previous)
