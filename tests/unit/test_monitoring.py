"""The alert rules and the Grafana dashboard of files/monitoring: Prometheus's promtool checks and unit-tests the
rules, Grafana's own dashboard model (grafana-foundation-sdk) loads the dashboard, and every metric either reads is
one that metrics.py writes (molecule's test_monitoring.py checks the same against a real host's metrics.prom)."""

from __future__ import annotations

import json
import re
import subprocess
from itertools import combinations
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import panelcfg_config
from grafana_foundation_sdk.models.dashboard import Dashboard
from monitoring import RULES, RULES_TEST, dashboard, rules, undeclared, variables
from patience import GENEROUS_TIMEOUT

DOCS = RULES.parents[2] / "docs"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Debian's promtool (package prometheus; `make unit` installs it)."""
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=GENEROUS_TIMEOUT,
                          check=False)


# --- the rules ------------------------------------------------------------------------------------------------------

def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    tested = promtool("test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    """promtool only runs the cases there are: each alert needs a time it fires and a time it must not."""
    cases = [case for test in yaml.safe_load(RULES_TEST.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} is never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']} is never tested not firing"


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a document's headings (lower case, punctuation dropped, spaces to hyphens)."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)  # a shell comment is no heading
    headings = re.findall(r"^#+ (.+)$", prose, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-") for heading in headings}


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists() -> None:
    existing = {path.name: anchors(path.read_text()) for path in DOCS.glob("*.md")}
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        document, _, anchor = rule["annotations"]["runbook"].removeprefix("docs/").partition("#")
        assert anchor in existing.get(document, set()), f"{rule['alert']}: no section #{anchor} in docs/{document}"


# --- the dashboard --------------------------------------------------------------------------------------------------

def lost_in(original: Any, loaded: Any, path: str = "") -> list[str]:
    """What of `original` is not in `loaded` (keys the model dropped, values it changed)."""
    if isinstance(original, dict):
        if not isinstance(loaded, dict):
            return [path]
        return [lost for key, value in original.items()
                for lost in ([f"{path}/{key}"] if key not in loaded else lost_in(value, loaded[key], f"{path}/{key}"))]
    if isinstance(original, list):
        if not isinstance(loaded, list) or len(original) != len(loaded):
            return [path]
        return [lost for i, (a, b) in enumerate(zip(original, loaded, strict=True))
                for lost in lost_in(a, b, f"{path}[{i}]")]
    return [] if original == loaded else [path]


def test_grafanas_dashboard_model_loads_the_dashboard_and_keeps_every_key() -> None:
    """The foundation SDK's model is generated from Grafana's dashboard schema: a key it does not know (a typo, a
    field of another version) is dropped on the way through, and a panel type it does not know has no options."""
    register_default_plugins()
    original = dashboard()
    loaded = json.loads(json.dumps(Dashboard.from_json(original), cls=JSONEncoder))
    assert lost_in(original, loaded) == []
    for panel in original["panels"]:
        assert panel["type"] == "row" or panelcfg_config(panel["type"]) is not None, panel["type"]


def panels() -> list[dict[str, Any]]:
    return list(dashboard()["panels"])


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_and_do_not_overlap() -> None:
    boxes = []
    for panel in panels():
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) and grid[key] >= 0 for key in "xywh"), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        boxes.append((panel["title"], grid))
    for (one, a), (other, b) in combinations(boxes, 2):
        apart = (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"] or a["y"] + a["h"] <= b["y"]
                 or b["y"] + b["h"] <= a["y"])
        assert apart, f"{one!r} overlaps {other!r}"


def test_every_query_goes_to_the_datasource_variable() -> None:
    """No hard-coded datasource: whoever imports the dashboard picks their Prometheus."""
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


def test_every_variable_used_is_defined_and_every_one_defined_is_used() -> None:
    """The queries name no host or station: they filter by $job, $instance and $station, each defined once."""
    templating = dashboard()["templating"]["list"]
    defined = [variable["name"] for variable in templating]
    assert len(defined) == len(set(defined))
    # Where variables are used: the panels, and the variables' own queries (one may filter by another).
    used = variables(json.dumps(panels()) + "".join(variable["query"]["query"] for variable in templating
                                                      if variable["type"] == "query"))
    assert used <= set(defined), f"undefined: {used - set(defined)}"
    assert set(defined) <= used, f"never used: {set(defined) - used}"
    assert {"datasource", "instance", "station"} <= set(defined)
    source = next(variable for variable in templating if variable["name"] == "datasource")
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for panel in panels():
        for target in panel.get("targets", []):
            assert "instance=~\"$instance\"" in target["expr"], (panel["title"], target["refId"])


# --- the metrics they read ------------------------------------------------------------------------------------------

def test_every_metric_the_rules_and_the_dashboard_read_is_one_metrics_py_writes(metrics_text: str) -> None:
    assert undeclared(metrics_text) == {}


@pytest.mark.parametrize("family", ["hls_station_title_changed_timestamp_seconds", "hls_host_serving"])
def test_a_metric_that_is_not_written_is_found_missing(metrics_text: str, family: str) -> None:
    """The comparison itself: without a family the dashboard reads, it names the family and where it is used."""
    without = "\n".join(line for line in metrics_text.splitlines() if family not in line)
    assert family in undeclared(without)
