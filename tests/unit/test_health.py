"""Tests of hls_snapshot.py and hls_health.py on real station files, with systemd faked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import hls_health
import hls_snapshot
from hls_health import evaluate, lines, report

if TYPE_CHECKING:
    from conftest import StatusTree


# --- the snapshot ------------------------------------------------------------------------------------------

def test_snapshot_reads_units_files_and_listeners(tree: StatusTree) -> None:
    tree.station("joy", title="Radio Joy", station_id=7, restarts=3, uptime=90, playlist_age=4.5, segments=5,
                 newest_bytes=1234, now_playing={"title": "A - B", "artist": "A", "song": "B", "updated_at": "x",
                                                 "extra": "dropped"})
    tree.station("quiet", active=False)
    tree.write_json(tree.config.listeners_file, {"updated_at": "2023-11-14T22:13:00Z", "stations": {"joy": 12}})
    snapshot = tree.snapshot()
    assert [station.slug for station in snapshot.stations] == ["joy", "quiet"]
    joy, quiet = snapshot.stations
    assert (joy.title, joy.station_id, joy.enabled, joy.state, joy.restarts) == (
        "Radio Joy", 7, True, "active (running)", 3)
    assert joy.uptime == pytest.approx(90)
    assert joy.playlist_age == pytest.approx(4.5)
    assert joy.segments == [f"1699999000000-{n}.ts" for n in range(100, 105)]
    assert joy.newest_segment_bytes == 1234
    assert (joy.upstream_codec, joy.mode, joy.listeners) == ("mp3", "transcode", 12)
    assert joy.now_playing == {"title": "A - B", "artist": "A", "song": "B", "updated_at": "x"}
    assert (quiet.state, quiet.uptime, quiet.playlist_age, quiet.mode, quiet.listeners) == (
        "inactive (dead)", None, None, None, 0)
    assert snapshot.analytics.updated_at == 1_699_999_980.0
    # One systemctl call for every station and the jobs.
    assert tree.calls == [["show", "--property=" + ",".join(hls_snapshot.UNIT_PROPERTIES),
                           "hls@joy.service", "hls@quiet.service", "hls-sync.service", "hls-analytics.service"]]


def test_snapshot_never_holds_the_stream_url(tree: StatusTree) -> None:
    tree.station("joy")
    assert "s3cret" not in repr(tree.snapshot())


@pytest.mark.parametrize("listeners", [None, "not json", {"stations": "nope"}, {"stations": {"joy": -1}},
                                       {"stations": {"joy": "12"}}, {"stations": {"joy": True}}])
def test_missing_or_odd_listener_numbers_are_zero(tree: StatusTree, listeners: object) -> None:
    tree.station("joy")
    if listeners == "not json":
        tree.config.listeners_file.parent.mkdir(parents=True)
        tree.config.listeners_file.write_text("{")
    elif listeners is not None:
        tree.write_json(tree.config.listeners_file, listeners)
    snapshot = tree.snapshot()
    assert snapshot.stations[0].listeners == 0
    assert snapshot.analytics.updated_at is None


def test_jobs_from_systemd_and_the_sync_status_file(tree: StatusTree) -> None:
    tree.write_json(tree.config.sync_status_file, {"last_success_at": "2023-11-14T22:13:20+00:00",
                                                   "failures_total": 4})
    tree.units["hls-sync.service"] = {"Id": "hls-sync.service", "LoadState": "loaded", "Result": "exit-code"}
    tree.units["hls-analytics.service"] = {"Id": "hls-analytics.service", "LoadState": "loaded", "Result": "success"}
    sync, analytics = tree.snapshot().jobs
    assert sync == hls_snapshot.Job("sync", False, 1_700_000_000.0, 4)
    assert analytics == hls_snapshot.Job("analytics", True, None, None)


def test_jobs_that_are_not_installed_are_unknown(tree: StatusTree) -> None:
    tree.units["hls-analytics.service"] = {"Id": "hls-analytics.service", "LoadState": "not-found",
                                           "Result": "success"}
    assert tree.snapshot().jobs == [hls_snapshot.Job("sync"), hls_snapshot.Job("analytics")]


def test_the_analytics_spool_from_the_listeners_file(tree: StatusTree) -> None:
    tree.write_json(tree.config.listeners_file, {
        "updated_at": "2026-11-24T10:00:40Z", "window_seconds": 60, "stations": {"demo-aac": 2}, "total": 2,
        "spool": {"batches": 3, "bytes": 4096}, "dropped_events_total": 7})
    assert tree.snapshot().analytics == hls_snapshot.Analytics(
        updated_at=1_795_514_440.0, spool_batches=3, spool_bytes=4096, dropped_events_total=7)


def test_no_stations_still_reports_the_jobs(tree: StatusTree) -> None:
    assert tree.snapshot().stations == []
    assert tree.calls == [["show", "--property=" + ",".join(hls_snapshot.UNIT_PROPERTIES), "hls-sync.service",
                           "hls-analytics.service"]]


@pytest.mark.parametrize(("value", "expected"), [
    ("2023-11-14T22:13:20Z", 1_700_000_000.0), ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
    ("2023-11-14T22:13:20", None), ("yesterday", None), (12, 12.0), (True, None), (None, None),
])
def test_timestamp(value: object, expected: float | None) -> None:
    assert hls_snapshot.timestamp(value) == expected


def test_config_from_the_settings_file(tmp_path: Path) -> None:
    settings = tmp_path / "status.env"
    settings.write_text("HLS_STATIONS_DIR=/srv/stations\nHLS_HEALTH_MAX_PLAYLIST_AGE=30\n")
    config = hls_snapshot.Config.load(settings)
    assert (config.stations_dir, config.max_playlist_age) == (Path("/srv/stations"), 30.0)
    assert config.output_root == Path("/run/hls")
    assert hls_snapshot.Config.load(tmp_path / "missing.env") == hls_snapshot.Config()


# --- the health check ----------------------------------------------------------------------------------------

def test_all_healthy(tree: StatusTree) -> None:
    tree.station("one")
    tree.station("two")
    results = evaluate(tree.snapshot(), 60)
    assert all(result.healthy and result.should_run for result in results)
    assert lines(results) == ["OK: 2 station(s) healthy"]


@pytest.mark.parametrize(("station", "problem"), [
    ({"active": False}, "unit is inactive (dead); no playlist"),
    ({"playlist_age": None}, "no playlist"),
    ({"playlist_age": 61}, "playlist is 61 s old (limit 60 s)"),
    ({"playlist_age": 60}, "playlist is 60 s old (limit 60 s)"),
    ({"newest_bytes": 0}, "newest segment 1699999000000-102.ts is missing or empty"),
    ({"segments": 0}, "playlist lists no segment"),
])
def test_one_clear_line_per_unhealthy_station(tree: StatusTree, station: dict[str, object], problem: str) -> None:
    tree.station("good")
    tree.station("bad", **station)  # type: ignore[arg-type]
    results = evaluate(tree.snapshot(), 60)
    assert [result.healthy for result in results] == [False, True]
    assert lines(results) == [f"UNHEALTHY bad: {problem}"]


def test_a_missing_newest_segment_is_unhealthy(tree: StatusTree) -> None:
    directory = tree.station("joy")
    (directory / "1699999000000-102.ts").unlink()
    assert lines(evaluate(tree.snapshot(), 60)) == ["UNHEALTHY joy: newest segment 1699999000000-102.ts is missing "
                                                    "or empty"]


def test_a_station_that_is_not_enabled_is_not_checked(tree: StatusTree) -> None:
    tree.station("off", enabled=False, active=False)
    (result,) = evaluate(tree.snapshot(), 60)
    assert (result.should_run, result.healthy, result.problems) == (False, True, [])


def test_a_stopped_but_enabled_station_is_unhealthy(tree: StatusTree) -> None:
    tree.station("stopped", enabled=True, active=False)
    (result,) = evaluate(tree.snapshot(), 60)
    assert (result.should_run, result.healthy) == (True, False)


def test_report_is_json_for_machines(tree: StatusTree) -> None:
    tree.station("good")
    tree.station("bad", playlist_age=99)
    snapshot = tree.snapshot()
    document = json.loads(json.dumps(report(snapshot, evaluate(snapshot, 60), 60)))
    assert document["status"] == "unhealthy"
    assert document["unhealthy"] == ["bad"]
    assert document["generated_at"] == "2023-11-14T22:13:20+00:00"
    assert document["stations"][0] == {"slug": "bad", "should_run": True, "healthy": False,
                                       "state": "active (running)", "playlist_age_seconds": 99.0,
                                       "problems": ["playlist is 99 s old (limit 60 s)"]}


def test_main_exit_status_and_output(tree: StatusTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "status.env"
    settings.write_text(f"HLS_STATIONS_DIR={tree.config.stations_dir}\nHLS_OUTPUT_ROOT={tree.config.output_root}\n"
                        "HLS_HEALTH_MAX_PLAYLIST_AGE=10\n")
    monkeypatch.setattr(hls_health, "collect", lambda config: hls_snapshot.collect(
        config, tree.systemctl, now=1_700_000_000.0, monotonic_now=50_000.0))
    tree.station("joy", playlist_age=5)
    assert hls_health.main(["--config", str(settings)]) == 0
    assert capsys.readouterr().out == "OK: 1 station(s) healthy\n"
    assert hls_health.main(["--config", str(settings), "--max-age", "4"]) == 1
    assert capsys.readouterr().out == "UNHEALTHY joy: playlist is 5 s old (limit 4 s)\n"
    assert hls_health.main(["--config", str(settings), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["max_playlist_age_seconds"] == 10.0


def test_an_unreadable_station_list_is_an_error_not_an_empty_list(tree: StatusTree, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tree.station("joy")

    def denied(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(hls_snapshot.os, "scandir", denied)
    with pytest.raises(hls_snapshot.SnapshotError, match="Permission denied"):
        tree.snapshot()
    monkeypatch.setattr(hls_snapshot.Config, "load", classmethod(lambda cls, path: tree.config))
    assert hls_health.main([]) == 1
    assert capsys.readouterr().out.startswith("UNKNOWN: cannot read the station list")
    missing = hls_snapshot.Config(stations_dir=tmp_path / "not-yet")
    monkeypatch.undo()
    assert hls_snapshot.station_slugs(missing.stations_dir) == []
