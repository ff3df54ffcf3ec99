"""A job's widget (status, tasks, log tail, Stop) and the blocking wait with progress."""

from __future__ import annotations

import html

import ipywidgets as w

from jupyter_remote.kernel.widgets.base import Refreshing
from jupyter_remote.protocol import JOB_FINAL
from jupyter_remote.protocol.errors import RemoteError

JOB_COLORS = {
    "completed": "#2e7d32",
    "failed": "#c62828",
    "degraded": "#ef6c00",
    "stopped": "#757575",
    "running": "#1565c0",
    "pending": "#757575",
    "stopping": "#757575",
}


class JobWidget(Refreshing):
    """A job's status, elapsed time, tasks done/total, log tail and a Stop button (while it
    has not ended)."""

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
        # a finished job has nothing to stop: no button at all, not a disabled one
        self.stop_button.layout.display = "none" if self.ended else None
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
            self.show_error(exc)


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
