"""What the alert rules and the dashboard ask Prometheus for: metric names and the labels they match on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))

_METRIC = re.compile(r"\b(crmsync_[a-z_]+)\b")
_SELECTOR = re.compile(r"\b(crmsync_[a-z_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
# "sum by (a, b) (... crmsync_x ...)": the grouping labels and the first metric of the aggregated expression
_BY = re.compile(r"\bby\s*\(([^)]*)\)\s*\(\s*(?:[a-z_]+\()?\s*(crmsync_[a-z_]+)")


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs(path: Path) -> list[str]:
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"expr", "definition"} and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, str | dict):
                    exprs.append(value if isinstance(value, str) else str(value.get("query", "")))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(path.read_text()))
    return [e for e in exprs if e]


def every_expr() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every alert rule and every dashboard query."""
    for rule in alert_rules():
        yield f"alert {rule['alert']}", str(rule["expr"])
    for path in DASHBOARDS:
        for expr in dashboard_exprs(path):
            yield f"dashboard {path.name}", expr


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def matched_labels(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, label) for every label a selector matches on or an aggregation groups a metric by."""
    for metric, body in _SELECTOR.findall(expr):
        for label in _MATCHER.findall(body):
            yield metric, label
    for labels, metric in _BY.findall(expr):
        for label in (part.strip() for part in labels.split(",")):
            if label:
                yield metric, label
