"""The admin path (``POST /_emulator/{method}`` with JSON keyword arguments) and its Python client."""

from __future__ import annotations

import json
from typing import Any

import requests

from emulator.bulk_jobs import QUERY_FAILURE
from emulator.control import ADMIN_METHODS, Control
from emulator.cursors import CURSOR_LIFETIME
from emulator.orgs import Environment, OrgInfo

__all__ = ["AdminClient", "admin_call"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, OrgInfo):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def admin_call(control: Control, method: str, name: str, body: bytes) -> tuple[int, Any]:
    """Run one control method for the admin path: ``(status, JSON body)``."""
    if name not in ADMIN_METHODS:
        return 404, {"error": f"no admin method {name!r}; known: {', '.join(sorted(ADMIN_METHODS))}"}
    if method != "POST":
        return 405, {"error": "admin methods are called with POST"}
    try:
        kwargs = json.loads(body or b"{}")
        if not isinstance(kwargs, dict):
            raise TypeError("the body must be a JSON object of keyword arguments")
        return 200, {"result": _jsonable(getattr(control, name)(**kwargs))}
    except KeyError as exc:
        return 404, {"error": str(exc.args[0]) if exc.args else "not found"}
    except (TypeError, ValueError) as exc:
        return 400, {"error": str(exc)}


class AdminClient:
    """The control handle of an emulator in another process, through its admin path.

    Same methods and arguments as ``Control``; a 404 raises KeyError and a 400 raises ValueError.
    """

    def __init__(self, admin_url: str, admin_token: str, ca_bundle: str) -> None:
        self._url = admin_url.rstrip("/")
        self._session = requests.Session()
        self._session.verify = ca_bundle
        self._session.headers["Authorization"] = f"Bearer {admin_token}"

    def _call(self, method: str, /, **kwargs: Any) -> Any:
        response = self._session.post(f"{self._url}/{method}", json=kwargs, timeout=30)
        body = response.json()
        if response.status_code == 404:
            raise KeyError(body["error"])
        if response.status_code != 200:
            raise ValueError(body["error"])
        return body["result"]

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def orgs(self) -> dict[str, OrgInfo]:
        """See ``Control.orgs``."""
        return {name: OrgInfo(**info) for name, info in self._call("orgs").items()}

    def add_org(self, name: str, environment: Environment = "production", records: int | None = None,
                daily_limit: int | None = None) -> OrgInfo:
        """See ``Control.add_org``."""
        return OrgInfo(**self._call("add_org", name=name, environment=environment, records=records,
                                    daily_limit=daily_limit))

    def remove_org(self, name: str) -> None:
        """See ``Control.remove_org``."""
        self._call("remove_org", name=name)

    def request_log(self, org: str) -> list[dict[str, Any]]:
        """See ``Control.request_log``."""
        result: list[dict[str, Any]] = self._call("request_log", org=org)
        return result

    def request_counts(self, org: str) -> dict[str, int]:
        """See ``Control.request_counts``."""
        result: dict[str, int] = self._call("request_counts", org=org)
        return result

    def clear_log(self, org: str) -> None:
        """See ``Control.clear_log``."""
        self._call("clear_log", org=org)

    def usage(self, org: str) -> dict[str, int]:
        """See ``Control.usage``."""
        result: dict[str, int] = self._call("usage", org=org)
        return result

    def set_usage(self, org: str, used: int) -> None:
        """See ``Control.set_usage``."""
        self._call("set_usage", org=org, used=used)

    def set_limit(self, org: str, max_requests: int) -> None:
        """See ``Control.set_limit``."""
        self._call("set_limit", org=org, max_requests=max_requests)

    def set_api_overdraft(self, org: str, requests: int) -> None:
        """See ``Control.set_api_overdraft``."""
        self._call("set_api_overdraft", org=org, requests=requests)

    def set_limit_info(self, org: str, app_name: str | None = None, app_max: int | None = None,
                       extra_parts: list[str] | None = None) -> None:
        """See ``Control.set_limit_info``."""
        self._call("set_limit_info", org=org, app_name=app_name, app_max=app_max, extra_parts=extra_parts)

    def set_query_cursors(self, org: str, limit: int | None = None, idle_timeout: float | None = None,
                          lifetime: float = CURSOR_LIFETIME) -> None:
        """See ``Control.set_query_cursors``."""
        self._call("set_query_cursors", org=org, limit=limit, idle_timeout=idle_timeout, lifetime=lifetime)

    def query_cursors(self, org: str) -> int:
        """See ``Control.query_cursors``."""
        return int(self._call("query_cursors", org=org))

    def set_page_cap(self, org: str, records: int | None) -> None:
        """See ``Control.set_page_cap``."""
        self._call("set_page_cap", org=org, records=records)

    def expire_tokens(self, org: str) -> None:
        """See ``Control.expire_tokens``."""
        self._call("expire_tokens", org=org)

    def issue_token(self, org: str) -> str:
        """See ``Control.issue_token``."""
        return str(self._call("issue_token", org=org))

    def set_faults(self, org: str, *, latency: float = 0.0, error_rate: float = 0.0, error_status: int = 503,
                   drop_rate: float = 0.0, concurrent_limit_rate: float = 0.0, seed: int = 0) -> None:
        """See ``Control.set_faults``."""
        self._call("set_faults", org=org, latency=latency, error_rate=error_rate, error_status=error_status,
                   drop_rate=drop_rate, concurrent_limit_rate=concurrent_limit_rate, seed=seed)

    def inject_fault(self, org: str, kind: str, count: int = 1, latency: float = 0.0) -> None:
        """See ``Control.inject_fault``."""
        self._call("inject_fault", org=org, kind=kind, count=count, latency=latency)

    def clear_faults(self, org: str) -> None:
        """See ``Control.clear_faults``."""
        self._call("clear_faults", org=org)

    def bulk_usage(self, org: str) -> dict[str, dict[str, int]]:
        """See ``Control.bulk_usage``."""
        result: dict[str, dict[str, int]] = self._call("bulk_usage", org=org)
        return result

    def set_bulk_limits(self, org: str, batches: int | None = None, query_jobs: int | None = None,
                        query_storage_mb: int | None = None) -> None:
        """See ``Control.set_bulk_limits``."""
        self._call("set_bulk_limits", org=org, batches=batches, query_jobs=query_jobs,
                   query_storage_mb=query_storage_mb)

    def set_bulk_rate(self, org: str, records_per_second: float, running: bool = False) -> None:
        """See ``Control.set_bulk_rate``."""
        self._call("set_bulk_rate", org=org, records_per_second=records_per_second, running=running)

    def fail_query_job(self, org: str, job_id: str | None = None, message: str = QUERY_FAILURE) -> None:
        """See ``Control.fail_query_job``."""
        self._call("fail_query_job", org=org, job_id=job_id, message=message)

    def set_bulk_results_cap(self, org: str, records: int | None) -> None:
        """See ``Control.set_bulk_results_cap``."""
        self._call("set_bulk_results_cap", org=org, records=records)
