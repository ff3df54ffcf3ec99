"""The house rules import-linter cannot check: module size, and one records.py.

The import rules themselves (layers, no cycles) are pyproject's [tool.importlinter]
contracts, run by scripts/test.sh before pytest.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [ROOT / "jupyter_remote", ROOT / "server_ext" / "jupyter_remote_server"]
CEILING = 400  # lines; docs/architecture.md


def _modules() -> list[Path]:
    return [p for pkg in PACKAGES for p in pkg.rglob("*.py") if "node_modules" not in p.parts]


def test_no_module_is_over_the_ceiling():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > CEILING
    }
    assert long == {}, f"split these by job (ceiling {CEILING} lines): {long}"


def test_the_record_format_has_one_module_of_its_name():
    names = Counter(p.name for p in _modules())
    assert names["records.py"] == 1, "protocol/records.py is the record format; name others apart"
