"""Every Lua script is a file loaded by ``quota.scripts.LuaScript`` and starts with its KEYS/ARGV header."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quota.scripts import LuaScript

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "quota" / "scripts").glob("*.lua")) + sorted((ROOT / "worker" / "scripts").glob("*.lua"))


def test_the_scripts_are_where_the_loader_finds_them() -> None:
    assert {p.parent.parent.name for p in SCRIPTS} == {"quota", "worker"}
    for path in SCRIPTS:
        source = LuaScript(path.stem, package=path.parent.parent.name).source
        written = path.read_text("utf-8")
        includes = re.findall(r"^-- include: (\S+)$", written, re.M)
        for name in includes:
            written = written.replace(f"-- include: {name}", (path.parent / name).read_text("utf-8"))
        assert source == written
        assert "-- include:" not in source


def test_the_bucket_scripts_share_one_reading_of_the_config() -> None:
    # The meter and the configure script must agree on what a valid config and an open window are.
    for name in ("meter", "configure"):
        assert "-- include: lib/window.lua" in (ROOT / "quota" / "scripts" / f"{name}.lua").read_text("utf-8")


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_script_starts_with_its_keys_and_argv(path: Path) -> None:
    header = []
    for line in path.read_text("utf-8").splitlines():
        if not line.startswith("--"):
            break
        header.append(line)
    text = "\n".join(header)
    assert re.search(r"^-- KEYS: ", text, re.M), f"{path} has no KEYS: line in its header"
    assert re.search(r"^-- +ARGV: ", text, re.M), f"{path} has no ARGV: line in its header"


def test_no_script_is_written_inline() -> None:
    # One way to load Lua: an inline script (register_script, EVAL with source) would bypass the loader.
    offenders = [str(p.relative_to(ROOT)) for package in ("quota", "worker", "emulator")
                 for p in (ROOT / package).rglob("*.py")
                 if re.search(r"register_script\(|\.eval\(|\"EVAL\"", p.read_text("utf-8"))]
    assert offenders == []
