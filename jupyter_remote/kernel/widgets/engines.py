"""The latest state per inference engine, from the server's gateway or a gateway's log."""

from __future__ import annotations

import html

import ipywidgets as w

from jupyter_remote.kernel.widgets.base import Refreshing

ENGINE_COLUMNS = (
    "engine_id",
    "age_ms",
    "latency_pred_ms",
    "scheduling_mode",
    "pending_tokens_total",
    "kv_cache_utilization",
    "engine_capacity",
)


class EngineStateWidget(Refreshing):
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
