"""%remote_output: any execution's output shown again, in another kernel, live to its end."""

from __future__ import annotations

import time

import pytest
from test_kernel import stack, start_kernel, stop_kernel

from conftest import BUSYBOX

__all__ = ["stack"]


@pytest.fixture
def two_kernels(stack):
    made = [start_kernel(stack.server) for _ in range(2)]
    yield made
    for client in made:
        stop_kernel(client)


def shown(client, code: str, timeout: float = 60) -> list[tuple[str, object]]:
    """Every output in order: ("stdout"|"stderr", text), ("display", bundle), ("error", text)."""
    seen: list[tuple[str, object]] = []

    def hook(msg):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            seen.append((content["name"], content["text"]))
        elif kind == "display_data":
            seen.append(("display", content))
        elif kind == "error":
            seen.append(("error", "\n".join(content["traceback"])))

    client.execute_interactive(code, timeout=timeout, output_hook=hook)
    return seen


def text_of(seen, name: str) -> str:
    return "".join(t for kind, t in seen if kind == name)


def test_another_kernel_follows_a_running_cell_to_its_end(two_kernels):
    first, second = two_kernels
    cell = (
        f"%%remote --image {BUSYBOX}\n"
        "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.4; done; echo oops >&2; exit 3"
    )
    first.execute(cell)  # runs on while the other kernel attaches
    deadline = time.monotonic() + 30
    eid = None
    while eid is None and time.monotonic() < deadline:
        found = shown(
            second,
            "print([x['execution_id'] for x in "
            "__import__('jupyter_remote').RemoteClient().executions(limit=1)])",
        )
        ids = eval(text_of(found, "stdout") or "[]")  # noqa: S307 - our own print of a list
        eid = ids[0] if ids else None
        time.sleep(0.2)
    assert eid, "the first kernel's cell never reached the server"
    seen = shown(second, f"%remote_output {eid}")
    out = text_of(seen, "stdout")
    assert out == "".join(f"line {i}\n" for i in range(1, 7)), seen
    assert text_of(seen, "stderr").startswith("oops\n"), seen
    footer = [b for kind, b in seen if kind == "display"][-1]
    assert footer["metadata"]["jupyter_remote"] == {"execution_id": eid, "footer": True}
    line = footer["data"]["text/plain"]
    assert line.startswith("[remote] ") and BUSYBOX in line and "exit 3" in line, line
    result = shown(second, "print(_remote_output.returncode, _remote_output.execution_id)")
    assert text_of(result, "stdout").split() == ["3", eid]


def test_the_default_is_this_kernels_last_cell_and_bad_ids_are_one_line(two_kernels):
    first, _ = two_kernels
    shown(first, f"%%remote --image {BUSYBOX}\necho again")
    seen = shown(first, "%remote_output --no-follow")
    assert text_of(seen, "stdout") == "again\n", seen
    for bad, says in (("not/an/id", "not an execution id"), ("x-nope", "no execution 'x-nope'")):
        seen = shown(first, f"%remote_output {bad}")
        told = "".join(str(t) for kind, t in seen if kind in ("stderr", "error"))
        assert says in told and "Traceback" not in told and told.count("\n") <= 1, told
