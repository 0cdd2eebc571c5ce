"""Where pulled records go. The default appends JSON Lines per tenant and object under a data directory."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["JsonlSink", "Sink"]


class Sink(Protocol):
    """Receives each page of pulled records. Delivery is at least once: a page may arrive again after a
    crash between delivery and checkpoint, so every record carries ``Id`` and ``SystemModstamp``."""

    def deliver(self, tenant: str, sobject: str, records: Sequence[dict[str, Any]]) -> None: ...


class JsonlSink:
    """Appends records to ``DATA_DIR/<tenant>/<Object>.jsonl``, one ``write`` per page.

    The file is opened with ``O_APPEND``, so pages from concurrent writers never interleave within a line.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)

    def path(self, tenant: str, sobject: str) -> Path:
        """The file that holds ``tenant``'s ``sobject`` records."""
        return self.data_dir / tenant / f"{sobject}.jsonl"

    def deliver(self, tenant: str, sobject: str, records: Sequence[dict[str, Any]]) -> None:
        """Append ``records`` (their ``attributes`` dropped) as JSON Lines, durably."""
        if not records:
            return
        lines = "".join(
            json.dumps({k: v for k, v in r.items() if k != "attributes"}, separators=(",", ":")) + "\n"
            for r in records
        ).encode("utf-8")
        path = self.path(tenant, sobject)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            view = memoryview(lines)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
