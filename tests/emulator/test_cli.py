"""``crmsync emulator``: the ready file, serving from another process, clean stops and refused options."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce.api import Salesforce

from emulator import AdminClient
from worker.cli import main

READY_KEYS = {"instance_url", "token_url", "client_id", "client_secret", "environment", "access_token"}


def _start(ready: Path, *options: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    process = subprocess.Popen([sys.executable, "-m", "worker.cli", "emulator", "--ready-file", str(ready),
                                *options], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not ready.exists():  # polling for readiness, not waiting for time to pass
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the emulator never became ready"
        time.sleep(0.05)
    return process, json.loads(ready.read_text())


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serves_from_another_process_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    ready_file = tmp_path / "ready.json"
    process, ready = _start(ready_file, "--orgs", "acme,acme-dev:sandbox", "--records", "3",
                            "--daily-limit", "10", "--token-ttl", "60")
    try:
        assert set(ready["orgs"]) == {"acme", "acme-dev"}
        assert all(set(org) >= READY_KEYS for org in ready["orgs"].values())
        assert ready["orgs"]["acme-dev"]["environment"] == "sandbox"
        assert ready["orgs"]["acme"]["environment"] == "production"
        assert Path(ready["ca_bundle"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert oct(ready_file.stat().st_mode & 0o777) == "0o600"
        org = ready["orgs"]["acme"]
        session = requests.Session()
        session.verify = ready["ca_bundle"]
        sf = Salesforce(instance_url=org["instance_url"], session_id=org["access_token"], session=session,
                        version="59.0")
        assert sf.query("SELECT Id FROM Opportunity")["totalSize"] == 3
        assert sf.api_usage["api-usage"].total == 10
        admin = AdminClient(ready["admin_url"], ready["admin_token"], ready["ca_bundle"])
        assert admin.usage("acme") == {"used": 1, "max": 10}
        admin.close()
    finally:
        process.send_signal(stop_signal)
        code = process.wait(timeout=30)
    assert code == 0
    assert not ready_file.exists()
    assert not Path(ready["ca_bundle"]).exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--port", "70000"], "--port 70000 is not between 0 and 65535"),
        (["--orgs", "acme:staging"], "environment must be production or sandbox"),
        (["--orgs", "acme,acme"], "names an org twice"),
        (["--orgs", "Bad Name"], "org name 'Bad Name'"),
        (["--token-ttl", "0"], "--token-ttl must be > 0"),
        (["--records", "-1"], "--records and --daily-limit must be >= 0"),
        (["--bulk-rate", "-1"], "--bulk-rate must be a number >= 0"),
        (["--bulk-rate", "nan"], "--bulk-rate must be a number >= 0"),
    ],
)
def test_bad_options_exit_2_with_one_line(options: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulator", *options]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_busy_port_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["emulator", "--port", str(port), "--records", "0"]) == 2
    assert f"cannot serve on port {port}" in capsys.readouterr().err


def test_pid_in_ready_file(tmp_path: Path) -> None:
    process, ready = _start(tmp_path / "ready.json", "--orgs", "solo", "--records", "0")
    try:
        assert ready["pid"] == process.pid
        assert ready["base_url"].startswith("https://127.0.0.1:")
        assert ready["admin_url"] == ready["base_url"] + "/_emulator"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
