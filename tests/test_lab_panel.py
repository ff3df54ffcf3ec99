"""The Remote panel in a real JupyterLab, driven in Debian's chromium by Playwright."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import tempfile
import time

import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import BUSYBOX, PYTHON
from server_process import LabProcess
from test_gateway import send, state

CHROMIUM = "/usr/bin/chromium"
OUTPUT = os.path.join(os.path.dirname(__file__), "..", "test-output")
PANEL_TAB = 'li.lm-TabBar-tab[data-id="jupyter-remote-panel"]'


@pytest.fixture
def lab(tmp_path, make_agent):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium")
    # never busy from a loaded test machine (CPU can only reach 100 %): they read "healthy"
    calm = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100")
    agents = [make_agent(host=f"127.0.0.{i}", extra=calm) for i in (12, 13)]
    busy = make_agent(host="127.0.0.14", extra=("--AgentApp.memory_max=0",))  # always "busy"

    def code(source: str) -> dict:
        return {
            "cell_type": "code",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
            "source": source,
        }

    notebook = {
        "cells": [
            code("%load_ext jupyter_remote"),
            code(
                f"%%remote --detach --name from-a-cell --image {BUSYBOX}\n"
                "for i in $(seq 1 120); do echo tick $i; sleep 1; done"
            ),
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (tmp_path / "start_job.ipynb").write_text(json.dumps(notebook))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        gateway_port = udp.getsockname()[1]
    process = LabProcess(
        tmp_path, [*agents, busy], gateway_port=gateway_port, stale_threshold_ms=60_000
    )
    process.start()
    process.agents, process.busy, process.gateway_port = agents, busy, gateway_port
    yield process
    process.stop()


@pytest.fixture
def page(lab):
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="jr-chromium-"),
            executable_path=CHROMIUM,
            headless=True,
            viewport={"width": 1400, "height": 900},
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(30_000)
        yield page
        context.close()


def test_the_panel_shows_nodes_jobs_and_node_states(lab, page):
    page.goto(f"{lab.lab_url}/tree/start_job.ipynb?token={lab.token}")
    page.locator(PANEL_TAB).click()
    panel = page.locator("#jupyter-remote-panel")
    expect(panel.locator(".jr-node")).to_have_count(3)
    widen_sidebar(page)
    for agent in lab.agents:
        node = panel.locator(f'.jr-node[data-node="{agent.node_id}"]')
        expect(node.locator(".jr-state")).to_have_text("healthy")
        expect(node.locator(".jr-bar")).to_have_count(3)
        expect(node.locator(".jr-warnings")).to_be_hidden()
    # a busy node (memory over its limit) shows a warning badge and why, not an error
    busy = panel.locator(f'.jr-node[data-node="{lab.busy.node_id}"]')
    expect(busy.locator(".jr-state.jr-busy")).to_have_text("busy")
    expect(busy.locator(".jr-warnings")).to_contain_text("memory use")

    # a job started from a notebook cell appears in the panel
    cells = page.locator(".jp-Notebook .jp-Cell")
    expect(cells).to_have_count(2)
    # a kernel starts slowly on a loaded machine: run cells once it says idle
    idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    expect(idle).to_have_count(1, timeout=120_000)
    run_cell(page, cells.first)  # %load_ext, once the kernel is up
    expect(cells.first.locator(".jp-InputPrompt")).to_contain_text("[1]", timeout=60_000)
    run_cell(page, cells.nth(1))  # %%remote --detach
    job = panel.locator(".jr-job", has_text="from-a-cell")
    expect(job.locator(".jr-status")).to_have_text("running", timeout=60_000)

    # the log view follows it; Stop changes its status
    job.locator(".jr-show-log").click()
    expect(panel.locator(".jr-log")).to_contain_text("tick 2", timeout=20_000)
    job.locator(".jr-stop").click()
    expect(job.locator(".jr-status")).to_have_text("stopped", timeout=20_000)
    expect(job.locator(".jr-stop")).to_be_hidden()  # a finished job has nothing to stop

    # engine states from the in-server gateway (on here: the section shows), the stale one marked
    expect(panel.locator(".jr-engines")).to_be_visible()
    now = int(time.time() * 1000)
    send(lab.gateway_port, [state("engine-a", now), state("engine-b", now - 120_000)])
    expect(panel.locator(".jr-engines tr.jr-stale")).to_contain_text("engine-b")
    expect(panel.locator(".jr-engines tr", has_text="engine-a")).not_to_have_class("jr-stale")

    # an agent that stops answering turns suspect
    frozen = lab.agents[1]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        node = panel.locator(f'.jr-node[data-node="{frozen.node_id}"] .jr-state')
        expect(node).to_have_text("suspect", timeout=20_000)
        seen = panel.locator(f'.jr-node[data-node="{frozen.node_id}"] .jr-seen')
        expect(seen).to_have_text(re.compile(r"last seen (just now|\d+ s ago)"))
        os.makedirs(OUTPUT, exist_ok=True)
        panel.screenshot(path=os.path.join(OUTPUT, "lab-panel.png"))
    finally:
        frozen.proc.send_signal(signal.SIGCONT)


def widen_sidebar(page, pixels: int = 130) -> None:
    """Drag the left sidebar's edge, so the screenshots show the panel at a readable width."""
    panel = page.locator("#jupyter-remote-panel")
    width = panel.bounding_box()["width"]
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pixels, y, steps=5)
    page.mouse.up()
    assert panel.bounding_box()["width"] > width + pixels / 2


def write_notebook(path, sources: list[str]) -> None:
    cells = [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": s}
        for s in sources
    ]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook = {"cells": cells, "metadata": {"kernelspec": kernelspec}}
    path.write_text(json.dumps({**notebook, "nbformat": 4, "nbformat_minor": 5}))


def run_cell(page, cell) -> None:
    """Shift+Enter on a cell; pressed again if the notebook had not taken the key yet."""
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(5):
        prompt.click()
        expect(cell).to_have_class(re.compile("jp-mod-active"))
        page.keyboard.press("Shift+Enter")
        try:
            expect(prompt).not_to_have_text("[ ]:", timeout=5_000)
            return
        except AssertionError:
            continue
    raise AssertionError("the cell never started")


def test_the_sessions_section_shows_what_runs_where_and_interrupts(lab, page, tmp_path):
    write_notebook(
        tmp_path / "where_it_runs.ipynb",
        [
            "%load_ext jupyter_remote",
            f"%%remote --image {PYTHON}\necho hello from the session",
            f"%%remote --image {PYTHON}\nfor i in $(seq 1 600); do echo $i; sleep 0.1; done",
        ],
    )
    crashes: list[str] = []  # uncaught errors and unhandled promise rejections in the page
    page.on("pageerror", lambda error: crashes.append(str(error)))
    page.goto(f"{lab.lab_url}/tree/where_it_runs.ipynb?token={lab.token}")
    page.locator(PANEL_TAB).click()
    panel = page.locator("#jupyter-remote-panel")
    widen_sidebar(page)
    idle = page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    expect(idle).to_have_count(1, timeout=120_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    for n in (0, 1):
        run_cell(page, cells.nth(n))
        prompt = cells.nth(n).locator(".jp-InputPrompt")
        expect(prompt).to_contain_text(f"[{n + 1}]", timeout=90_000)
    expect(cells.nth(1).locator(".jp-OutputArea")).to_contain_text("hello from the session")

    # the notebook's session: its name (path on hover), node, image, runner path, idle
    row = panel.locator(".jr-session", has_text="where_it_runs.ipynb")
    expect(row).to_have_count(1)
    expect(row.locator(".jr-notebook")).to_have_attribute("title", "where_it_runs.ipynb")
    expect(row.locator(".jr-state")).to_have_text("idle")
    expect(row.locator(".jr-where")).to_contain_text(PYTHON)
    expect(row.locator(".jr-where")).to_contain_text("runner")
    idle_text = re.compile(r"idle (since just now|for \d+ (s|min))")
    expect(row.locator(".jr-activity")).to_have_text(idle_text)
    expect(row.locator(".jr-interrupt")).to_be_disabled()

    # a long cell shows as running with its elapsed time; Interrupt from the panel ends it
    run_cell(page, cells.nth(2))
    expect(row.locator(".jr-state")).to_have_text("running", timeout=30_000)
    expect(row.locator(".jr-activity")).to_have_text(
        re.compile(r"running for [2-9] s"), timeout=20_000
    )
    expect(cells.nth(2).locator(".jp-OutputArea")).to_contain_text("20", timeout=20_000)
    expect(row.locator(".jr-usage")).to_contain_text("MB")
    os.makedirs(OUTPUT, exist_ok=True)
    page.screenshot(path=os.path.join(OUTPUT, "lab-panel-sessions.png"))
    row.locator(".jr-interrupt").click()
    prompt = cells.nth(2).locator(".jp-InputPrompt")
    expect(prompt).to_contain_text("[3]", timeout=30_000)
    expect(cells.nth(2).locator(".jp-OutputArea")).to_contain_text("[remote] exit")
    assert "600" not in cells.nth(2).locator(".jp-OutputArea").inner_text()
    expect(row.locator(".jr-state")).to_have_text("idle", timeout=20_000)
    ending = cells.nth(2).locator(".jp-OutputArea-output", has_text="[remote] exit")
    ending.scroll_into_view_if_needed()
    page.screenshot(path=os.path.join(OUTPUT, "lab-panel-sessions-interrupted.png"))

    # Remove asks first; Cancel keeps the session, Remove removes it
    row.locator(".jr-remove-session").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("where_it_runs.ipynb")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(row).to_have_count(1)

    # a failed action shows a JupyterLab error dialog (the answer of a node that went away)
    def refuse(route):
        answer = {"message": "node n9 did not answer", "reason": "node_unavailable"}
        route.fulfill(status=502, content_type="application/json", body=json.dumps(answer))

    page.route(lambda url: "/remote/api/sessions/" in url, refuse)
    row.locator(".jr-remove-session").click()
    dialog.get_by_role("button", name="Remove").click()
    failed = page.locator(".jp-Dialog", has_text="node n9 did not answer")
    expect(failed).to_contain_text("Remove session failed")
    failed.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)
    page.unroute_all()
    expect(row).to_have_count(1)

    row.locator(".jr-remove-session").click()
    dialog.get_by_role("button", name="Remove").click()
    expect(row).to_have_count(0, timeout=20_000)
    assert lab.get("sessions")["sessions"] == []
    assert crashes == []


def test_without_the_server_extension_one_message_and_no_stream_of_errors(tmp_path):
    lab = LabProcess(tmp_path, [])
    config = json.loads(lab.config.read_text())
    config["ServerApp"]["jpserver_extensions"] = {"jupyter_remote_server": False}
    lab.config.write_text(json.dumps(config))
    lab.wait_for = lambda check, timeout: None  # no /remote/api to wait for
    lab.start()
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                tempfile.mkdtemp(prefix="jr-chromium-"),
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--no-first-run",
                ],
            )
            page = context.pages[0] if context.pages else context.new_page()
            calls = []
            page.on("request", lambda r: calls.append(r.url) if "/remote/api/" in r.url else None)
            for _ in range(60):
                try:
                    page.goto(f"{lab.lab_url}?token={lab.token}")
                    break
                except Exception:  # noqa: BLE001 - Lab is still starting
                    time.sleep(0.5)
            page.locator(PANEL_TAB).click(timeout=60_000)
            message = page.locator("#jupyter-remote-panel .jr-message")
            expect(message).to_contain_text("server extension is not enabled", timeout=30_000)
            seen = len(calls)
            page.wait_for_timeout(5000)
            assert len(calls) == seen and seen <= 4, calls  # it stopped asking
            context.close()
    finally:
        lab.stop()
