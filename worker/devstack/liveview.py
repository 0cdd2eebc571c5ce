"""The live terminal view of ``crmsync run``: per tenant credits, window mode and reserve, burn rate, countdown to
the next credits coming back, pause state, jobs, and the latest notifications, refreshed every second.
``Snapshot`` reads it all from Redis; the renderers draw it with rich, or as plain lines when there is no
terminal."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from quota.bucket import CreditBucket
from quota.replies import text
from worker import keys
from worker.cli.status import status_page
from worker.notifications import Notification, recent

__all__ = ["BurnRates", "Snapshot", "plain_lines", "render"]

_BURN_WINDOW_S = 60.0
#: Tenants the view shows: those with the highest share of their limit used (as ``crmsync status`` sorts them).
LIVE_ROWS = 20


@dataclass
class BurnRates:
    """Credits per minute per tenant, from the used counts seen over the last minute."""

    samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def update(self, tenant: str, now: float, used: int) -> float:
        """Record ``used`` at ``now``; return the tenant's credits per minute over the window."""
        history = self.samples.setdefault(tenant, deque())
        if history and used < history[-1][1]:
            history.clear()  # the window reset: the old samples belong to another day
        history.append((now, used))
        while len(history) > 1 and now - history[0][0] > _BURN_WINDOW_S:
            history.popleft()
        first_time, first_used = history[0]
        elapsed = now - first_time
        return 60.0 * (used - first_used) / elapsed if elapsed > 0 else 0.0


@dataclass
class Snapshot:
    """Everything the view shows, read from Redis at one moment."""

    at: float
    tenants: list[dict[str, Any]]
    notifications: list[Notification]
    more: int = 0  # tenants left out of the view

    @classmethod
    def read(cls, client: redis.Redis, rates: BurnRates, rows_shown: int = LIVE_ROWS) -> Snapshot:
        """Read the state and job counts of the ``rows_shown`` tenants with the highest share of their limit
        used, and the latest notifications."""
        now = time.time()
        page = status_page(CreditBucket(client), limit=rows_shown)
        rows = [row for row in page.rows if "unreadable" not in row]
        for row in rows:
            row["burn_per_minute"] = rates.update(row["tenant"], now, row["used"])
            row["jobs"] = _job_states(client, row["tenant"])
        return cls(now, rows, recent(client, limit=6), page.hidden)


def _job_states(client: redis.Redis, tenant: str) -> Counter[str]:
    pattern = keys.job(tenant, "*")
    names = list(client.scan_iter(match=pattern, count=500))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(name, "state")
    return Counter(text(s) for s in pipe.execute() if s is not None)


def _countdown(resets_at: str, now: float) -> str:
    seconds = max(0, int(datetime.fromisoformat(resets_at).timestamp() - now))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s"


def _pause_text(row: dict[str, Any]) -> str:
    # A pause of normal jobs only: essential ones go on with the reserve.
    return f"{row['pause_reason']}" + (" (normal jobs)" if row["pause_scope"] == "normal" else "")


def _window_text(row: dict[str, Any]) -> str:
    return f"{row['window']}, reserve {row['reserve']:,}" if row["limit"] is not None else str(row["limit_state"])


def _jobs_text(jobs: Counter[str]) -> str:
    running = jobs["running"] + jobs["retrying"] + jobs["queued"]
    return f"{running} running / {jobs['parked']} parked / {jobs['done']} done"


def render(snapshot: Snapshot) -> Group:
    """The rich renderable for one snapshot."""
    caption = f"{snapshot.more:,} more tenants: crmsync status --limit 0" if snapshot.more else None
    table = Table(title="crmsync: tenants", caption=caption, expand=True)
    for column in ("tenant", "credits used", "used / limit", "window", "burn/min", "credits back in", "state",
                   "jobs"):
        table.add_column(column, no_wrap=column != "credits used")
    for row in snapshot.tenants:
        limit = row["limit"] or 0
        bar = ProgressBar(total=max(limit, 1), completed=min(row["used"], max(limit, 1)), width=30,
                          complete_style="red" if row["remaining"] == 0 else "green")
        state = (Text(f"PAUSED: {_pause_text(row)}", style="bold red") if row["paused"]
                 else Text("running", style="green"))
        table.add_row(row["tenant"], bar, f"{row['used']:,} / {limit:,}", _window_text(row),
                      f"{row['burn_per_minute']:.1f}", _countdown(row["resets_at"], snapshot.at), state,
                      _jobs_text(row["jobs"]))
    lines = [f"{n.at.astimezone(UTC):%H:%M:%S} {n.kind:<18} {n.tenant:<10} {n.message}"
             for n in snapshot.notifications] or ["(none yet)"]
    return Group(table, Panel("\n".join(lines), title="latest notifications"))


def plain_lines(snapshot: Snapshot) -> list[str]:
    """One line per tenant, for logs and tests (no terminal), and one saying how many more there are."""
    more = [f"... {snapshot.more:,} more tenants (crmsync status --limit 0)"] if snapshot.more else []
    return [
        f"{row['tenant']}: used {row['used']:,}/{row['limit'] or 0:,} ({_window_text(row)}) "
        f"burn {row['burn_per_minute']:.1f}/min credits back in {_countdown(row['resets_at'], snapshot.at)} "
        f"{'PAUSED ' + _pause_text(row) if row['paused'] else 'running'} jobs {_jobs_text(row['jobs'])}"
        for row in snapshot.tenants
    ] + more
