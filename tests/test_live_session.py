"""A live session in every container, as a notebook user meets it: a real kernel runs a
notebook through a real server and real agents; the executed notebook's outputs are checked
(what is saved in the .ipynb is what the user sees)."""

from __future__ import annotations

import base64
import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import remove_containers
from processes import PYTHON, SCIPY
from stack import Stack

CELLS = {
    "load": "%load_ext jupyter_remote",
    "set": f"%%remote --python --image {PYTHON}\nx = 41",
    "use": f"%%remote --python --image {PYTHON}\nprint(x + 1)",
    "expr": f"%%remote --python --image {PYTHON}\nx * 2",
    "html": f"%%remote --python --image {PYTHON}\n"
    "class Card:\n"
    "    def _repr_html_(self):\n"
    "        return '<b>remote card</b>'\n"
    "Card()",
    "png": f"%%remote --python --image {PYTHON}\n"
    "import base64\n"
    "PNG = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==')\n"
    "class Dot:\n"
    "    def _repr_png_(self):\n"
    "        return PNG\n"
    "display(Dot())",
    "interrupt": f"%%remote --python --image {PYTHON} --timeout 2\nwhile True:\n    pass",
    "still": f"%%remote --python --image {PYTHON}\nprint('x is', x)",
    "crash": f"%%remote --python --image {PYTHON}\nimport os\nos._exit(1)",
    "after": f"%%remote --python --image {PYTHON}\nprint('alive')",
    "cd": f"%%remote --image {PYTHON}\ncd /tmp\nexport A=1",
    "pwd": f"%%remote --image {PYTHON}\npwd; echo $A",
    "plot": f"%%remote --python --image {SCIPY}\n"
    "import matplotlib.pyplot as plt\n"
    "plt.plot([1, 2, 3], [1, 4, 9])\n"
    "plt.title('squares')",
    "frame": f"%%remote --python --image {SCIPY}\n"
    "import pandas as pd\n"
    "pd.DataFrame({'n': [1, 2, 3], 'square': [1, 4, 9]})",
}


@pytest.fixture(scope="module")
def executed(docker_client):
    running = Stack().start()
    saved = {k: os.environ.get(k) for k in running.env}
    running.export()
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source, id=name) for name, source in CELLS.items()]
    try:
        NotebookClient(book, timeout=300, allow_errors=True, kernel_name="python3").execute()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        running.stop()
        for agent in running.agents:
            remove_containers(agent.containers(docker_client))
    return {cell.id: cell.outputs for cell in book.cells}


def text(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def bundles(outputs: list) -> list[dict]:
    return [o.data for o in outputs if o.output_type in ("display_data", "execute_result")]


def test_python_state_persists_between_cells(executed):
    assert text(executed["use"]).strip() == "42"


def test_a_final_expression_is_shown(executed):
    assert any(b.get("text/plain") == "82" for b in bundles(executed["expr"]))


def test_repr_html_and_repr_png_arrive_as_display_data(executed):
    assert any("<b>remote card</b>" in b.get("text/html", "") for b in bundles(executed["html"]))
    pngs = [b["image/png"] for b in bundles(executed["png"]) if "image/png" in b]
    assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG")


def test_an_interrupted_loop_keeps_the_state(executed):
    assert "x is 41" in text(executed["still"])


def test_a_crashed_interpreter_is_replaced_and_the_user_told(executed):
    after = text(executed["after"])
    assert "alive" in after and "state" in after.lower()


def test_shell_cells_keep_their_directory_and_exports(executed):
    assert text(executed["pwd"]).split() == ["/tmp", "1"]


def test_a_matplotlib_plot_and_a_dataframe_come_back_rich(executed):
    pngs = [b["image/png"] for b in bundles(executed["plot"]) if "image/png" in b]
    assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG")
    assert any("<table" in b.get("text/html", "") for b in bundles(executed["frame"]))
