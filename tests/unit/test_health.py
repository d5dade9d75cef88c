"""Tests of snapshot.py, health.py and status.py (the files behind /health*) on real station files,
with systemd faked."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from radio_hls.common import clock
from radio_hls.common.contract import BadSetting
from radio_hls.operations import health as hls_health
from radio_hls.operations import snapshot as hls_snapshot
from radio_hls.operations import status as hls_status
from radio_hls.operations.health import HostHealth, evaluate, host_health, lines, report
from radio_hls.operations.snapshot import playlist_path

if TYPE_CHECKING:
    from conftest import StatusTree

NOW = 1_700_000_000.0  # the tree's clock (conftest.NOW): a multiple of 10, the start of a bucket


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
    assert clock.parse(value) == expected


def test_config_from_the_settings_file(tree: StatusTree) -> None:
    config = hls_snapshot.Config.from_env(hls_snapshot.read_settings(tree.settings_file(max_playlist_age=30)))
    assert config == dataclasses.replace(tree.config, max_playlist_age=30.0)


@pytest.mark.parametrize("name", ["HLS_STATIONS_DIR", "HLS_OUTPUT_ROOT", "HLS_LOG_DIR", "HLS_LISTENERS_FILE",
                                  "HLS_SYNC_STATUS_FILE"])
def test_a_path_the_role_passes_has_no_default(tree: StatusTree, name: str) -> None:
    values = dict(hls_snapshot.read_settings(tree.settings_file()))
    del values[name]
    with pytest.raises(BadSetting, match=f"^{name} is not set"):
        hls_snapshot.Config.from_env(values)


def test_a_missing_settings_file_is_an_error_not_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert hls_health.main(["--config", str(tmp_path / "missing.env")]) == hls_health.EXIT_UNKNOWN
    assert capsys.readouterr().out.startswith(f"UNKNOWN: cannot read the settings file {tmp_path}/missing.env")


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
    assert lines(evaluate(tree.snapshot(), 60)) == [
        "UNHEALTHY joy: newest segment 1699999000000-102.ts is missing or empty",
        "HOST UNHEALTHY: none of the 1 station(s) that should run is healthy"]


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
    assert (document["status"], document["host"]) == ("unhealthy", "degraded")
    assert document["unhealthy"] == ["bad"]
    assert document["generated_at"] == "2023-11-14T22:13:20+00:00"
    assert document["stations"][0] == {"slug": "bad", "should_run": True, "healthy": False,
                                       "state": "active (running)", "playlist_age_seconds": 99.0,
                                       "problems": ["playlist is 99 s old (limit 60 s)"]}


def test_main_exit_status_and_output(tree: StatusTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings = tree.settings_file(max_playlist_age=10)
    monkeypatch.setattr(hls_health, "collect", lambda config: hls_snapshot.collect(
        config, tree.systemctl, now=1_700_000_000.0, monotonic_now=50_000.0))
    tree.station("joy", playlist_age=5)
    tree.station("quick", playlist_age=1)
    assert hls_health.main(["--config", str(settings)]) == 0
    assert capsys.readouterr().out == "OK: 2 station(s) healthy\n"
    # One station down: a warning, the host still serves.
    assert hls_health.main(["--config", str(settings), "--max-age", "4"]) == 1
    assert capsys.readouterr().out == "UNHEALTHY joy: playlist is 5 s old (limit 4 s)\n"
    # None up: critical, the host serves nothing.
    assert hls_health.main(["--config", str(settings), "--max-age", "1"]) == 2
    assert capsys.readouterr().out.splitlines() == [
        "UNHEALTHY joy: playlist is 5 s old (limit 1 s)", "UNHEALTHY quick: playlist is 1 s old (limit 1 s)",
        "HOST UNHEALTHY: none of the 2 station(s) that should run is healthy"]
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
    assert hls_health.main(["--config", str(tree.settings_file())]) == hls_health.EXIT_UNKNOWN == 3
    assert capsys.readouterr().out.startswith("UNKNOWN: cannot read the station list")
    monkeypatch.undo()
    assert hls_snapshot.station_slugs(tmp_path / "not-yet") == []


# --- the host: does it serve? ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("stations", "status"), [
    ({}, "ok"),  # a new host, or an empty list: nothing to serve is no fault of the host
    ({"one": {}, "two": {}}, "ok"),
    ({"one": {}, "down": {"active": False}}, "degraded"),
    ({"one": {}, "stale": {"playlist_age": 99}, "empty": {"newest_bytes": 0}}, "degraded"),
    ({"down": {"active": False}, "stale": {"playlist_age": 99}}, "unhealthy"),
    ({"down": {"active": False}, "off": {"enabled": False, "active": False}}, "unhealthy"),
    ({"off": {"enabled": False, "active": False}}, "ok"),
])
def test_one_station_down_never_takes_the_host_down(tree: StatusTree, stations: dict[str, dict[str, object]],
                                                    status: str) -> None:
    for slug, settings in stations.items():
        tree.station(slug, **settings)  # type: ignore[arg-type]
    host = host_health(evaluate(tree.snapshot(), 60))
    assert host.status == status
    assert host.serving == (status != "unhealthy")


def test_the_host_report_is_small_and_says_why(tree: StatusTree) -> None:
    tree.station("one")
    tree.station("down", active=False)
    snapshot = tree.snapshot()
    host = host_health(evaluate(snapshot, 60))
    assert host == HostHealth("degraded", should_run=2, healthy=1, unhealthy=["down"])
    assert hls_health.host_report(snapshot, host, snapshot.generated_at + 60) == {
        "status": "degraded", "reason": "1 of 2 station(s) that should run are healthy",
        "generated_at": "2023-11-14T22:13:20+00:00", "fresh_until": "2023-11-14T22:14:20+00:00",
        "stations_should_run": 2, "stations_healthy": 1, "unhealthy": ["down"]}


# --- hls_status: the files behind /health* --------------------------------------------------------------------------

def served(out: Path, path: str, at: float) -> tuple[int, dict[str, object] | None]:
    """(status, body) as nginx.conf.j2 answers /health, /health/stations and /health/stations/<slug> at Unix time `at`:
    try_files /fresh-<at // 10>/<file> =503, the 503 with report/<file> as its body (404 when there is none)."""
    name = {"/health": "host.json", "/health/stations": "stations.json"}.get(path) \
        or f"station/{path.removeprefix('/health/stations/')}.json"
    fresh = out / f"fresh-{int(at) // 10}" / name
    if fresh.is_file():
        return 200, json.loads(fresh.read_text())
    last = out / "report" / name
    return (503, json.loads(last.read_text())) if last.is_file() else (404, None)


def set_playlist_age(directory: Path, seconds: float) -> None:
    """Of the station whose output directory this is."""
    playlist = playlist_path(directory.parent, directory.name)
    os.utime(playlist, (NOW - seconds, NOW - seconds))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "status"
    directory.mkdir()
    return directory


def test_health_stays_200_while_one_station_is_down(tree: StatusTree, out: Path) -> None:
    tree.station("joy")
    tree.station("down", active=False)
    tree.station("off", enabled=False, active=False)
    assert hls_status.publish(tree.snapshot(), 60, out).status == "degraded"
    status, body = served(out, "/health", NOW)
    assert status == 200 and body is not None
    assert (body["status"], body["unhealthy"]) == ("degraded", ["down"])
    assert served(out, "/health/stations/joy", NOW) == (200, {
        "slug": "joy", "on_air": True, "should_run": True, "healthy": True, "state": "active (running)",
        "problems": []})
    status, body = served(out, "/health/stations/down", NOW)
    assert status == 503 and body is not None
    assert (body["on_air"], body["problems"]) == (False, ["unit is inactive (dead)", "no playlist"])
    # Not enabled: not checked, and not on the air either.
    assert served(out, "/health/stations/off", NOW)[0] == 503
    assert served(out, "/health/stations/nope", NOW) == (404, None)
    status, body = served(out, "/health/stations", NOW)
    assert status == 200 and body is not None
    assert [station["slug"] for station in body["stations"]] == ["down", "joy", "off"]  # type: ignore[union-attr]


def test_health_is_503_when_no_station_that_should_run_is_healthy(tree: StatusTree, out: Path) -> None:
    tree.station("down", active=False)
    stale = tree.station("stale", playlist_age=99)
    assert hls_status.publish(tree.snapshot(), 60, out).serving is False
    status, body = served(out, "/health", NOW)
    assert status == 503 and body is not None
    assert (body["status"], body["reason"]) == ("unhealthy", "none of the 2 station(s) that should run is healthy")
    assert served(out, "/health/stations", NOW)[0] == 200  # the list itself is fresh
    set_playlist_age(stale, 1)
    hls_status.publish(tree.snapshot(), 60, out)
    assert served(out, "/health", NOW)[0] == 200


def test_health_goes_503_when_hls_status_stops_vouching(tree: StatusTree, out: Path) -> None:
    tree.station("joy")
    hls_status.publish(tree.snapshot(), 60, out, fresh_seconds=60)
    # Fresh up to 60 s after the run, to the end of that 10 s bucket (69.9 s), without another run.
    for later in (0, 9.9, 30, 60, 69.9):
        assert served(out, "/health", NOW + later)[0] == 200, later
        assert served(out, "/health/stations/joy", NOW + later)[0] == 200, later
    for later in (70, 3600):
        assert served(out, "/health", NOW + later)[0] == 503, later
        assert served(out, "/health/stations/joy", NOW + later)[0] == 503, later
        assert served(out, "/health/stations", NOW + later)[0] == 503, later
    assert served(out, "/health", NOW - 20)[0] == 503  # a clock that jumped back: unvouched until the next run


def test_each_run_keeps_only_the_buckets_it_vouches_for(tree: StatusTree, out: Path) -> None:
    tree.station("joy")
    for run in range(0, 200, 10):
        tree_snapshot = tree.snapshot()
        tree_snapshot.generated_at = NOW + run
        hls_status.publish(tree_snapshot, 60, out, fresh_seconds=60)
    buckets = sorted(int(path.name.removeprefix("fresh-")) for path in out.glob("fresh-*"))
    last = int(NOW + 190) // 10
    assert buckets == list(range(last - 1, last + 7))  # the one just over, this one, and 60 s ahead
    assert all(os.readlink(path) == "ok" for path in out.glob("fresh-*"))


def test_a_station_report_is_rewritten_only_when_its_verdict_changes(tree: StatusTree, out: Path) -> None:
    joy = tree.station("joy", playlist_age=2)
    hls_status.publish(tree.snapshot(), 60, out)
    report_file = out / "report" / "station" / "joy.json"
    before = report_file.stat().st_ino
    set_playlist_age(joy, 3)
    hls_status.publish(tree.snapshot(), 60, out)
    assert report_file.stat().st_ino == before
    set_playlist_age(joy, 61)
    hls_status.publish(tree.snapshot(), 60, out)
    assert report_file.stat().st_ino != before
    assert not (out / "ok" / "station" / "joy.json").exists()


def test_a_station_that_left_the_list_is_unknown(tree: StatusTree, out: Path) -> None:
    tree.station("joy")
    tree.station("gone")
    hls_status.publish(tree.snapshot(), 60, out)
    (tree.config.stations_dir / "gone.env").unlink()
    hls_status.publish(tree.snapshot(), 60, out)
    assert served(out, "/health/stations/gone", NOW) == (404, None)
    assert served(out, "/health/stations/joy", NOW)[0] == 200


def test_publish_writes_every_file(tree: StatusTree, tmp_path: Path, out: Path) -> None:
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    (out / "healthy.json").write_text("{}")  # what nginx served before /health meant "this host serves"
    (out / "health.json").write_text("{}")
    tree.station("joy", now_playing={"title": "A - B", "artist": "A", "song": "B", "updated_at": "t"})
    assert hls_status.publish(tree.snapshot(), 60, out, textfiles).status == "ok"
    files = sorted(str(path.relative_to(out)) for path in out.rglob("*") if not path.is_symlink() and path.is_file())
    assert files == ["metrics.prom", "report/host.json", "report/station/joy.json", "report/stations.json",
                     "stations.json"]
    assert (textfiles / "hls.prom").read_text() == (out / "metrics.prom").read_text()
    assert all(path.stat().st_mode & 0o777 == 0o644 for path in out.rglob("*") if path.is_file())
    assert json.loads((out / "report" / "stations.json").read_text())["status"] == "ok"


def test_status_main(tree: StatusTree, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree.station("joy")
    monkeypatch.setattr(hls_status, "collect", lambda config: tree.snapshot())
    assert hls_status.main(["--config", str(tree.settings_file()), "--output-dir", str(out)]) == 0
    assert served(out, "/health", NOW)[0] == 200
    assert served(out, "/health", NOW + 60)[0] == 200  # at least 60 s by default
    assert served(out, "/health", NOW + 70)[0] == 503


def test_status_main_without_a_snapshot_vouches_for_nothing(tree: StatusTree, out: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tree.station("joy")
    settings = tree.settings_file()
    monkeypatch.setattr(hls_status, "collect", lambda config: tree.snapshot())
    assert hls_status.main(["--config", str(settings), "--output-dir", str(out)]) == 0

    def failing(config: object) -> None:
        raise hls_snapshot.SnapshotError("cannot read the station list /etc/hls/stations: Permission denied")

    monkeypatch.setattr(hls_status, "collect", failing)
    assert hls_status.main(["--config", str(settings), "--output-dir", str(out)]) == 1
    status, body = served(out, "/health", NOW)
    assert status == 503 and body is not None
    assert (body["status"], body["reason"]) == (
        "unknown", "cannot read the station list /etc/hls/stations: Permission denied")
    assert served(out, "/health/stations/joy", NOW)[0] == 503
