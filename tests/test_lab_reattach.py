"""A remote cell survives the browser: reload, closed tab, save; in a real JupyterLab driven in
Debian's chromium by Playwright, with a real agent and the real Docker engine."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from playwright.sync_api import expect
from test_lab_panel import CHROMIUM, page, run_cell

from conftest import BUSYBOX
from server_process import LabProcess

__all__ = ["page"]

KERNEL_IDLE = '.jp-Notebook-ExecutionIndicator[data-status="idle"]'


@pytest.fixture
def lab(tmp_path, make_agent):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium")
    calm = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100")
    process = LabProcess(tmp_path, [make_agent(host="127.0.0.15", extra=calm)])
    process.start()
    process.root = tmp_path
    yield process
    process.stop()


def write_notebook(path, cells: dict[str, str]) -> None:
    """Cells with ids (nbformat 4.5), as JupyterLab saves them."""
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "id": cell_id,
                "metadata": {},
                "outputs": [],
                "execution_count": None,
                "source": source,
            }
            for cell_id, source in cells.items()
        ],
        "metadata": {"kernelspec": kernelspec},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook))


def open_notebook(page, lab, name: str):
    page.goto(f"{lab.lab_url}/tree/{name}?token={lab.token}")
    cells = page.locator(".jp-Notebook .jp-Cell")
    expect(page.locator(KERNEL_IDLE)).to_have_count(1, timeout=120_000)
    return cells


def save(page) -> None:
    """Ctrl+S, as a user saves: what the page filled in is part of the notebook model."""
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+s")


def numbered(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.fullmatch(r"line \d+", line)]


def saved_stdout(path, index: int) -> str:
    cell = json.loads(path.read_text())["cells"][index]
    return "".join(
        "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
        for o in cell["outputs"]
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def test_a_reload_while_a_cell_streams_fills_it_in_and_follows_it_live(lab, page):
    lines = 24
    notebook = lab.root / "stream.ipynb"
    write_notebook(
        notebook,
        {
            "load": "%load_ext jupyter_remote",
            "stream": f"%%remote --image {BUSYBOX}\n"
            f"for i in $(seq 1 {lines}); do echo line $i; sleep 0.5; done",
        },
    )
    cells = open_notebook(page, lab, "stream.ipynb")
    run_cell(page, cells.first)
    expect(cells.first.locator(".jp-InputPrompt")).to_contain_text("[1]", timeout=60_000)
    run_cell(page, cells.nth(1))
    expect(cells.nth(1).locator(".jp-OutputArea")).to_contain_text("line 3", timeout=60_000)

    page.reload()
    cells = page.locator(".jp-Notebook .jp-Cell")
    output = cells.nth(1).locator(".jp-OutputArea")
    # without any other action: every line so far, then it keeps growing live
    expect(output).to_contain_text("line 4", timeout=30_000)
    early = numbered(output.inner_text())
    assert early == [f"line {i}" for i in range(1, len(early) + 1)], early
    assert len(early) < lines, "the cell had ended before the page came back: nothing was live"
    expect(output.locator(".jr-footer")).to_contain_text("exit 0", timeout=60_000)
    whole = output.inner_text()
    assert numbered(whole) == [f"line {i}" for i in range(1, lines + 1)], whole
    footer = output.locator(".jr-footer").inner_text()
    assert BUSYBOX in footer and footer.startswith("[remote] "), footer
    save(page)
    deadline = time.monotonic() + 20
    while saved_stdout(notebook, 1).count("\n") < lines and time.monotonic() < deadline:
        time.sleep(0.5)
    assert numbered(saved_stdout(notebook, 1)) == [f"line {i}" for i in range(1, lines + 1)]


def test_a_closed_page_reopened_after_the_end_and_a_detached_job_come_back(lab, page):
    notebook = lab.root / "closed.ipynb"
    write_notebook(
        notebook,
        {
            "load": "%load_ext jupyter_remote",
            "short": f"%%remote --image {BUSYBOX}\n"
            "for i in $(seq 1 8); do echo line $i; sleep 0.5; done; echo warn >&2; exit 4",
            "job": f"%%remote --detach --name back-after-reload --image {BUSYBOX}\nsleep 120",
        },
    )
    cells = open_notebook(page, lab, "closed.ipynb")
    run_cell(page, cells.first)
    expect(cells.first.locator(".jp-InputPrompt")).to_contain_text("[1]", timeout=60_000)
    run_cell(page, cells.nth(2))  # the job first: it runs on while the page is away
    expect(cells.nth(2).locator(".jp-OutputArea")).to_contain_text(
        "back-after-reload", timeout=60_000
    )
    run_cell(page, cells.nth(1))
    expect(cells.nth(1).locator(".jp-OutputArea")).to_contain_text("line 1", timeout=60_000)
    page.goto("about:blank")  # the tab is gone; the cell runs on

    def ended():
        rows = lab.get("executions")["executions"]
        return any(r.get("cell_id") == "short" and r["status"] == "failed" for r in rows)

    lab.wait_for(ended, timeout=60)
    cells = open_notebook(page, lab, "closed.ipynb")
    output = cells.nth(1).locator(".jp-OutputArea")
    expect(output.locator(".jr-footer")).to_contain_text("exit 4", timeout=30_000)
    assert numbered(output.inner_text()) == [f"line {i}" for i in range(1, 9)]
    expect(
        output.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    ).to_contain_text("warn")
    job = cells.nth(2).locator(".jr-job-view")
    expect(job).to_contain_text("back-after-reload", timeout=30_000)
    expect(job).to_contain_text("running")
    expect(job.locator(".jr-job-stop")).to_be_visible()
    save(page)
    deadline = time.monotonic() + 20
    while "line 8" not in saved_stdout(notebook, 1) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert numbered(saved_stdout(notebook, 1)) == [f"line {i}" for i in range(1, 9)]
    job.locator(".jr-job-stop").click()
    expect(job).to_contain_text("stopped", timeout=30_000)
    expect(job.locator(".jr-job-stop")).to_be_hidden()


def test_run_all_stops_at_a_cell_on_an_unknown_node(lab, page):
    write_notebook(
        lab.root / "run_all.ipynb",
        {
            "load": "%load_ext jupyter_remote",
            "refused": "%%remote --node no-such-node\necho ran-anyway",
            "after": "print('the next cell ran')",
        },
    )
    cells = open_notebook(page, lab, "run_all.ipynb")
    run_cell(page, cells.first)  # the kernel takes cells now (a loaded machine is slow)
    expect(cells.first.locator(".jp-InputPrompt")).to_contain_text("[1]", timeout=60_000)
    for _ in range(3):  # Run All from the menu, again if the menu had not taken the click
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        try:
            expect(cells.nth(1).locator(".jp-InputPrompt")).not_to_have_text("[ ]:", timeout=10_000)
            break
        except AssertionError:
            continue
    refused = cells.nth(1).locator(".jp-OutputArea")
    expect(refused).to_contain_text("not run: no node 'no-such-node'", timeout=60_000)
    expect(refused).not_to_contain_text("Traceback")
    page.wait_for_timeout(3000)  # the next cell had its chance to run
    expect(cells.nth(2).locator(".jp-InputPrompt")).to_have_text("[ ]:")
    expect(cells.nth(2).locator(".jp-OutputArea")).not_to_contain_text("the next cell ran")
