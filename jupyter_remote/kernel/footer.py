"""The one quiet line that ends a remote cell: where it ran, in what, how long, how it ended.

Published as display data carrying the execution id in its metadata, so a reloaded page
(the Lab extension's reattach) can tell a cell whose output is complete from one it must
render again from the server's record.
"""

from __future__ import annotations

import html


def duration_text(seconds: float | None) -> str:
    """0.4 s, 12 s, 2 min 3 s, 1 h 5 min."""
    if seconds is None:
        return "? s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60} min"


def footer_line(
    node_id: str | None,
    image: str | None,
    duration: float | None,
    returncode: int | None,
    status: str | None,
) -> str:
    ended = f"exit {returncode}"
    if status not in (None, "completed"):
        ended += f" ({status})"
    parts = [node_id or "?", image or "?", duration_text(duration), ended]
    return "[remote] " + " · ".join(parts)


def footer_bundle(execution_id: str, line: str) -> dict:
    """publish_display_data's arguments for the footer (the contract the Lab side reads)."""
    return {
        "data": {
            "text/plain": line,
            "text/html": f'<div class="jr-footer">{html.escape(line)}</div>',
        },
        "metadata": {"jupyter_remote": {"execution_id": execution_id, "footer": True}},
    }
