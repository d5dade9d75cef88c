"""The monitoring files (files/monitoring) as the tests read them: the alert rules' and the dashboard's PromQL, and
the metric names each expression reads, found by a real PromQL parser. Shared by the unit tests
(tests/unit/test_monitoring.py) and the molecule test that compares them with a real metrics.prom."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "files" / "monitoring"
RULES = MONITORING / "radio-hls.rules.yml"
RULES_TEST = MONITORING / "radio-hls.rules.test.yml"
DASHBOARD = MONITORING / "radio-hls.dashboard.json"
# Series that Prometheus makes itself for every scrape target: no program of ours writes them.
PROMETHEUS_OWN = frozenset({"up"})
# A Grafana template variable in a query: $name or ${name} (${name:format} too).
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
DECLARED = re.compile(r"^# TYPE (\S+) \w+$", re.MULTILINE)


def rules() -> list[dict[str, Any]]:
    """Every rule of every group."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def variables(text: str) -> set[str]:
    return {braced or plain for braced, plain in VARIABLE.findall(text)}


def as_prometheus_sees_it(expr: str) -> str:
    """The query after Grafana put in the variables' values (ours only stand inside label matchers' regexes)."""
    return VARIABLE.sub(".*", expr)


def expressions() -> dict[str, str]:
    """Where -> PromQL, for every alert and every dashboard query (variables substituted)."""
    found = {f"alert {rule['alert']}": rule["expr"] for rule in rules()}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = as_prometheus_sees_it(target["expr"])
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = as_prometheus_sees_it(variable["query"]["query"])
            # label_values(<selector>, <label>) is Grafana's, not PromQL: its selector is.
            found[f"variable {variable['name']}"] = query.removeprefix("label_values(").rsplit(",", 1)[0]
    return found


def metric_names(expr: str) -> set[str]:
    """The metrics an expression reads (ValueError when it does not parse, or selects by no metric name)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if not node.name:
                raise ValueError(f"a selector without a metric name: {node}")
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def used_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used, over the rules and the dashboard, without Prometheus's own series."""
    used: dict[str, set[str]] = {}
    for where, expr in expressions().items():
        for name in metric_names(expr) - PROMETHEUS_OWN:
            used.setdefault(name, set()).add(where)
    return used


def declared_metrics(metrics_text: str) -> set[str]:
    """The metric names a metrics.prom declares (its # TYPE lines), with or without samples."""
    return set(DECLARED.findall(metrics_text))


def undeclared(metrics_text: str) -> dict[str, set[str]]:
    """What the rules and the dashboard read that the metrics text does not declare (empty: all is there)."""
    declared = declared_metrics(metrics_text)
    return {name: where for name, where in used_metrics().items() if name not in declared}
