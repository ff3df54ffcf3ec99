"""The base of the refreshing widgets: a box that refreshes on a thread of its own until
closed, shows a RemoteError in one line, and closes every widget it holds."""

from __future__ import annotations

import html
import threading

import ipywidgets as w

from jupyter_remote.protocol.errors import RemoteError


class Refreshing(w.VBox):
    """A box that calls `refresh()` every `interval` seconds until closed."""

    interval = 2.0

    def __init__(self, client, interval: float | None = None, **kw) -> None:
        super().__init__(**kw)
        self.client = client
        if interval is not None:
            self.interval = interval
        self._closed = threading.Event()
        self.error_view = w.HTML()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self):
        self.refresh_safely()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._closed.wait(self.wait_time()):
            self.refresh_safely()

    def wait_time(self) -> float:
        return self.interval

    def refresh_safely(self) -> None:
        try:
            self.refresh()
            self.error_view.value = ""
        except RemoteError as exc:
            self.show_error(exc)

    def show_error(self, exc: RemoteError) -> None:
        """The error in one red line under the widget."""
        self.error_view.value = f"<span style='color:#c62828'>{html.escape(exc.message)}</span>"

    def refresh(self) -> None:
        raise NotImplementedError

    @property
    def stopped(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop refreshing, and close every widget this one holds."""
        self._closed.set()
        held = _held(self)
        super().close()
        for item in held:
            close_all(item)


def close_all(widget: w.Widget) -> None:
    """Close a widget and every widget it holds (children, layout, style): closing a box
    alone leaves them all in the kernel's registry for good."""
    for item in _held(widget):
        close_all(item)
    widget.close()


def _held(widget: w.Widget) -> list[w.Widget]:
    held = []
    for name in widget.keys:
        value = getattr(widget, name, None)
        held += value if isinstance(value, (list, tuple)) else [value]
    return [v for v in held if isinstance(v, w.Widget)]
