"""The Grafana dashboard in docs/ parses, and every query in it names only
metrics the exporter really emits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilience import (
    Bulkhead,
    CircuitBreaker,
    Fallback,
    Hedge,
    RateLimiter,
    Retry,
    Saga,
    Step,
    Timeout,
)
from resilience.contrib.asgi import IdempotencyMiddleware
from resilience.contrib.prometheus import METRIC_NAMES, instrument
from tests.contrib.idempotency_app import Orders

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"

# PromQL words that are not metric names.
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def _exprs(node: Any) -> list[str]:
    """Every ``expr`` and variable ``query`` string, anywhere in the JSON."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if (key == "expr" and isinstance(value, str)) or (
                key == "query" and isinstance(value, str) and "(" in value
            ):
                found.append(value)
            else:
                found.extend(_exprs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_exprs(item))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers left once strings,
    label matchers, ranges, grouping clauses and function calls are removed."""
    # Grafana's variable query: label_values(metric, label) -> metric
    expr = re.sub(r"label_values\(([^,()]+),\s*\w+\)", r"\1", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors: [$__rate_interval]
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\boffset\s+-?[0-9a-z]+", "", expr)  # offset 5m
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group()
        following = expr[match.end() :].lstrip()[:1]
        if following == "(" or word.lower() in _KEYWORDS:
            continue  # a function (sum, rate, histogram_quantile, label_values) or keyword
        names.add(word)
    return names


def emitted_names() -> set[str]:
    """Sample names of a real scrape with every kind of policy and durations on."""
    registry = CollectorRegistry()
    with instrument(registry, durations=True):
        breaker = CircuitBreaker()
        breaker.call_sync(lambda: 1)
        breaker.open()
        keep = [breaker, Retry(), Bulkhead(1), Timeout(1), Fallback(0), RateLimiter(1), Hedge()]
        keep[1].call_sync(lambda: 1)
        saga = Saga("grafana", [Step("reserve", lambda ctx: 1, compensate=lambda ctx, r: None)])
        keys = IdempotencyMiddleware(Orders(), name="grafana")
        text = generate_latest(registry).decode()
    assert saga
    assert keys
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_dashboard_parses_and_is_grafana_shaped() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert "state-timeline" in {p["type"] for p in panels}
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


def test_every_query_names_only_exported_metrics() -> None:
    emitted = emitted_names()
    assert emitted == METRIC_NAMES  # the constant the docs rely on is complete and exact
    exprs = _exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) > 10
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= emitted, f"{sorted(names - emitted)} in {expr!r}"
        used |= names
    # Every family is on the dashboard (the histogram through _bucket/_sum/_count).
    assert used == emitted


def test_the_name_parser() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (name, le) (rate(a_bucket{outcome="x"}[5m])))'
        " / on (name) group_left b + 2 * c offset 5m"
    ) == {"a_bucket", "b", "c"}
    assert metric_names("label_values(m_total, name)") == {"m_total"}
