"""One emulated org: its credentials, records, usage window, bulk jobs, faults and request log."""

from __future__ import annotations

import secrets
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.api_usage import ApiUsage
from emulator.bulk_jobs import BulkJobs
from emulator.cursors import CursorPolicy, Cursors
from emulator.faults import Faults
from emulator.ids import to_18
from emulator.seed import seed_store
from emulator.store import Store

__all__ = ["LOG_SIZE", "Environment", "Org", "OrgInfo"]

Environment = Literal["production", "sandbox"]
# The log keeps the latest requests only; the counts by method and path cover every request.
LOG_SIZE = 10_000


@dataclass(frozen=True)
class OrgInfo:
    """What a client needs to reach one org (the ready file's ``orgs`` entries carry the same keys)."""

    name: str
    org_id: str
    environment: str
    instance_url: str
    token_url: str
    client_id: str
    client_secret: str
    username: str
    access_token: str
    refresh_token: str
    private_key_file: str

    def to_json(self) -> dict[str, str]:
        """The JSON object form."""
        return asdict(self)


class Org:
    """Mutable state of one org; always used under the registry's lock."""

    def __init__(self, name: str, environment: Environment, *, pod: int, records: int, daily_limit: int,
                 clock: Callable[[], float], key_dir: Path, cursors: CursorPolicy, api_overdraft: int) -> None:
        self.name = name
        self.environment = environment
        self.org_id = to_18(f"00D{pod:02d}0000000{pod:03d}") or ""
        self.client_id = f"3MVG9{secrets.token_urlsafe(24)}"
        self.client_secret = secrets.token_hex(32)
        domain = f"{name}.example.com" + (".sandbox" if environment == "sandbox" else "")
        self.username = f"integration@{domain}"
        self.refresh_token = f"5Aep{secrets.token_urlsafe(40)}"
        self.ready_token = ""
        self.store = Store(pod, clock)
        seed_store(self.store, name, records, clock())
        self.usage = ApiUsage(daily_limit, clock, api_overdraft)
        self.bulk = BulkJobs(self.store, pod, clock)
        self.faults = Faults()
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self.counts: Counter[str] = Counter()
        self.cursors = Cursors(cursors, clock)
        # The most records a query page holds whatever the batch size (None: only the documented rules apply).
        self.page_cap: int | None = None
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = key.public_key()
        self.private_key_file = key_dir / f"{name}-jwt-key.pem"
        self.private_key_file.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        )
        self.private_key_file.chmod(0o600)

    def info(self, base_url: str) -> OrgInfo:
        """The client-facing description of this org."""
        return OrgInfo(
            name=self.name, org_id=self.org_id, environment=self.environment, instance_url=base_url,
            token_url=f"{base_url}/services/oauth2/token", client_id=self.client_id,
            client_secret=self.client_secret, username=self.username, access_token=self.ready_token,
            refresh_token=self.refresh_token, private_key_file=str(self.private_key_file),
        )

    def record(self, entry: dict[str, Any]) -> None:
        """Log one request of this org and count it under ``METHOD path``."""
        self.log.append(entry)
        self.counts[f"{entry['method']} {entry['path']}"] += 1
