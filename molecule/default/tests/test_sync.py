"""hls-sync against the GraphQL test backend: converges, fails static, refuses bad stations."""

from __future__ import annotations

import pytest
from conftest import STATIONS, TOKEN, main_pid, now, playlist, run_sync, station_ready, sync_log, wait_for


def test_sync_timer_is_active(host):
    timer = host.service("hls-sync.timer")
    assert timer.is_enabled
    assert timer.is_running


def test_sync_sends_the_token_and_follows_the_redirect(host, backend):
    host.check_output("curl -fsS -X POST http://127.0.0.1:8001/admin/reset")
    backend(stations=STATIONS, token=TOKEN, redirect_queries=True)
    assert run_sync(host).rc == 0
    requests = host.check_output("curl -fsS http://127.0.0.1:8001/admin/requests")
    assert '"GET"' in requests  # the 302 was followed
    assert f"Bearer {TOKEN}" in requests


def test_flipping_a_station_off_stops_disables_and_removes_it(host, backend):
    station_ready(host, "demo-aac")
    backend(stations=[STATIONS[0], {**STATIONS[1], "generate_hls_stream": False}])
    mp3_pid = main_pid(host, "demo-mp3")
    assert run_sync(host).rc == 0
    unit = host.service("hls@demo-aac")
    assert not unit.is_running
    assert not unit.is_enabled
    assert not host.file("/etc/hls/stations/demo-aac.env").exists
    assert not host.file("/run/hls/demo-aac").exists
    assert playlist(host, "demo-aac") is None
    # The other station was not touched.
    assert main_pid(host, "demo-mp3") == mp3_pid


def test_a_changed_url_restarts_only_that_station(host, backend):
    pids = {s["slug"]: main_pid(host, s["slug"]) for s in STATIONS}
    backend(stations=[STATIONS[0], {**STATIONS[1], "stream_url": "http://127.0.0.1:8000/demo-aac?v=2"}])
    assert run_sync(host).rc == 0
    wait_for(lambda: main_pid(host, "demo-aac") not in (0, pids["demo-aac"]), what="demo-aac to restart")
    assert main_pid(host, "demo-mp3") == pids["demo-mp3"]
    assert "v=2" in host.file("/etc/hls/stations/demo-aac.env").content_string


@pytest.mark.parametrize(("failure", "expected"), [
    ({"fail": "500"}, "HTTP 500"),
    ({"fail": "malformed"}, "malformed JSON"),
    ({"fail": "errors"}, "GraphQL errors"),
    ({"fail": "hang", "hang_seconds": 8}, "no answer"),
    ({"fail": "close"}, "cannot reach"),
    ({"stations": []}, "refusing to stop them"),
    ({"token": "another-token"}, "Unauthorized"),
])
def test_backend_failures_leave_stations_untouched(host, backend, failure, expected):
    pids = {s["slug"]: main_pid(host, s["slug"]) for s in STATIONS}
    env_before = host.file("/etc/hls/stations/demo-aac.env").content_string
    since = now(host)
    backend(**failure)
    assert run_sync(host).rc != 0
    log = sync_log(host, since)
    assert "no change made" in log and expected in log, log
    assert {s["slug"]: main_pid(host, s["slug"]) for s in STATIONS} == pids
    assert host.file("/etc/hls/stations/demo-aac.env").content_string == env_before


def test_backend_down_keeps_stations_running(host, backend):
    pids = {s["slug"]: main_pid(host, s["slug"]) for s in STATIONS}
    host.check_output("systemctl stop hls-test-backend.service")
    since = now(host)
    assert run_sync(host).rc != 0
    assert "cannot reach" in sync_log(host, since)
    assert {s["slug"]: main_pid(host, s["slug"]) for s in STATIONS} == pids
    for slug in pids:
        assert host.service(f"hls@{slug}").is_running


@pytest.mark.parametrize("bad", [
    {"id": 7, "slug": "../etc", "stream_url": "http://127.0.0.1:8000/demo-aac"},
    {"id": 8, "slug": "Upper-Case", "stream_url": "http://127.0.0.1:8000/demo-aac"},
    {"id": 9, "slug": "local-file", "stream_url": "file:///etc/passwd"},
    {"id": 10, "slug": "concat-trick", "stream_url": "concat:/etc/passwd|/etc/shadow"},
])
def test_a_bad_station_is_refused_while_the_others_run(host, backend, bad):
    pids = {s["slug"]: main_pid(host, s["slug"]) for s in STATIONS}
    since = now(host)
    backend(stations=[*STATIONS, {"title": "bad", "generate_hls_stream": True, "disabled": False, **bad}])
    assert run_sync(host).rc == 0
    assert "skipping station" in sync_log(host, since)
    assert host.run("ls /etc/hls/stations").stdout.split() == ["demo-aac.env", "demo-mp3.env"]
    assert "hls@local-file" not in host.check_output("systemctl list-units --all --no-legend 'hls@*'")
    assert {s["slug"]: main_pid(host, s["slug"]) for s in STATIONS} == pids


def test_a_stopped_station_stays_stopped_until_its_settings_change(host, backend):
    station_ready(host, "demo-aac", min_segments=1)
    host.check_output("systemctl stop hls@demo-aac")
    try:
        for _ in range(2):
            assert run_sync(host).rc == 0
            assert not host.service("hls@demo-aac").is_running
            assert host.service("hls@demo-aac").is_enabled
            assert host.file("/etc/hls/stations/demo-aac.env").exists
        backend(stations=[STATIONS[0], {**STATIONS[1], "stream_url": "http://127.0.0.1:8000/demo-aac?v=3"}])
        assert run_sync(host).rc == 0
        wait_for(lambda: host.service("hls@demo-aac").is_running, what="the changed station to start")
    finally:
        host.run("systemctl start hls@demo-aac")


def test_the_watch_brings_a_new_station_on_the_air_without_the_timer(host, backend):
    host.check_output("systemctl stop hls-sync.timer")
    try:
        since = now(host)
        watched = {"id": 30, "slug": "watched", "title": "Watched", "stream_url": "http://127.0.0.1:8000/demo-aac",
                   "generate_hls_stream": True, "disabled": False}
        backend(stations=[*STATIONS, watched])
        # hls_sync_poll_seconds (5 s): the watch sees the new list and starts hls-sync, which starts the station.
        station_ready(host, "watched", min_segments=1)
        watch_log = host.check_output(f"journalctl -u hls-sync-watch.service --no-pager -o cat --since '{since}'")
        assert "the station list changed: starting hls-sync.service" in watch_log, watch_log
        assert "watched" in sync_log(host, since)
    finally:
        host.check_output("systemctl start hls-sync.timer")
