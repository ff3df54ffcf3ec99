"""Moving Python variables between the kernel and a live session (`-i`/`-o`, push/pull).

Values travel as pickles (protocol 4, which every Python 3.4+ reads) inside an ordinary
Python cell, one variable at a time, so a failure names the variable. numpy arrays and
pandas objects are pickled by what both sides' versions understand (an .npy image, and
the DataFrame/Series/Index constructors), not by their private reconstructors: the kernel
may run numpy 2 and pandas 3 while the image has numpy 1 and pandas 1.
"""

from __future__ import annotations

import base64
import pickle

PROTOCOL = 4
MARK = "__jupyter_remote_var__"

# Runs on both sides: locally by exec(), remotely as the head of a cell. Python 3.8+.
PICKLER_SOURCE = r"""
import io as _jr_io, pickle as _jr_pickle

class _JrPickler(_jr_pickle.Pickler):
    def reducer_override(self, obj):
        kind = type(obj)
        module = getattr(kind, "__module__", "") or ""
        if module.startswith("numpy") and kind.__name__ == "ndarray":
            import numpy
            if obj.dtype.hasobject:  # items one by one, through this pickler
                return numpy.array, (obj.tolist(), "O")
            buf = _jr_io.BytesIO()
            numpy.save(buf, obj, allow_pickle=False)
            return numpy.load, (_jr_io.BytesIO(buf.getvalue()),)
        if module.startswith("numpy") and hasattr(obj, "item") and hasattr(obj, "dtype"):
            import numpy
            if isinstance(obj, numpy.generic):  # a scalar: its type by its public name
                return getattr(numpy, kind.__name__, type(obj.item())), (obj.item(),)
        if module.startswith("pandas"):
            import pandas
            if isinstance(obj, pandas.Index) and not isinstance(obj, pandas.MultiIndex):
                return pandas.Index, (obj.to_numpy(), None, False, obj.name)
            if isinstance(obj, pandas.Series):
                return pandas.Series, (obj.to_numpy(), obj.index, None, obj.name)
            if isinstance(obj, pandas.DataFrame) and obj.columns.is_unique:
                columns = {c: obj[c].to_numpy() for c in obj.columns}
                return pandas.DataFrame, (columns, obj.index)
        return NotImplemented

def _jr_dumps(value):
    buf = _jr_io.BytesIO()
    _JrPickler(buf, protocol=4).dump(value)
    return buf.getvalue()
"""

_local: dict = {}
exec(PICKLER_SOURCE, _local)  # noqa: S102 - our own source, the same text the remote runs


def dumps(value: object) -> bytes:
    return _local["_jr_dumps"](value)


class VariableError(Exception):
    """One line naming the variable and what went wrong."""


def load(name: str, blob: bytes, where: str = "this kernel") -> object:
    try:
        return pickle.loads(blob)
    except ModuleNotFoundError as exc:
        raise VariableError(
            f"cannot load {name!r} in {where}: module {exc.name!r} is not installed here"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a value from elsewhere may fail in any way
        raise VariableError(
            f"cannot load {name!r} in {where}: {type(exc).__name__}: {exc}"
        ) from None


def push_code(values: dict[str, object], limit: int) -> str:
    """A cell that sets these variables in the remote interpreter, or says which failed."""
    lines = [
        "import base64 as _jr_b64, pickle as _jr_p",
        "def _jr_set(name, blob):",
        "    try:",
        "        globals()[name] = _jr_p.loads(_jr_b64.b64decode(blob))",
        "    except ModuleNotFoundError as exc:",
        f"        print({MARK!r}, 'error', name, 'module %r is not in the image' % exc.name)",
        "    except Exception as exc:",
        f"        print({MARK!r}, 'error', name, '%s: %s' % (type(exc).__name__, exc))",
    ]
    total = 0
    for name, value in values.items():
        try:
            blob = dumps(value)
        except Exception as exc:  # noqa: BLE001 - any value may refuse to pickle
            raise VariableError(f"cannot send {name!r}: {type(exc).__name__}: {exc}") from None
        total += len(blob)
        if total > limit:
            raise VariableError(
                f"cannot send {name!r}: the variables come to more than {limit} bytes "
                "(RemoteMagics.variables_limit); move large data with %remote_put"
            )
        lines.append(f"_jr_set({name!r}, {base64.b64encode(blob).decode()!r})")
    lines.append("del _jr_set, _jr_b64, _jr_p")
    return "\n".join(lines) + "\n"


def pull_code(names: list[str], limit: int) -> str:
    """A cell that prints each variable's pickle (or why not) on one marked line."""
    return (
        PICKLER_SOURCE
        + f"""
import base64 as _jr_b64
for _jr_n in {names!r}:
    if _jr_n not in globals():
        print({MARK!r}, 'error', _jr_n, 'is not defined in the remote session')
        continue
    try:
        _jr_d = _jr_dumps(globals()[_jr_n])
    except Exception as _jr_e:
        print({MARK!r}, 'error', _jr_n, 'cannot be pickled: %s: %s' % (type(_jr_e).__name__, _jr_e))
        continue
    if len(_jr_d) > {limit}:
        print({MARK!r}, 'error', _jr_n, 'is %d bytes, more than the limit of {limit}' % len(_jr_d))
        continue
    print({MARK!r}, 'value', _jr_n, _jr_b64.b64encode(_jr_d).decode())
del _jr_n, _jr_b64, _JrPickler, _jr_dumps, _jr_io, _jr_pickle
"""
    )


def parse_marks(stdout: str) -> tuple[dict[str, bytes], dict[str, str]]:
    """(values by name, errors by name) from a push or pull cell's output."""
    values, errors = {}, {}
    for line in stdout.splitlines():
        if not line.startswith(MARK + " "):
            continue
        _, kind, name, rest = (line.split(" ", 3) + [""])[:4]
        if kind == "value":
            values[name] = base64.b64decode(rest)
        else:
            errors[name] = rest
    return values, errors
