"""Dependencies are pinned: the lock files cover pyproject.toml, with hashes, and the image and make use them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
DEV_STACK = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev-stack"]]
DEV = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
CORE = [Requirement(r) for r in PROJECT["dependencies"]]


def pins(lock: str) -> dict[str, list[str]]:
    """Name -> pinned versions (one per environment marker), checking that every pin carries hashes."""
    text = (ROOT / lock).read_text("utf-8")
    hashed = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)(?: ;[^\\\n]*)? \\\n\s+--hash=sha256:[0-9a-f]{64}", text, re.M)
    assert len(hashed) == len(re.findall(r"^[A-Za-z0-9_.\-]+==", text, re.M)), f"{lock}: a pin without hashes"
    found: dict[str, list[str]] = {}
    for name, version in hashed:
        found.setdefault(canonicalize_name(name), []).append(version)
    return found


@pytest.mark.parametrize(("lock", "wanted", "unwanted"), [
    ("requirements.lock", CORE, DEV_STACK + DEV),
    ("requirements-dev.lock", CORE + DEV_STACK + DEV, []),
])
def test_each_lock_pins_what_pyproject_asks_and_nothing_the_image_must_not_have(
        lock: str, wanted: list[Requirement], unwanted: list[Requirement]) -> None:
    pinned = pins(lock)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {name}: run `make lock`"
        for version in pinned[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock} pins {name}=={version}, outside {requirement}: run `make lock`")
    for requirement in unwanted:
        assert canonicalize_name(requirement.name) not in pinned, f"{lock} must not carry {requirement.name}"


def test_make_and_the_image_install_from_the_locks_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text("utf-8")
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in makefile
    assert "pip install --quiet --no-deps -e ." in makefile
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text("utf-8")
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    assert "emulator" not in re.findall(r"^COPY .*$", dockerfile, re.M).__str__()
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text("utf-8").split()
    assert "!requirements.lock" in ignore
    assert "!emulator/" not in ignore


@pytest.mark.parametrize(("command", "missing"), [("emulator", "emulator"), ("run", "rich")])
def test_local_stack_commands_explain_a_missing_dev_stack(command: str, missing: str) -> None:
    # As in the production image, where the emulator package and the dev-stack extra are not installed.
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            f"from worker.cli import main; sys.exit(main([{command!r}, '--headless', '--port', '1']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "crmsync[dev-stack]" in done.stderr
    assert "Traceback" not in done.stderr
