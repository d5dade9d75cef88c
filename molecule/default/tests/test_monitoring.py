"""The alert rules and the Grafana dashboard (files/monitoring) read only metrics that hls-status writes: the names
in their PromQL against the metrics.prom of a real host (the unit tests compare them with metrics.py's output)."""

from __future__ import annotations

from conftest import wait_for
from monitoring import undeclared  # tests/monitoring, on sys.path through conftest.py

METRICS_FILE = "/run/hls-status/metrics.prom"  # what nginx serves at /metrics


def test_every_metric_the_rules_and_the_dashboard_read_is_in_metrics_prom(host):
    text = wait_for(lambda: host.file(METRICS_FILE).exists and host.file(METRICS_FILE).content_string,
                    what=f"hls-status to write {METRICS_FILE}")
    assert undeclared(text) == {}
