"""The persistent Python interpreter of a runner (a child process; stdlib only, 3.8+).

Started as ``python3 -u pyworker.py CMD_FD CTL_FD``. Cells arrive as JSON lines on CMD_FD;
display data and the end of each cell leave as JSON lines on CTL_FD. The cell's own output
goes to fd 1 and 2, which are pipes the runner reads, so subprocesses' output is captured too.
SIGINT during a cell raises KeyboardInterrupt in the cell; between cells it is ignored.
"""

from __future__ import annotations

import ast
import base64
import builtins
import json
import linecache
import os
import re
import signal
import sys
import traceback
import types

WORKER_FILE = os.path.abspath(__file__)
HERE = os.path.dirname(WORKER_FILE)
_cmd = os.fdopen(int(sys.argv[1]), "rb")
_ctl = os.fdopen(int(sys.argv[2]), "wb", buffering=0)
_in_cell = False
_formatter = None  # IPython's DisplayFormatter when the image has IPython, else False
_cell_names = {}  # a cell's file name ("<cell ID>") -> how tracebacks name it ("Cell In[3]")
CELL_FILE = re.compile(r'File "(<cell [A-Za-z0-9._-]+>)", line')

MIME_METHODS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("application/json", "_repr_json_"),
    ("text/latex", "_repr_latex_"),
    ("application/javascript", "_repr_javascript_"),
    ("application/pdf", "_repr_pdf_"),
)


def _send(message: dict) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a cell may have replaced or closed them
            pass
    _ctl.write(json.dumps(message, default=str).encode("utf-8", "replace") + b"\n")


def _send_display(data: dict, metadata: dict) -> None:
    """Send, then wait for the runner's ack: output written before is emitted before it."""
    _send({"type": "display", "data": data, "metadata": metadata})
    _cmd.readline()


def _on_sigint(signum, frame):
    if _in_cell:
        raise KeyboardInterrupt


def _method(obj, name):
    if isinstance(obj, type):
        return None
    try:
        method = getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - properties may raise
        return None
    return method if callable(method) else None


def _ipython_formatter():
    global _formatter
    if _formatter is None:
        _formatter = False
        if "IPython" in sys.modules or _has_module("IPython"):
            try:
                from IPython.core.formatters import DisplayFormatter

                _formatter = DisplayFormatter()
            except Exception:  # noqa: BLE001 - a broken IPython: use the plain formatter
                _formatter = False
    return _formatter


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _jsonable(data: dict, metadata: dict):
    out = {}
    for mime, value in data.items():
        if isinstance(value, (bytes, bytearray)):
            value = base64.b64encode(bytes(value)).decode("ascii")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[mime] = value
    try:
        json.dumps(metadata)
    except (TypeError, ValueError):
        metadata = {}
    return out, metadata


def format_object(obj, include=None, exclude=None):
    """A Jupyter mime bundle for ``obj``: (data, metadata); text/plain is always there."""
    formatter = _ipython_formatter()
    if formatter:
        try:
            data, metadata = formatter.format(obj, include=include, exclude=exclude)
            if data:
                data.setdefault("text/plain", repr(obj))
                return _jsonable(data, dict(metadata or {}))
        except Exception:  # noqa: BLE001 - fall back to the plain formatter
            pass
    data, metadata = {}, {}
    method = _method(obj, "_repr_mimebundle_")
    if method is not None:
        try:
            bundle = method(include=include, exclude=exclude)
            if isinstance(bundle, tuple):
                bundle, extra = bundle
                metadata.update(extra or {})
            data.update(bundle or {})
        except Exception:  # noqa: BLE001 - IPython ignores a failing repr too
            traceback.print_exc()
    for mime, name in MIME_METHODS:
        if mime in data:
            continue
        method = _method(obj, name)
        if method is None:
            continue
        try:
            value = method()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        if value is None:
            continue
        if isinstance(value, tuple) and len(value) == 2:
            value, extra = value
            metadata[mime] = extra
        data[mime] = value
    if "text/plain" not in data:
        data["text/plain"] = _plain(obj)
    return _jsonable(data, metadata)


def _plain(obj) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # noqa: BLE001
        return f"<repr failed: {exc!r}>"
    if len(text) > 80 and isinstance(obj, (dict, list, tuple, set)):
        import pprint

        try:
            return pprint.pformat(obj)
        except Exception:  # noqa: BLE001
            pass
    return text


def display(*objs, include=None, exclude=None, metadata=None, raw=False, **kwargs):
    """Show objects in the notebook, as IPython's ``display``."""
    for obj in objs:
        if raw:
            data, md = _jsonable(dict(obj), dict(metadata or {}))
        else:
            data, md = format_object(obj, include, exclude)
            if metadata:
                md.update(metadata)
        _send_display(data, md)


def flush_figures() -> None:
    """Every open matplotlib figure as image/png, then closed (what the inline backend does)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    import io

    try:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.canvas.print_figure(buf, format="png", bbox_inches="tight")
            png = base64.b64encode(buf.getvalue()).decode("ascii")
            _send_display({"image/png": png, "text/plain": repr(fig)}, {})
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    finally:
        try:
            plt.close("all")
        except Exception:  # noqa: BLE001
            pass


def _ours(filename: str) -> bool:
    """A frame of the runner's own code (this worker, its matplotlib backend)."""
    return filename == WORKER_FILE or filename.startswith(HERE + os.sep)


def _strip_ours(te, seen: set) -> None:
    """Our frames out of a traceback and of those it was raised from or during."""
    if te is None or id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if not _ours(f.filename)])
    _strip_ours(te.__cause__, seen)
    _strip_ours(te.__context__, seen)
    for inner in getattr(te, "exceptions", None) or ():
        _strip_ours(inner, seen)


def _name_cell(match) -> str:
    return _cell_names.get(match.group(1), "Cell In[?]") + ", line"


def format_exception(exc: BaseException) -> str:
    """The traceback as IPython names it: a cell's frames are "Cell In[N], line M", and
    none of the runner's own frames (the worker, a signal handler) are in it."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    _strip_ours(te, set())
    return CELL_FILE.sub(_name_cell, "".join(te.format()))


def _show_exception(exc: BaseException) -> None:
    sys.stderr.write(format_exception(exc))


def _name_warnings() -> None:
    """A warning from a cell says "Cell In[N]:LINE:", as its traceback would."""
    import warnings

    plain = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        text = plain(message, category, filename, lineno, line)
        name = _cell_names.get(filename)
        return text.replace(filename, name, 1) if name else text

    warnings.formatwarning = formatwarning


def run_cell(request: dict, namespace: dict):
    """Run one cell; (status, returncode) with status ok, error or interrupted."""
    global _in_cell
    code = request["code"]
    filename = f"<cell {request.get('id', '')}>"
    count = request.get("execution_count")
    _cell_names[filename] = f"Cell In[{count if isinstance(count, int) else '?'}]"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    for key, value in (request.get("env") or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        if request.get("workdir"):
            os.chdir(request["workdir"])
        tree = ast.parse(code, filename, "exec")
    except (SyntaxError, ValueError, OSError) as exc:
        _show_exception(exc.with_traceback(None))  # the cell's text, not the parser's frames
        return "error", 1
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    try:
        _in_cell = True
        exec(compile(tree, filename, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, filename, "eval"), namespace)
            if value is not None:
                namespace["_"] = value
                display(value)
        return "ok", 0
    except SystemExit as exc:
        _in_cell = False
        code = exc.code
        if code is None:
            return "ok", 0
        if isinstance(code, int):
            return ("ok" if code == 0 else "error"), code
        sys.stderr.write(f"{code}\n")
        return "error", 1
    except KeyboardInterrupt as exc:
        _in_cell = False
        _show_exception(exc)
        return "interrupted", 130
    except BaseException as exc:  # noqa: BLE001 - every error of the cell is the cell's
        _in_cell = False
        _show_exception(exc)
        return "error", 1
    finally:
        _in_cell = False


def main() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    # the user's code sees an interactive-like interpreter, not this script
    sys.path[0] = ""
    sys.path.append(os.path.join(HERE, "mpl"))
    sys.argv[:] = [""]
    sys.modules["_jupyter_remote_worker"] = sys.modules[__name__]
    user = types.ModuleType("__main__")
    user.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = user
    builtins.display = display
    _name_warnings()
    while True:
        try:
            line = _cmd.readline()
        except KeyboardInterrupt:
            continue
        if not line:
            os._exit(0)
        if not line.strip():
            continue  # an ack whose wait was interrupted
        try:
            request = json.loads(line)
            status, returncode = run_cell(request, user.__dict__)
            flush_figures()
        except KeyboardInterrupt:
            status, returncode = "interrupted", 130
        _send({"type": "done", "status": status, "returncode": returncode})


if __name__ == "__main__":
    main()
