"""Query parameters of the paginated listings (agent and server), checked like bodies.

A listing is newest first, ordered by (time, id): creation time on the server, start time
on the agent, the id breaking ties. A page ends with `next`, the cursor of its last item;
`?before=CURSOR` gives the page after it. Records that arrive while a client walks the
pages are newer than its cursor, so a walk sees every older record once, none twice.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from jupyter_remote.protocol.common import Id
from jupyter_remote.protocol.errors import BadRequest
from jupyter_remote.protocol.validation import parse_body

MAX_PAGE = 1000
DEFAULT_PAGE = 100
# TIME~ID: the time as Python's repr of the float (exact), then the id.
CURSOR_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,20})?~[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_CURSOR_RE = re.compile(CURSOR_PATTERN.replace("$", r"\Z"))
AUTH_PARAMETERS = ("token", "_xsrf")  # read by Jupyter's auth, not by the listing
Cursor = Annotated[str, StringConstraints(pattern=CURSOR_PATTERN, max_length=160)]


class PageQuery(BaseModel):
    """?limit=N&before=CURSOR: one page of a listing, newest first."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(
        DEFAULT_PAGE, ge=1, le=MAX_PAGE, description=f"Most records per page (1-{MAX_PAGE})."
    )
    before: Cursor | None = Field(
        None, description="The `next` of the page before: records older than it."
    )

    def after(self) -> tuple[float, str] | None:
        """The cursor as (time, id), or None for the first page."""
        return split_cursor(self.before) if self.before else None


class ExecutionPageQuery(PageQuery):
    """The server's execution listing, optionally one kernel's."""

    kernel_id: Id | None = Field(None, description="Only this kernel's executions.")


class NotebookCellsQuery(BaseModel):
    """?path=NOTEBOOK: the latest execution and job of each cell of one notebook."""

    model_config = ConfigDict(extra="forbid")

    path: Annotated[
        str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")
    ] = Field(description="The notebook's path as the Jupyter server names it.")


def make_cursor(when: float, record_id: str) -> str:
    return f"{float(when)!r}~{record_id}"


def split_cursor(cursor: str) -> tuple[float, str]:
    if not _CURSOR_RE.match(cursor):
        raise BadRequest(f"before: not a listing cursor: {cursor!r}", reason="bad_before")
    when, _, record_id = cursor.partition("~")
    return float(when), record_id


def page_query(model: type[PageQuery], arguments: dict[str, list[bytes]]) -> PageQuery:
    """The typed query from tornado's query arguments; a 400 naming the parameter."""
    data: dict[str, str] = {}
    for name, values in arguments.items():
        if name in AUTH_PARAMETERS or (name.isdigit() and values == [b""]):
            continue  # auth's, or JupyterLab's cache-buster (`?1795517914015` on every GET)
        if len(values) != 1:
            raise BadRequest(f"{name}: give it once", reason=f"bad_{name}")
        data[name] = values[0].decode("utf-8", "replace")
    if name_unknown := [n for n in data if n not in model.model_fields]:
        raise BadRequest(
            f"{name_unknown[0]}: not a parameter of this listing "
            f"(it takes {', '.join(model.model_fields)})",
            reason=f"bad_{name_unknown[0]}",
        )
    return parse_body(model, data)


def page(items: list[dict], query: PageQuery, when: str, key: str) -> dict:
    """One page of `items` (any order) by (item[when], item[key]) newest first."""
    items = sorted(items, key=lambda r: (r.get(when) or 0.0, r[key]), reverse=True)
    after = query.after()
    if after is not None:
        items = [r for r in items if ((r.get(when) or 0.0), r[key]) < after]
    return finish_page(items[: query.limit + 1], query.limit, when, key)


def finish_page(rows: list[dict], limit: int, when: str, key: str) -> dict:
    """`rows` holds up to limit + 1 records in order: the page and its `next` cursor."""
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows and more else None
    return {
        "items": rows,
        "next": make_cursor(last.get(when) or 0.0, last[key]) if last else None,
    }


def query_parameters(model: type[BaseModel]) -> list[dict]:
    """The model's fields as OpenAPI query parameters (the document follows the check)."""
    schema = model.model_json_schema()
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        about = prop.pop("description", "")
        prop.pop("title", None)
        if "anyOf" in prop:  # X | None: the parameter is optional anyway
            prop = {**next(p for p in prop.pop("anyOf") if p.get("type") != "null"), **prop}
            prop.pop("default", None)
        out.append(
            {"name": name, "in": "query", "required": False, "schema": prop, "description": about}
        )
    return out
