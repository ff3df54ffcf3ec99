"""Python variables between the kernel and its live session: -i/-o, %remote_push/%remote_pull.

The kernel here runs numpy 2 / pandas 3; the scipy image numpy 1 / pandas 1: what crosses
must be readable by both.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

from conftest import exported_stack, remote_shell
from jupyter_remote.kernel import variables
from processes import SCIPY


@pytest.fixture(scope="module")
def stack(docker_client):
    yield from exported_stack(docker_client)


@pytest.fixture(scope="module")
def ip(stack):
    shell = remote_shell()
    shell.run_line_magic("remote_config", f"default_image={SCIPY}")
    yield shell
    shell.run_line_magic("remote_cleanup", "")


def cell(ip, line: str, body: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        ip.run_cell_magic("remote", line, body)
    return out.getvalue()


def test_a_dataframe_goes_in_and_a_result_comes_out(ip):
    frame = pd.DataFrame(
        {"n": [1, 2, 3], "name": ["a", "b", "c"]}, index=pd.Index([7, 8, 9], name="k")
    )
    ip.user_ns["df"] = frame
    ip.user_ns["weights"] = np.array([0.5, 1.0, 2.0])
    out = cell(
        ip,
        "--python -i df,weights -o out,total",
        "import pandas, numpy\n"
        "print(pandas.__version__.split('.')[0], numpy.__version__.split('.')[0])\n"
        "out = df.assign(w=df.n * weights)\n"
        "total = float(out.w.sum())",
    )
    assert out.split() == ["1", "1"]  # really the image's pandas 1 and numpy 1
    result = ip.user_ns["out"]
    assert isinstance(result, pd.DataFrame) and result.index.name == "k"
    assert list(result.w) == [0.5, 2.0, 6.0] and list(result.name) == ["a", "b", "c"]
    assert ip.user_ns["total"] == 8.5


def test_push_and_pull_line_magics(ip):
    ip.user_ns["grid"] = np.arange(12).reshape(3, 4)
    ip.run_line_magic("remote_push", "grid")
    cell(ip, "--python", "col_sums = grid.sum(axis=0)")
    ip.run_line_magic("remote_pull", "col_sums")
    assert ip.user_ns["col_sums"].tolist() == [12, 15, 18, 21]


def test_a_class_the_remote_side_lacks_is_one_line_naming_variable_and_module(ip):
    from jupyter_remote.protocol.errors import BadRequest

    ip.user_ns["err"] = BadRequest("local only")  # jupyter_remote is not in the image
    with pytest.raises(UsageError) as caught:
        cell(ip, "--python -i err", "print('never runs')")
    message = str(caught.value)
    assert "'err'" in message and "'jupyter_remote'" in message and "\n" not in message


def test_a_class_the_kernel_lacks_is_one_line_naming_variable_and_module(ip):
    with pytest.raises(UsageError) as caught:
        cell(
            ip,
            "--python -o thing",
            "import sys, pathlib\n"
            "pathlib.Path('/tmp/only_remote.py').write_text('class Thing:\\n    pass\\n')\n"
            "sys.path.insert(0, '/tmp')\n"
            "import only_remote\n"
            "thing = only_remote.Thing()",
        )
    message = str(caught.value)
    assert "thing" in message and "only_remote" in message and "\n" not in message
    assert "thing" not in ip.user_ns


def test_bad_use_is_refused_before_anything_runs(ip):
    with pytest.raises(UsageError, match="need --python"):
        cell(ip, "-i df", "echo shell")
    with pytest.raises(UsageError, match="no local variable 'nope'"):
        cell(ip, "--python -i nope", "print(1)")
    with pytest.raises(UsageError):
        cell(ip, "--python -i 'not a name'", "print(1)")


def test_values_round_trip_through_the_version_neutral_pickler():
    frame = pd.DataFrame({"x": [1.5, 2.5]}, index=pd.RangeIndex(2))
    back = variables.load("frame", variables.dumps(frame))
    pd.testing.assert_frame_equal(back, frame, check_index_type=False)
    assert variables.load("s", variables.dumps(np.int64(3))) == 3
    values, errors = variables.parse_marks(
        f"noise\n{variables.MARK} value a {__import__('base64').b64encode(b'xy').decode()}\n"
        f"{variables.MARK} error b is not defined in the remote session\n"
    )
    assert values == {"a": b"xy"} and errors == {"b": "is not defined in the remote session"}
