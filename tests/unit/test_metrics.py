"""Tests of metrics.py (checked with prometheus-client's own parser) and status.py (the served files)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from radio_hls.operations import metrics as hls_metrics
from radio_hls.operations import status as hls_status
from radio_hls.operations.health import evaluate
from radio_hls.operations.metrics import Family, render, render_families

if TYPE_CHECKING:
    from conftest import StatusTree

NAME = re.compile(r"^[a-z_:][a-z0-9_:]*$")


def parse(text: str) -> dict[str, Any]:
    """Family name -> the parsed family, through prometheus-client's text parser."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    family_name = name[: -len("_total")] if name.endswith("_total") else name
    return {tuple(sorted(sample.labels.items())): sample.value for sample in families[family_name].samples
            if sample.name == name}


def test_the_text_parses_with_prometheus_client(metrics_text: str) -> None:
    families = parse(metrics_text)
    assert set(families) == {
        "hls_station_up", "hls_station_enabled", "hls_station_healthy", "hls_station_playlist_age_seconds",
        "hls_station_segments", "hls_station_newest_segment_bytes", "hls_station_restarts",
        "hls_station_uptime_seconds",
        "hls_station_info", "hls_station_listeners", "hls_job_last_run_ok", "hls_job_last_success_timestamp_seconds",
        "hls_job_failures", "hls_analytics_updated_timestamp_seconds", "hls_analytics_spool_batches",
        "hls_analytics_spool_bytes", "hls_analytics_dropped_events", "hls_analytics_dead_letter_batches",
        "hls_analytics_dead_letter_bytes", "hls_analytics_dead_letter_events", "hls_analytics_resent_batches",
        "hls_station_title_changed_timestamp_seconds", "hls_host_serving", "hls_status_generated_timestamp_seconds"}
    for family in families.values():
        assert NAME.match(family.name), family.name
        assert family.type in ("gauge", "counter")
        assert family.documentation
    assert families["hls_station_restarts"].type == "counter"
    assert families["hls_job_failures"].type == "counter"
    assert families["hls_analytics_dropped_events"].type == "counter"
    assert families["hls_analytics_dead_letter_events"].type == "counter"
    assert families["hls_analytics_resent_batches"].type == "counter"
    assert families["hls_analytics_dead_letter_batches"].type == "gauge"


def test_station_values(metrics_text: str) -> None:
    families = parse(metrics_text)
    station = lambda slug: (("station", slug),)  # noqa: E731
    assert samples(families, "hls_station_up") == {station("aac"): 1, station("down"): 0, station("forced"): 1,
                                                   station("joy"): 1}
    assert samples(families, "hls_station_healthy") == {station("aac"): 0, station("down"): 0,
                                                        station("forced"): 1, station("joy"): 1}
    assert samples(families, "hls_station_playlist_age_seconds")[station("joy")] == 3
    assert station("down") not in samples(families, "hls_station_playlist_age_seconds")  # unknown: no sample
    assert samples(families, "hls_station_segments")[station("joy")] == 4
    assert samples(families, "hls_station_segments")[station("down")] == 0
    assert samples(families, "hls_station_newest_segment_bytes")[station("joy")] == 4096
    assert samples(families, "hls_station_restarts_total") == {station("aac"): 0, station("down"): 5,
                                                               station("forced"): 0, station("joy"): 2}
    assert samples(families, "hls_station_uptime_seconds")[station("joy")] == 300
    assert samples(families, "hls_station_info") == {
        (("mode", "transcode"), ("station", "joy"), ("upstream_codec", "mp3")): 1,
        (("mode", "copy"), ("station", "aac"), ("upstream_codec", "aac")): 1,
        (("mode", "copy"), ("station", "forced"), ("upstream_codec", "unknown")): 1}
    assert samples(families, "hls_station_listeners") == {station("aac"): 0, station("down"): 0,
                                                          station("forced"): 0, station("joy"): 42}
    # Only joy has a title; a now-playing.json without changed_at (an older hls-nowplaying) gives no sample.
    assert samples(families, "hls_station_title_changed_timestamp_seconds") == {station("joy"): 1_699_999_920.5}


def test_job_values(metrics_text: str) -> None:
    families = parse(metrics_text)
    assert samples(families, "hls_job_last_run_ok") == {(("job_name", "sync"),): 1, (("job_name", "analytics"),): 0}
    assert samples(families, "hls_job_last_success_timestamp_seconds") == {(("job_name", "sync"),): 1_699_999_980}
    assert samples(families, "hls_job_failures_total") == {(("job_name", "sync"),): 3}
    assert samples(families, "hls_analytics_updated_timestamp_seconds") == {(): 1_699_999_990}
    assert samples(families, "hls_analytics_spool_batches") == {(): 2}
    assert samples(families, "hls_analytics_spool_bytes") == {(): 250}
    assert samples(families, "hls_analytics_dropped_events_total") == {(): 9}
    assert samples(families, "hls_analytics_dead_letter_batches") == {(): 1}
    assert samples(families, "hls_analytics_dead_letter_bytes") == {(): 120}
    assert samples(families, "hls_analytics_dead_letter_events_total") == {(): 37}
    assert samples(families, "hls_analytics_resent_batches_total") == {(): 4}
    assert samples(families, "hls_status_generated_timestamp_seconds") == {(): 1_700_000_000}
    assert samples(families, "hls_host_serving") == {(): 1}  # joy and forced are healthy: degraded, serving


def test_host_serving_follows_the_verdict_of_get_health(tree: StatusTree) -> None:
    """hls_host_serving is 0 exactly when /health answers 503 by the verdict (no station that should run is
    healthy), 1 while one is, and 1 on a host with no station to run."""
    def serving() -> dict[tuple[tuple[str, str], ...], float]:
        snapshot = tree.snapshot()
        return samples(parse(render(snapshot, evaluate(snapshot, 60))), "hls_host_serving")

    assert serving() == {(): 1}
    tree.station("down", active=False)
    tree.station("stale", playlist_age=600, now_playing={"title": "t", "changed_at": True})
    assert serving() == {(): 0}
    snapshot = tree.snapshot()  # a changed_at that is no number (true) gives no sample
    assert samples(parse(render(snapshot, evaluate(snapshot, 60))), "hls_station_title_changed_timestamp_seconds") == {}
    tree.station("joy")
    assert serving() == {(): 1}


def test_a_listeners_file_of_an_older_version_gives_no_dead_letter_samples(tree: StatusTree) -> None:
    tree.station("joy")
    tree.write_json(tree.config.listeners_file, {"updated_at": "2023-11-14T22:13:10Z", "stations": {"joy": 1},
                                                 "spool": {"batches": 0, "bytes": 0}, "dropped_events_total": 0})
    snapshot = tree.snapshot()
    families = parse(render(snapshot, evaluate(snapshot, 60)))
    assert samples(families, "hls_analytics_dead_letter_events_total") == {}
    assert samples(families, "hls_analytics_resent_batches_total") == {}
    assert samples(families, "hls_analytics_dropped_events_total") == {(): 0}


def test_the_analytics_numbers_reach_the_metrics(tmp_path: Path, tree: StatusTree) -> None:
    """What hls_analytics writes is what hls_metrics reads: the listeners file of a real run."""
    from radio_hls.analytics.run import Analytics, Config

    environ = {"GRAPHQL_ENDPOINT": "", "HLS_ACCESS_LOG": str(tmp_path / "none.log"),
               "HLS_ANALYTICS_STATE_DIR": str(tmp_path / "state"),
               "HLS_LISTENERS_FILE": str(tree.config.listeners_file)}
    analytics = Analytics(Config.from_env(environ), now=lambda: 1_700_000_000.0)
    analytics.state.dead_letter_events, analytics.state.resent_batches = 5, 2
    analytics.dead_letters.write(7, [{"anonymous_session_id": "x"}], reason="refused")
    analytics.run()
    tree.station("joy")
    snapshot = tree.snapshot()
    families = parse(render(snapshot, evaluate(snapshot, 60)))
    assert samples(families, "hls_analytics_dead_letter_batches") == {(): 1}
    assert samples(families, "hls_analytics_dead_letter_events_total") == {(): 5}
    assert samples(families, "hls_analytics_resent_batches_total") == {(): 2}


def test_no_secret_in_the_metrics(metrics_text: str) -> None:
    assert "s3cret" not in metrics_text and "upstream.example" not in metrics_text


def test_label_values_are_escaped() -> None:
    family = Family("x_info", "gauge", "Odd labels.")
    family.add(1, text='quote " backslash \\ newline \n end')
    family.add(0.25)
    text = render_families([family])
    (parsed,) = text_string_to_metric_families(text)
    assert parsed.samples[0].labels == {"text": 'quote " backslash \\ newline \n end'}
    assert parsed.samples[1].value == 0.25
    assert text.count("\n") == 4  # HELP, TYPE and two samples: the newline in the value stayed escaped


def test_main_prints_the_metrics(tree: StatusTree, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    tree.station("joy")
    monkeypatch.setattr(hls_metrics, "collect", lambda config: tree.snapshot())
    assert hls_metrics.main(["--config", str(tree.settings_file())]) == 0
    assert 'hls_station_up{station="joy"} 1' in capsys.readouterr().out.splitlines()


# --- hls_status: the status page's file (the /health* files: test_health.py) ----------------------------------

def test_page_data_has_what_the_page_shows_and_no_secret(tree: StatusTree, tmp_path: Path) -> None:
    tree.station("joy", title="Radio Joy", now_playing={"title": "A - B", "artist": "A", "song": "B",
                                                        "updated_at": "t"})
    tree.station("down", active=False)
    tree.write_json(tree.config.listeners_file, {"updated_at": "2023-11-14T22:13:10Z", "stations": {"joy": 7}})
    hls_status.publish(tree.snapshot(), 60, tmp_path)
    text = (tmp_path / "stations.json").read_text()
    assert "s3cret" not in text and "upstream.example" not in text
    page = json.loads(text)
    joy, down = sorted(page["stations"], key=lambda station: station["slug"] != "joy")
    assert joy == {"slug": "joy", "title": "Radio Joy", "state": "active (running)", "active": True, "enabled": True,
                   "healthy": True, "uptime_seconds": 120, "playlist_age_seconds": 2.0, "upstream_codec": "mp3",
                   "mode": "transcode", "listeners": 7,
                   "now_playing": {"title": "A - B", "artist": "A", "song": "B", "updated_at": "t"},
                   "playlist": "/hls/joy/index.m3u8"}
    assert (down["active"], down["healthy"], down["now_playing"], down["listeners"]) == (False, False, None, 0)
