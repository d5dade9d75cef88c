"""hls-status on a cache edge (HLS_EDGE=true, role hls_edge): no station runs there, listeners arrive. Its stations are
those of the analytics' listeners file, its metrics the listener and analytics ones only (same names as an origin's,
so fleet totals are sums), and /health means "hls-status runs"."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_health import NOW, served

from radio_hls.common.contract import BadSetting
from radio_hls.operations import snapshot as hls_snapshot
from radio_hls.operations import status as hls_status
from radio_hls.operations.health import evaluate
from radio_hls.operations.metrics import render
from radio_hls.operations.snapshot import Config, read_settings

if TYPE_CHECKING:
    from conftest import StatusTree

LISTENERS = {"updated_at": "2023-11-14T22:13:10Z", "stations": {"joy": 42, "rock": 3},
             "spool": {"batches": 2, "bytes": 250}, "dropped_events_total": 0,
             "dead_letter": {"batches": 0, "bytes": 0}, "dead_letter_events_total": 0, "resent_batches_total": 1}


@pytest.fixture
def edge(tree: StatusTree) -> StatusTree:
    """The tree as an edge sees it: a listeners file, and (left over, or a mistake) a station of its own on disk,
    which an edge must not report."""
    tree.config = dataclasses.replace(tree.config, edge=True)
    tree.station("stale", enabled=True, active=False)
    tree.write_json(tree.config.listeners_file, LISTENERS)
    tree.units["hls-analytics.service"] = {"Id": "hls-analytics.service", "LoadState": "loaded", "Result": "success"}
    return tree


def test_the_edge_mode_is_a_setting(tree: StatusTree) -> None:
    settings = tree.settings_file()
    assert not Config.from_env(read_settings(settings)).edge
    settings.write_text(settings.read_text() + "HLS_EDGE=true\n")
    assert Config.from_env(read_settings(settings)).edge
    settings.write_text(settings.read_text() + "HLS_EDGE=yes please\n")
    with pytest.raises(BadSetting, match="HLS_EDGE"):
        Config.from_env(read_settings(settings))


def test_an_edges_stations_are_those_its_listeners_ask_for(edge: StatusTree) -> None:
    snapshot = edge.snapshot()
    assert snapshot.edge
    assert [(station.slug, station.listeners) for station in snapshot.stations] == [("joy", 42), ("rock", 3)]
    # Only the analytics' unit is asked about: no hls@ unit, no hls-sync on an edge.
    assert edge.calls == [["show", "--property=" + ",".join(hls_snapshot.UNIT_PROPERTIES), "hls-analytics.service"]]
    assert [job.name for job in snapshot.jobs] == ["analytics"]
    assert snapshot.analytics.resent_batches_total == 1


def test_an_edge_without_listeners_has_no_station(edge: StatusTree) -> None:
    edge.config.listeners_file.unlink()
    assert edge.snapshot().stations == []


def metric_samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> labels -> value."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_an_edge_exports_its_listeners_and_analytics_and_nothing_of_the_stations_it_does_not_run(
        edge: StatusTree) -> None:
    snapshot = edge.snapshot()
    found = metric_samples(render(snapshot, evaluate(snapshot, 60)))
    # The origin's names, so `sum by (station) (hls_station_listeners)` adds edges and origins.
    assert found["hls_station_listeners"] == {(("station", "joy"),): 42, (("station", "rock"),): 3}
    assert found["hls_job_last_run_ok"] == {(("job_name", "analytics"),): 1}
    assert found["hls_analytics_spool_batches"] == {(): 2}
    assert found["hls_status_generated_timestamp_seconds"] == {(): NOW}
    assert found["hls_host_serving"] == {(): 1}  # /health answers 200 while hls-status runs
    station_metrics = {name for name in found if name.startswith("hls_station_")}
    assert station_metrics == {"hls_station_listeners"}  # no hls_station_up / _healthy to fire alerts on
    assert not any(name.startswith("hls_job_") and ("job_name", "sync") in labels[0]
                   for name, values in found.items() for labels in values if labels)


def test_an_edge_serves_while_hls_status_runs(edge: StatusTree, tmp_path: Path) -> None:
    out = tmp_path / "status"
    out.mkdir()
    host = hls_status.publish(edge.snapshot(), 60, out)
    assert (host.status, host.serving) == ("ok", True)
    status, body = served(out, "/health", NOW)
    assert status == 200 and body is not None
    assert (body["status"], body["reason"], body["stations_should_run"]) == (
        "ok", "no station should run on this host", 0)
    assert served(out, "/health", NOW + 70)[0] == 503  # hls-status stopped vouching
    status, stations = served(out, "/health/stations", NOW)
    assert status == 200 and stations is not None and stations["stations"] == []
    assert served(out, "/health/stations/joy", NOW)[0] == 404  # its origins report on it, not the edge
    assert not (out / "report" / "station" / "stale.json").exists()


def test_an_edges_status_page_lists_the_stations_listened_to_playable_through_it(edge: StatusTree,
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "status"
    out.mkdir()
    hls_status.publish(edge.snapshot(), 60, out)
    page: dict[str, Any] = json.loads((out / "stations.json").read_text())
    assert page["edge"] is True
    assert [(station["slug"], station["listeners"], station["active"], station["playlist"])
            for station in page["stations"]] == [("joy", 42, True, "/hls/joy/index.m3u8"),
                                                 ("rock", 3, True, "/hls/rock/index.m3u8")]


def test_an_origins_status_page_says_it_is_no_edge(tree: StatusTree, tmp_path: Path) -> None:
    tree.station("joy")
    out = tmp_path / "status"
    out.mkdir()
    hls_status.publish(tree.snapshot(), 60, out)
    assert json.loads((out / "stations.json").read_text())["edge"] is False
