"""ipywidgets for the pool and for jobs. They take a client and refresh on a thread of
their own, so they never block the kernel, and they stop refreshing when closed."""

from __future__ import annotations

import html
import threading

import ipywidgets as w

from jupyter_remote.protocol.errors import RemoteError
from jupyter_remote.protocol import JOB_FINAL

STATE_COLORS = {
    "healthy": "#2e7d32",
    "busy": "#b26a00",
    "unhealthy": "#ef6c00",
    "suspect": "#f9a825",
    "lost": "#c62828",
    "unknown": "#757575",
}
JOB_COLORS = {
    "completed": "#2e7d32",
    "failed": "#c62828",
    "degraded": "#ef6c00",
    "stopped": "#757575",
    "running": "#1565c0",
    "pending": "#757575",
    "stopping": "#757575",
}


class _Refreshing(w.VBox):
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


class _Bar(w.HBox):
    """A labelled percentage bar, updated in place."""

    def __init__(self, label: str) -> None:
        self.bar = w.FloatProgress(min=0, max=100, layout=w.Layout(width="9em"))
        self.figure = w.Label(layout=w.Layout(width="3.5em"))
        super().__init__([w.Label(label, layout=w.Layout(width="3.5em")), self.bar, self.figure])

    def update(self, percent: float | None) -> None:
        value = percent or 0.0
        self.bar.value = value
        self.bar.bar_style = "danger" if value > 90 else "warning" if value > 75 else "success"
        self.figure.value = f"{value:.0f}%"


def health_problems(node: dict) -> tuple[list[str], list[str]]:
    """(warnings, critical) messages of a node model's failing checks: a warning (CPU or
    memory pressure) makes a node busy but usable; a critical one makes it unusable."""
    listed = set(node.get("warnings") or [])
    warnings, critical = [], []
    for check in node.get("health") or []:
        if check.get("ok", True):
            continue
        message = str(check.get("message") or check.get("name") or "check failed")
        is_warning = check.get("severity") == "warning" or message in listed
        (warnings if is_warning else critical).append(message)
    return warnings, critical


class NodeRow(w.HBox):
    """One node: state (reason on hover), CPU / memory / disk bars, running work, and the
    health warnings; its widgets are made once and updated on each refresh."""

    def __init__(self) -> None:
        self.name = w.HTML(layout=w.Layout(width="14em"))
        self.bars = {
            key: _Bar(label) for key, label in (("cpu", "CPU"), ("memory", "mem"), ("disk", "disk"))
        }
        self.work = w.HTML()
        self.problems = w.HTML()
        super().__init__(
            [self.name, w.VBox(list(self.bars.values())), w.VBox([self.work, self.problems])]
        )

    def update(self, node: dict) -> None:
        state = node["state"]
        marker = {"healthy": "", "busy": "⚠ "}.get(state, "✖ ")
        color = STATE_COLORS.get(state, "#757575")
        self.name.value = (
            f"<b>{html.escape(node['node_id'])}</b><br>"
            f"<span style='color:{color}' title='{html.escape(node.get('reason') or '')}'>"
            f"{marker}{html.escape(state)}</span>"
        )
        for key, bar in self.bars.items():
            bar.update((node.get(key) or {}).get("percent"))
        self.work.value = f"{node.get('running_executions', 0)} running"
        warnings, critical = health_problems(node)
        lines = [f"<span style='color:#c62828'>✖ {html.escape(m)}</span>" for m in critical]
        lines += [
            f"<span style='color:{STATE_COLORS['busy']}'>⚠ {html.escape(m)}</span>"
            for m in warnings
        ]
        self.problems.value = "<br>".join(lines)


class NodesWidget(_Refreshing):
    """One row per node: state (with its reason), CPU / memory / disk, running work, health
    warnings. Rows are kept per node and updated in place, so refreshing leaks nothing."""

    def __init__(self, client, interval: float | None = None, **kw) -> None:
        super().__init__(client, interval, **kw)
        self.header = w.HTML()
        self.rows: dict[str, NodeRow] = {}
        self.children = [self.header, self.error_view]

    def refresh(self) -> None:
        nodes = self.client.nodes()
        for node_id in set(self.rows) - {n["node_id"] for n in nodes}:
            close_all(self.rows.pop(node_id))
        for node in nodes:
            if node["node_id"] not in self.rows:
                self.rows[node["node_id"]] = NodeRow()
            self.rows[node["node_id"]].update(node)
        busy = sum(n["state"] == "busy" for n in nodes)
        self.header.value = (
            f"<b>{len(nodes)} node(s)</b>" + (f", {busy} busy" if busy else "")
            if nodes
            else "<i>no nodes: add one with %remote_nodes --add URL</i>"
        )
        children = (self.header, *(self.rows[n["node_id"]] for n in nodes), self.error_view)
        if tuple(self.children) != children:
            self.children = children


class JobWidget(_Refreshing):
    """A job's status, elapsed time, tasks done/total, log tail and a Stop button."""

    interval = 0.5
    tail_lines = 15

    def __init__(self, client, job_id: str, task: int = 0, **kw) -> None:
        super().__init__(client, **kw)
        self.job_id = job_id
        self.task = task
        self.job: dict = {}
        self.title_view = w.HTML()
        self.progress = w.IntProgress(min=0, max=1, layout=w.Layout(width="24em"))
        self.counts = w.Label()
        self.log_view = w.HTML()
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.stop_button.on_click(lambda _: self.stop())
        self._log_offset = 0
        self._log_text = ""
        self.children = [
            self.title_view,
            w.HBox([self.progress, self.counts, self.stop_button]),
            self.log_view,
            self.error_view,
        ]

    def wait_time(self) -> float:
        return 0.0 if self.ended else self.interval

    @property
    def ended(self) -> bool:
        return self.job.get("status") in JOB_FINAL

    def _loop(self) -> None:
        while not self._closed.is_set() and not self.ended:
            try:  # a long-poll: the widget hears of the end at once, not at the next tick
                self.job = self.client.wait_job(self.job_id, timeout=self.interval * 4)
            except RemoteError:
                self._closed.wait(self.interval)
            self.refresh_safely()

    def refresh(self) -> None:
        if not self.job:
            self.job = self.client.job(self.job_id)
        job = self.job
        status = job["status"]
        color = JOB_COLORS.get(status, "#757575")
        flags = []
        if job["autostop"]:
            flags.append("autostop")
        if job["degraded"]:
            flags.append(
                f"<span style='color:#ef6c00'>degraded: {job['tasks_lost']} task(s) lost</span>"
            )
        self.title_view.value = (
            f"<b>job {html.escape(job['name'])}</b> ({job['job_id']}) "
            f"<span style='color:{color}'>{status}</span> · "
            f"{job['elapsed']:.1f} s · nodes "
            f"{', '.join(job['nodes_used']) or '-'} " + (f"· {' · '.join(flags)}" if flags else "")
        )
        self.progress.max = max(1, job["tasks_total"])
        self.progress.value = job["tasks_done"]
        self.progress.bar_style = {
            "failed": "danger",
            "degraded": "warning",
            "completed": "success",
        }.get(status, "info")
        self.counts.value = f"{job['tasks_done']}/{job['tasks_total']} tasks"
        self.stop_button.disabled = self.ended
        self._refresh_log()

    def _refresh_log(self) -> None:
        task = self.job["tasks"][self.task]
        if not task.get("agent_job_id"):
            return
        try:
            data = b"".join(self.client.job_logs(self.job_id, self.task, self._log_offset))
        except RemoteError:
            return
        self._log_offset += len(data)
        text = (self._log_text + data.decode("utf-8", "replace")).splitlines()[-self.tail_lines :]
        self._log_text = "\n".join(text) + "\n" if text else ""
        self.log_view.value = (
            f"<pre style='margin:0;max-height:18em;overflow:auto'>"
            f"{html.escape(self._log_text)}</pre>"
        )

    def stop(self) -> None:
        """The Stop button: stop the job on its nodes."""
        try:
            self.job = self.client.stop_job(self.job_id)
            self.refresh_safely()
        except RemoteError as exc:
            self.error_view.value = f"<span style='color:#c62828'>{html.escape(exc.message)}</span>"


def wait_with_progress(client, job_id: str, widget: JobWidget | None = None, stream=None) -> dict:
    """Block until the job ends: the widget updates in a notebook, a line elsewhere.

    Ctrl+C (or the kernel's interrupt) stops the waiting, not the job.
    """
    job = client.job(job_id)
    last = ""
    try:
        while job["status"] not in JOB_FINAL:
            job = client.wait_job(job_id, timeout=10)
            if widget is None and stream is not None:
                line = (
                    f"\rjob {job_id}: {job['status']} {job['tasks_done']}/"
                    f"{job['tasks_total']} tasks, {job['elapsed']:.0f} s"
                )
                if line != last:
                    stream.write(line)
                    stream.flush()
                    last = line
    except KeyboardInterrupt:
        if stream is not None:
            stream.write(
                f"\nstopped waiting; job {job_id} goes on "
                f"(%remote_job {job_id} to see it, %remote_stop {job_id} to stop it)\n"
            )
        return client.job(job_id)
    if widget is None and stream is not None:
        stream.write("\n")
    return job


ENGINE_COLUMNS = (
    "engine_id",
    "age_ms",
    "latency_pred_ms",
    "scheduling_mode",
    "pending_tokens_total",
    "kv_cache_utilization",
    "engine_capacity",
)


class EngineStateWidget(_Refreshing):
    """The latest state per inference engine, refreshing; stale engines marked; sortable.

    `source` is a RemoteClient (the server's in-process gateway) or the path of a gateway's
    JSONL log (read with load_engine_states).
    """

    interval = 1.0

    def __init__(
        self, source, stale_threshold_ms: int = 2000, sort_by: str = "engine_id", **kw
    ) -> None:
        super().__init__(source, **kw)
        self.stale_threshold_ms = stale_threshold_ms
        self.sort = w.Dropdown(options=list(ENGINE_COLUMNS), value=sort_by, description="sort by")
        self.descending = w.Checkbox(value=False, description="descending")
        self.table_view = w.HTML()
        self.summary = w.HTML()
        self.rows: list[dict] = []
        for control in (self.sort, self.descending):
            control.observe(lambda _: self.render(), names="value")
        self.children = [
            w.HBox([self.sort, self.descending]),
            self.summary,
            self.table_view,
            self.error_view,
        ]

    def refresh(self) -> None:
        if isinstance(self.client, str):
            from jupyter_remote.kernel.engine_states import latest_engine_states, load_engine_states

            df = latest_engine_states(load_engine_states(self.client), self.stale_threshold_ms)
            self.rows = df.to_dict("records")
            self.counters = {}
        else:
            answer = self.client.engine_states()
            self.rows, self.counters = answer["engines"], answer["counters"]
        self.render()

    def render(self) -> None:
        key = self.sort.value
        rows = sorted(
            self.rows, key=lambda r: (r.get(key) is None, r.get(key)), reverse=self.descending.value
        )
        stale = sum(bool(r["stale"]) for r in rows)
        counts = ""
        if self.counters:
            dropped = sum(self.counters["dropped"].values())
            counts = (
                f" · received {self.counters['received']}, logged "
                f"{self.counters['logged']}, dropped {dropped}"
            )
        self.summary.value = (
            f"<b>{len(rows)} engine(s)</b>, "
            f"<span style='color:#c62828'>{stale} stale</span>{counts}"
        )
        head = "".join(f"<th>{c}</th>" for c in (*ENGINE_COLUMNS, "stale"))
        body = "".join(self._row(r) for r in rows)
        self.table_view.value = f"<table><tr>{head}</tr>{body}</table>"

    @staticmethod
    def _row(r: dict) -> str:
        style = " style='color:#c62828'" if r["stale"] else ""
        util = r.get("kv_cache_utilization")
        cells = [
            html.escape(str(r["engine_id"])),
            f"{r['age_ms']:,}",
            f"{r['latency_pred_ms']:.1f}",
            html.escape(str(r["scheduling_mode"])),
            f"{r['pending_tokens_total']:,}",
            "-" if util is None or util != util else f"{util:.0%}",
            f"{r['engine_capacity']:.0f}",
            "stale" if r["stale"] else "",
        ]
        return f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
