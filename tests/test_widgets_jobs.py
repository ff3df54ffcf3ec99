"""JobWidget and %remote_jobs' JobListWidget as pure logic: job model dicts in, widgets out
(they make no HTTP calls of their own)."""

from __future__ import annotations

from test_widgets_nodes import live_widgets

from jupyter_remote.kernel.widgets import JobListWidget, JobWidget


def job(job_id: str, status: str = "running", **kw) -> dict:
    return {
        "job_id": job_id,
        "name": kw.pop("name", f"name-{job_id}"),
        "status": status,
        "autostop": False,
        "degraded": False,
        "tasks_lost": 0,
        "tasks_done": 0,
        "tasks_total": 1,
        "elapsed": kw.pop("elapsed", 1.0),
        "nodes_used": ["n1"],
        "tasks": [{"agent_job_id": None}],
        **kw,
    }


class Canned:
    """The client methods the job widgets call, answering what a test sets."""

    def __init__(self, jobs: list[dict]) -> None:
        self.answer = jobs
        self.calls = 0

    def jobs(self) -> list[dict]:
        self.calls += 1
        return self.answer

    def job(self, job_id: str) -> dict:
        return next(j for j in self.answer if j["job_id"] == job_id)


def test_a_finished_job_shows_no_stop_button():
    client = Canned([job("j-1")])
    widget = JobWidget(client, "j-1")
    widget.refresh()
    assert widget.stop_button.layout.display is None  # running: Stop is there
    widget.job = job("j-1", "completed")
    widget.refresh()
    assert widget.stop_button.layout.display == "none"
    widget.job = job("j-1", "stopped")
    widget.refresh()
    assert widget.stop_button.layout.display == "none"
    widget.close()


def test_the_job_list_refreshes_while_shown_and_changes_only_changed_rows():
    before = live_widgets()
    client = Canned([job("j-2", elapsed=3.0), job("j-1", "completed")])
    jobs = JobListWidget(client, interval=0.05).start()
    try:
        first, second = jobs.children[1], jobs.children[2]
        assert "j-2" in first.value and "running" in first.value
        finished = second.value
        client.answer = [job("j-2", "completed", elapsed=4.0), job("j-1", "completed")]
        for _ in range(200):  # its own thread picks the change up
            if "completed" in jobs.children[1].value:
                break
            jobs._closed.wait(0.01)
        assert jobs.children[1] is first and "completed" in first.value and "4.0 s" in first.value
        assert jobs.children[2] is second and second.value == finished
        client.answer = [job("j-3"), job("j-2", "completed", elapsed=4.0)]  # j-1 deleted
        jobs.refresh()
        assert "j-3" in jobs.children[1].value and "j-3" not in jobs.children[2].value
        assert jobs.children[2] is first and second not in jobs.children
    finally:
        jobs.close()
    calls = client.calls
    jobs._closed.wait(0.2)
    assert client.calls == calls  # closed: it stopped asking
    assert live_widgets() == before


def test_the_job_list_escapes_and_carries_a_static_table_for_viewers_without_widgets():
    jobs = JobListWidget(Canned([job("j-1", name="<script>x</script>")]))
    jobs.refresh()
    bundle = jobs._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    table = bundle["text/html"]
    assert "&lt;script&gt;x&lt;/script&gt;" in table and "<script>" not in table
    assert "<script>" not in jobs.children[1].value
    assert bundle["text/plain"] == "j-1  <script>x</script>  running  0/1 tasks  1.0 s"
    jobs.client.answer = []
    jobs.refresh()
    assert "no jobs" in jobs.children[1].value
    assert "no jobs" in jobs._repr_mimebundle_()["text/html"]
    assert jobs._repr_mimebundle_()["text/plain"] == "no jobs"
    jobs.close()
