"""The Remote panel as a panel people keep open, in a real JupyterLab driven in Debian's
chromium by Playwright: rows updated in place, errors that stay, a confirmation before a node
goes, a log that opens at its tail and follows, a session that opens its notebook."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from test_lab_panel import (
    CHROMIUM,
    OUTPUT,
    PANEL_TAB,
    page,
    run_cell,
    widen_sidebar,
    write_notebook,
)

from conftest import BUSYBOX
from server_process import LabProcess

__all__ = ["page"]  # the fixture, shared with test_lab_panel

CHATTY = (
    "for i in $(seq 1 300); do echo line $i; done; "
    "for i in $(seq 1 120); do sleep 1; echo tick $i; done"
)
AT_TAIL = "el => el.scrollTop + el.clientHeight >= el.scrollHeight - 8"


@pytest.fixture
def lab(tmp_path, make_agent):
    """Two agents and no engine-state gateway (the default)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium")
    calm = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100")
    agents = [make_agent(host=f"127.0.0.{i}", extra=calm) for i in (22, 23)]
    process = LabProcess(tmp_path, agents)
    process.start()
    process.agents = agents
    yield process
    process.stop()


def is_jobs_list(url: str) -> bool:
    """The panel's refresh asks for GET /remote/api/jobs (with a cache-busting query)."""
    return urlsplit(url).path.endswith("/remote/api/jobs")


def log_grows(log, before: int) -> None:
    """Wait until the followed log has more text than `before` characters."""
    log.page.wait_for_function(
        "([el, n]) => el.textContent.length > n", arg=[log.element_handle(), before]
    )


def test_a_panel_to_keep_open(lab, page, tmp_path):
    write_notebook(
        tmp_path / "keep_open.ipynb",
        ["%load_ext jupyter_remote", f"%%remote --image {BUSYBOX}\necho hi from the session"],
    )
    job = lab.post(
        "jobs", body={"name": "chatty", "image": BUSYBOX, "tasks": [{"command": CHATTY}]}
    )
    crashes: list[str] = []  # uncaught errors and unhandled promise rejections in the page
    page.on("pageerror", lambda error: crashes.append(str(error)))
    refreshes: list[str] = []
    page.on("response", lambda r: refreshes.append(r.url) if is_jobs_list(r.url) else None)
    page.goto(f"{lab.lab_url}/tree/keep_open.ipynb?token={lab.token}")
    with page.expect_response(lambda r: "/remote/api/engine-states" in r.url) as answer:
        page.locator(PANEL_TAB).click()
    panel = page.locator("#jupyter-remote-panel")

    # with the gateway off the server says so, and the panel shows no Engine states at all
    assert answer.value.json()["enabled"] is False
    expect(panel.locator(".jr-nodes")).to_be_visible()
    widen_sidebar(page)
    expect(panel.locator(".jr-engines")).to_be_hidden()

    # the job's log opens at its tail and follows it; a reader who scrolled up stays there
    row = panel.locator(f'.jr-job[data-job="{job["job_id"]}"]')
    expect(row.locator(".jr-status")).to_have_text("running", timeout=30_000)
    row.locator(".jr-show-log").click()
    log = panel.locator(".jr-log")
    expect(log).to_contain_text("line 300", timeout=20_000)
    expect(log).to_contain_text("tick 1", timeout=20_000)
    assert log.evaluate("el => el.scrollHeight > el.clientHeight")  # there is a top to leave
    assert log.evaluate(AT_TAIL)
    log_grows(log, len(log.text_content()))
    assert log.evaluate(AT_TAIL)  # it followed the new line
    log.evaluate("el => { el.scrollTop = 0; }")
    log_grows(log, len(log.text_content()))
    assert log.evaluate("el => el.scrollTop") == 0

    # refreshes update rows in place: a selected job id, a hover and the row itself survive
    code = row.locator(".jr-id")
    code.evaluate(
        "el => { const r = document.createRange(); r.selectNodeContents(el);"
        " getSelection().removeAllRanges(); getSelection().addRange(r); }"
    )
    row.locator(".jr-show-log").hover()
    handle = row.element_handle()
    elapsed = row.locator(".jr-elapsed").text_content()
    seen = len(refreshes)
    page.wait_for_timeout(5_000)
    assert len(refreshes) >= seen + 2, refreshes  # more than two refreshes happened
    assert row.locator(".jr-elapsed").text_content() != elapsed  # and changed the row
    assert page.evaluate("() => getSelection().toString()") == job["job_id"]
    assert handle.evaluate("el => el.isConnected")
    assert row.locator(".jr-show-log").evaluate("el => el.matches(':hover')")

    # the notebook's session, whose row opens it
    idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    expect(idle).to_have_count(1, timeout=120_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    for n in (0, 1):
        run_cell(page, cells.nth(n))
        expect(cells.nth(n).locator(".jp-InputPrompt")).to_contain_text(
            f"[{n + 1}]", timeout=90_000
        )
    expect(cells.nth(1).locator(".jp-OutputArea")).to_contain_text("hi from the session")
    session = panel.locator(".jr-session", has_text="keep_open.ipynb")
    expect(session.locator(".jr-notebook")).to_have_attribute("title", "keep_open.ipynb")

    # a refused agent's error stays through refreshes until it is dismissed
    form = panel.locator("form.jr-add")
    form.locator('input[name="url"]').fill("http://127.0.0.1:9")
    form.get_by_role("button", name="Add").click()
    error = panel.locator(".jr-nodes .jr-error")
    expect(error).to_contain_text("Add node:", timeout=30_000)
    seen = len(refreshes)
    page.wait_for_timeout(5_000)
    assert len(refreshes) >= seen + 2
    expect(error).to_be_visible()
    log.evaluate("el => { el.scrollTop = el.scrollHeight; }")
    os.makedirs(OUTPUT, exist_ok=True)
    panel.screenshot(path=os.path.join(OUTPUT, "lab-panel-keep-open.png"))
    error.locator(".jr-dismiss").click()
    expect(error).to_have_count(0)

    # a session row opens its notebook (closed meanwhile)
    cells.nth(1).locator(".jp-InputPrompt").click()
    page.keyboard.press("Control+s")
    tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text="keep_open.ipynb")
    expect(tab).not_to_have_class(re.compile("jp-mod-dirty"))
    tab.locator(".lm-TabBar-tabCloseIcon").click()
    expect(tab).to_have_count(0)
    session.locator(".jr-notebook").click()
    expect(tab).to_have_count(1)
    expect(tab).to_have_class(re.compile("jp-mod-current"))
    expect(page.locator(".jp-NotebookPanel .jp-OutputArea").nth(1)).to_contain_text(
        "hi from the session"
    )

    # ✕ on a node asks first: Cancel keeps it, Remove removes it
    busy = lab.get("jobs", job["job_id"])["tasks"][0]["node_id"]
    other = next(a for a in lab.agents if a.node_id != busy)
    node = panel.locator(f'.jr-node[data-node="{other.node_id}"]')
    node.locator(".jr-remove").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text(f"Remove node {other.node_id}")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    page.wait_for_timeout(2_500)
    expect(node).to_have_count(1)
    assert len(lab.get("nodes")["nodes"]) == 2
    node.locator(".jr-remove").click()
    dialog.get_by_role("button", name="Remove").click()
    expect(node).to_have_count(0, timeout=20_000)
    assert [n["node_id"] for n in lab.get("nodes")["nodes"]] == [busy]

    # Stop ends the job, and a finished job shows no Stop
    row.locator(".jr-stop").click()
    expect(row.locator(".jr-status")).to_have_text("stopped", timeout=30_000)
    expect(row.locator(".jr-stop")).to_be_hidden()
    expect(row.locator(".jr-show-log")).to_be_visible()

    # a section folds with a click on its title, and stays folded after a reload
    panel.locator(".jr-nodes > summary").click()
    expect(panel.locator(".jr-nodes .jr-body")).to_be_hidden()
    expect(panel.locator(".jr-jobs .jr-body")).to_be_visible()
    page.reload()
    expect(panel.locator(".jr-jobs .jr-job")).to_have_count(1, timeout=60_000)
    expect(panel.locator(".jr-nodes .jr-body")).to_be_hidden()
    panel.locator(".jr-nodes > summary").click()
    expect(panel.locator(".jr-nodes .jr-node")).to_have_count(1)
    assert crashes == []
