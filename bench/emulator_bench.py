"""Benchmark: authenticated small queries per second against ``crmsync emulator``, 8 concurrent clients.

The emulator runs in its own process (as in ``make run``). Each client is a process of its own holding one
keep-alive HTTPS connection (``http.client``): eight client threads in one process spend their time
fighting over its GIL, and ``requests`` costs ~2 ms of client CPU a call, so either would measure the
clients, not the emulator, on two cores. The emulator's own CPU per query is printed as well.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

CLIENTS = 8
DURATION_SECONDS = 5.0
TARGET_PER_SECOND = 1000
QUERY = "SELECT Id, Name, Email FROM Lead LIMIT 5"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _start_emulator(ready_file: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    log = ready_file.with_name("emulator.log")
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "emulator", "--orgs", "bench", "--records", "200",
             "--ready-file", str(ready_file)],
            stderr=stderr, cwd=REPO_ROOT,
        )
    deadline = time.monotonic() + 60
    while not ready_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the emulator did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return process, json.loads(ready_file.read_text())


def _query(connection: http.client.HTTPSConnection, path: str, headers: dict[str, str]) -> None:
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"query answered {response.status}: {body[:200]!r}")


def _client(instance_url: str, token: str, ca_bundle: str, start_at: float, stop_at: float) -> int:
    address = urlsplit(instance_url)
    context = ssl.create_default_context(cafile=ca_bundle)
    connection = http.client.HTTPSConnection(address.hostname or "", address.port, context=context, timeout=30)
    path = "/services/data/v59.0/query/?" + urlencode({"q": QUERY})
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    _query(connection, path, headers)  # connect and shake hands before the clock starts
    while time.time() < start_at:
        time.sleep(0.01)
    done = 0
    while time.time() < stop_at:
        _query(connection, path, headers)
        done += 1
    connection.close()
    return done


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(clients: int = CLIENTS, duration: float = DURATION_SECONDS) -> tuple[float, float]:
    """Queries per second with ``clients`` concurrent keep-alive clients, and the emulator's CPU per query."""
    with tempfile.TemporaryDirectory() as scratch:
        process, ready = _start_emulator(Path(scratch) / "ready.json")
        try:
            org = ready["orgs"]["bench"]
            # Every client starts and stops on the same wall-clock instants, after its process is up.
            start_at = time.time() + 2.0
            client = (org["instance_url"], org["access_token"], ready["ca_bundle"], start_at, start_at + duration)
            # Client processes run this module (not multiprocessing, which would re-import the caller's
            # __main__, i.e. the whole bench suite, in every child).
            command = [sys.executable, "-m", "bench.emulator_bench", "--client", *map(str, client)]
            children = [subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO_ROOT) for _ in range(clients)]
            time.sleep(max(start_at - time.time(), 0))
            cpu_before = _cpu_seconds(process.pid)
            outputs = [child.communicate(timeout=duration + 120)[0] for child in children]
            cpu_used = _cpu_seconds(process.pid) - cpu_before
            if any(child.returncode for child in children):
                raise RuntimeError("a benchmark client failed; see its traceback above")
            counts = [int(output) for output in outputs]
        finally:
            process.terminate()
            process.wait(timeout=30)
    return sum(counts) / duration, cpu_used / max(sum(counts), 1)


def main() -> None:
    """Print the emulator's throughput and the target."""
    rate, cpu_per_query = measure()
    verdict = "ok" if rate >= TARGET_PER_SECOND else "BELOW TARGET"
    print(f"emulator: {rate:,.0f} authenticated small queries/s with {CLIENTS} keep-alive clients "
          f"(target >= {TARGET_PER_SECOND:,}/s, {os.cpu_count()} CPUs): {verdict}")
    print(f"emulator: {cpu_per_query * 1e6:,.0f} us of emulator CPU per query "
          f"(the clients share the same CPUs)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        url, token, ca_bundle, start, stop = sys.argv[2:7]
        print(_client(url, token, ca_bundle, float(start), float(stop)))
    else:
        main()
