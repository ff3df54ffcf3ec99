"""%remote_jobs' list: the server's jobs, refreshing while shown, so it never contradicts a
JobWidget beside it. One row per job, kept by id and changed only when the job did."""

from __future__ import annotations

import html

import ipywidgets as w

from jupyter_remote.kernel.widgets.base import Refreshing, close_all
from jupyter_remote.kernel.widgets.jobs import JOB_COLORS

COLUMNS = ("job", "name", "status", "tasks", "elapsed", "autostop", "")
_GRID = (
    "display:grid;grid-template-columns:11em 12em 7em 5em 5em 5em 8em;"
    "gap:0 .5em;font-family:var(--jp-code-font-family, monospace);font-size:90%"
)


def job_cells(job: dict) -> list[str]:
    """A job's cells as escaped HTML, in COLUMNS order."""
    color = JOB_COLORS.get(job["status"], "#757575")
    return [
        html.escape(job["job_id"]),
        html.escape(job["name"]),
        f"<span style='color:{color}'>{html.escape(job['status'])}</span>",
        f"{job['tasks_done']}/{job['tasks_total']}",
        f"{job['elapsed']:.1f} s",
        "yes" if job["autostop"] else "",
        f"<span style='color:#ef6c00'>{job['tasks_lost']} lost</span>" if job["degraded"] else "",
    ]


def _grid(cells: list[str], head: bool = False) -> str:
    tag = "b" if head else "span"
    return f"<div style='{_GRID}'>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</div>"


def jobs_table(jobs: list[dict]) -> str:
    """The same list as one static HTML table (for a viewer without widgets)."""
    if not jobs:
        return "<i>no jobs</i>"
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in job_cells(j)) + "</tr>" for j in jobs)
    return f"<table><tr>{head}</tr>{rows}</table>"


def jobs_text(jobs: list[dict]) -> str:
    """The same list as plain text (a terminal, a headless run)."""
    if not jobs:
        return "no jobs"
    lines = [
        f"{j['job_id']}  {j['name']}  {j['status']}  {j['tasks_done']}/{j['tasks_total']} tasks"
        f"  {j['elapsed']:.1f} s" + ("  autostop" if j["autostop"] else "")
        for j in jobs
    ]
    return "\n".join(lines)


class JobListWidget(Refreshing):
    """The newest jobs the server knows (newest first), refreshing every `interval` s.

    Rows are kept per job and set only when their text changes, so an unchanged row keeps a
    selection in the page; a job that leaves the list takes its row's widget with it.
    """

    interval = 2.0

    def __init__(self, client, interval: float | None = None, **kw) -> None:
        super().__init__(client, interval, **kw)
        self.header = w.HTML(_grid(list(COLUMNS), head=True))
        self.empty = w.HTML("<i>no jobs</i>")
        self.rows: dict[str, w.HTML] = {}
        self.jobs: list[dict] = []
        self.children = [self.header, self.error_view]

    def refresh(self) -> None:
        jobs = self.client.jobs()
        for job_id in set(self.rows) - {j["job_id"] for j in jobs}:
            close_all(self.rows.pop(job_id))
        for job in jobs:
            if job["job_id"] not in self.rows:
                self.rows[job["job_id"]] = w.HTML()
            row = self.rows[job["job_id"]]
            value = _grid(job_cells(job))
            if row.value != value:
                row.value = value
        self.jobs = jobs
        body = [self.rows[j["job_id"]] for j in jobs] if jobs else [self.empty]
        children = (self.header, *body, self.error_view)
        if tuple(self.children) != children:
            self.children = children

    def close(self) -> None:
        """Stop refreshing; the rows not shown now (and the empty line) go too."""
        for row in (self.empty, *self.rows.values()):
            if row not in self.children:
                close_all(row)
        super().close()

    def _repr_mimebundle_(self, **kwargs):
        """The live widget, and the list as it is now as text/html and text/plain, for a
        viewer that cannot show widgets."""
        data = super()._repr_mimebundle_(**kwargs)
        if data is not None:
            data["text/html"] = jobs_table(self.jobs)
            data["text/plain"] = jobs_text(self.jobs)
        return data
