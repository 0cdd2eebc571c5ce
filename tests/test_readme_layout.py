"""The README's layout table names every module of the two packages, in the row of its folder.

The table is how a newcomer finds where a credit is taken or a job parks; a module missing from it is a part
nobody can find by reading.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `(?P<path>[^`]+/)` \| (?P<what>.*) \|$", re.MULTILINE)


def _rows() -> dict[str, str]:
    return {m["path"]: m["what"] for m in ROW.finditer((ROOT / "README.md").read_text(encoding="utf-8"))}


def _modules() -> list[Path]:
    found = []
    for package in ("quota", "worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                found.append(path.relative_to(ROOT))
    return found


@pytest.mark.parametrize("module", _modules(), ids=str)
def test_the_layout_table_names_each_module_in_its_folders_row(module: Path) -> None:
    rows = _rows()
    folder = f"{module.parent.as_posix()}/"
    assert folder in rows, f"the README layout table has no row for {folder}"
    assert f"`{module.name}`" in rows[folder], f"the README layout row for {folder} does not name {module.name}"
