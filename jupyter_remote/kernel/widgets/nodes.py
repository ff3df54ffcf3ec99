"""The pool's nodes: one row per node (state, CPU / memory / disk bars, a bar per GPU
with who holds it, running work, health warnings), updated in place."""

from __future__ import annotations

import html

import ipywidgets as w

from jupyter_remote.kernel.widgets.base import Refreshing, close_all

STATE_COLORS = {
    "healthy": "#2e7d32",
    "busy": "#b26a00",
    "unhealthy": "#ef6c00",
    "drained": "#6d4c41",  # its engine (Swarm) gives it no new work
    "suspect": "#f9a825",
    "lost": "#c62828",
    "unknown": "#757575",
}


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


def gpu_percent(device: dict) -> float | None:
    """What a GPU's bar shows: its utilisation, else its memory in use, else None (a GPU
    known by index only)."""
    if device.get("utilization") is not None:
        return float(device["utilization"])
    used, total = device.get("memory_used"), device.get("memory_total")
    if used is not None and total:
        return 100.0 * used / total
    return None


class _GpuBar(w.HBox):
    """One GPU: index and model, a bar (utilisation or memory), and who holds it."""

    def __init__(self) -> None:
        self.label = w.HTML(layout=w.Layout(width="3.5em"))
        self.bar = w.FloatProgress(min=0, max=100, layout=w.Layout(width="9em"))
        self.figure = w.Label(layout=w.Layout(width="3.5em"))
        self.holder = w.HTML()
        super().__init__([self.label, self.bar, self.figure, self.holder])

    def update(self, device: dict) -> None:
        model = html.escape(str(device.get("model") or "GPU"))
        self.label.value = f"<span title='{model}'>gpu{int(device.get('index', 0))}</span>"
        percent = gpu_percent(device)
        held = device.get("held_by") or []
        self.bar.value = percent if percent is not None else (100.0 if held else 0.0)
        self.bar.bar_style = "info" if held else "success"
        self.figure.value = f"{percent:.0f}%" if percent is not None else ""
        self.holder.value = (
            html.escape(", ".join(map(str, held)))
            if held
            else "<span style='color:#757575'>free</span>"
        )


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
        self.gpus = w.VBox()
        self.gpu_bars: list[_GpuBar] = []
        self.work = w.HTML()
        self.problems = w.HTML()
        super().__init__(
            [
                self.name,
                w.VBox(list(self.bars.values())),
                self.gpus,
                w.VBox([self.work, self.problems]),
            ]
        )

    def update_gpus(self, gpus: dict | None) -> None:
        """A bar per GPU; bars are kept and reused, so a refresh makes no new widgets."""
        devices = (gpus or {}).get("devices") or []
        gone = self.gpu_bars[len(devices) :]
        self.gpu_bars = self.gpu_bars[: len(devices)]
        while len(self.gpu_bars) < len(devices):
            self.gpu_bars.append(_GpuBar())
        for bar, device in zip(self.gpu_bars, devices, strict=True):
            bar.update(device)
        if tuple(self.gpus.children) != tuple(self.gpu_bars):
            self.gpus.children = tuple(self.gpu_bars)
        for bar in gone:  # out of the box first, then closed with all it holds
            close_all(bar)

    def update(self, node: dict) -> None:
        state = node["state"]
        marker = {"healthy": "", "busy": "⚠ ", "drained": "⏸ "}.get(state, "✖ ")
        color = STATE_COLORS.get(state, "#757575")
        labels = " · ".join(f"{k}={v}" for k, v in (node.get("labels") or {}).items())
        self.name.value = (
            f"<b>{html.escape(node['node_id'])}</b><br>"
            f"<span style='color:{color}' title='{html.escape(node.get('reason') or '')}'>"
            f"{marker}{html.escape(state)}</span>"
            + (f"<br><span style='color:#757575'>{html.escape(labels)}</span>" if labels else "")
        )
        for key, bar in self.bars.items():
            bar.update((node.get(key) or {}).get("percent"))
        self.update_gpus(node.get("gpus"))
        work = f"{node.get('running_executions', 0)} running"
        gpus = node.get("gpus") or {}
        if gpus.get("count"):
            work += f"<br>{int(gpus.get('free', 0))} of {int(gpus['count'])} GPUs free"
        self.work.value = work
        warnings, critical = health_problems(node)
        lines = [f"<span style='color:#c62828'>✖ {html.escape(m)}</span>" for m in critical]
        lines += [
            f"<span style='color:{STATE_COLORS['busy']}'>⚠ {html.escape(m)}</span>"
            for m in warnings
        ]
        self.problems.value = "<br>".join(lines)


class NodesWidget(Refreshing):
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
