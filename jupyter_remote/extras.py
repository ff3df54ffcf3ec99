"""Which optional parts an install has: one clear line instead of an ImportError deep inside.

pip has no default extras, so `pip install jupyter-remote` is the lean base an agent or
gateway host wants; the notebook side needs `jupyter-remote[jupyter]` (docs/deployment.md).
"""

from __future__ import annotations

import importlib.util

# The import names behind each extra in pyproject.toml ([jupyter] includes [agent]).
AGENT_MODULES = ("docker", "psutil", "pydantic", "requests", "tornado")
EXTRA_MODULES = {
    "agent": AGENT_MODULES,
    "jupyter": (
        *AGENT_MODULES,
        "aiohttp",
        "IPython",
        "ipywidgets",
        "jupyter_server",
        "pandas",
        "pyarrow",
        "tqdm",
    ),
}


class MissingExtra(ImportError):
    """Raised when a part of jupyter-remote is used from an install without its extra."""


def missing_modules(extra: str) -> list[str]:
    return [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]


def require_extra(extra: str, part: str) -> None:
    """Fail with the pip command that fixes it when `extra`'s modules are not installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(
            f"{part} needs jupyter-remote's [{extra}] extra (missing: {', '.join(missing)}); "
            f"install it with: pip install 'jupyter-remote[{extra}]'"
        )
