"""Serving that a CDN, a load balancer and an operator can trust (issue 10): errors are never cached, every listener's
segment requests carry their session, one station never takes the host's /health down, a stop on purpose is not a
failure, and the watchdog never starts a stopped station."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections.abc import Iterator

import pytest
from conftest import (
    STATIONS,
    http,
    main_pid,
    playlist,
    run_sync,
    session_log,
    station_ready,
    streaming_ffmpeg_pid,
    wait_for,
)

SEGMENT_LINE = re.compile(r"[0-9]+\.ts")
IMMUTABLE = "public, max-age=31536000, immutable"
PYTHON = "/opt/hls/venv/bin/python"
HEALTH = "/opt/hls/venv/bin/hls-health --config /etc/hls/status.env"
STATION_DIR = "/etc/hls/stations"


def future_segment(host, slug: str) -> str:
    """A segment name the station will publish later: a slot far ahead of the newest."""
    return f"{int(station_ready(host, slug, min_segments=1).segments[-1].removesuffix('.ts')) + 1000}.ts"


def status_and_cache_control(host, command: str) -> list[tuple[int, str]]:
    """(status, Cache-Control) of every request of `command`, which runs curls in parallel with STATUS_AND_CACHE:
    one short line per response, written at once, so parallel answers cannot interleave."""
    return [(int(line.split(" ", 1)[0]), line.partition(" ")[2].strip())
            for line in host.check_output(command).splitlines() if line.strip()]


STATUS_AND_CACHE = "-o /dev/null -w '%{http_code} %header{cache-control}\\n'"


# --- caching: errors never, segments for good -------------------------------------------------------------------

def test_a_served_segment_is_immutable_and_its_errors_are_not(host):
    segment = station_ready(host, "demo-aac", min_segments=1).segments[-1]
    assert http(host, f"/hls/demo-aac/{segment}", "-o", "/dev/null")[1]["cache-control"] == IMMUTABLE
    assert http(host, f"/hls/demo-aac/{segment}", "-o", "/dev/null", "-r", "0-99")[1]["cache-control"] == IMMUTABLE
    # A CDN that kept this 404 for a year would serve that hole to every listener behind it.
    status, headers, _ = http(host, f"/hls/demo-aac/{future_segment(host, 'demo-aac')}", "-o", "/dev/null")
    assert (status, headers["cache-control"]) == (404, "no-store")
    status, headers, _ = http(host, f"/hls/demo-aac/{segment}", "-o", "/dev/null", "-X", "POST")
    assert (status, headers["cache-control"]) == (405, "no-store")


@pytest.mark.parametrize(("path", "curl_args", "expected"), [
    ("/hls/demo-aac/index.m3u8", (), (200, "no-cache")),
    ("/hls/demo-aac/index.m3u8", ("-X", "DELETE"), (405, "no-store")),
    ("/hls/no-such-station/index.m3u8", (), (404, "no-store")),
    ("/hls/no-such-station/now-playing.json", (), (404, "no-store")),
    ("/hls/demo-aac/now-playing.json", ("-X", "PUT"), (405, "no-store")),
    ("/hls/demo-aac/" + "a" * 20_000, (), (414, "no-store")),
    ("/hls/", (), (404, "no-store")),
    ("/anything-else", (), (404, "no-store")),
])
def test_every_error_is_no_store(host, path, curl_args, expected):
    status, headers, _ = http(host, path, "-o", "/dev/null", *curl_args)
    assert (status, headers.get("cache-control")) == expected


def test_the_rate_limiters_429_is_no_store(host):
    # One client (a forged address through the trusted loopback proxy) asking for segment names: some answers are
    # 429 once it is over the rate; repeated until one is, however slowly this machine sends them.
    url = f"http://127.0.0.1/hls/demo-aac/{future_segment(host, 'demo-aac')}"
    flood = (f"seq 40 | xargs -P 20 -I{{}} curl -s {STATUS_AND_CACHE} -H 'X-Forwarded-For: 198.51.100.61' "
             f"{shlex.quote(url)}")
    answers = wait_for(lambda: (found := status_and_cache_control(host, flood)) and 429 in dict(found) and found,
                       what="a 429 from the rate limiter")
    assert {status for status, _ in answers} <= {404, 429}
    assert {cache for _, cache in answers} == {"no-store"}


# --- every segment request attributed to its listener ---------------------------------------------------------------

def playlist_with(host, query: str, *curl_args: str) -> tuple[dict[str, str], list[str]]:
    status, headers, body = http(host, f"/hls/demo-aac/index.m3u8?{query}", *curl_args)
    assert status == 200
    return headers, [line for line in body.splitlines() if line and not line.startswith("#")]


def test_the_playlist_carries_the_listeners_s_on_every_segment(host):
    station_ready(host, "demo-aac", min_segments=3)
    for curl_args in ((), ("--compressed",)):  # gzip comes after the substitution
        headers, uris = playlist_with(host, "s=abc", *curl_args)
        assert len(uris) >= 3
        assert all(re.fullmatch(rf"{SEGMENT_LINE.pattern}\?s=abc", uri) for uri in uris), uris
        assert headers["cache-control"] == "no-cache"
    assert playlist_with(host, "s=abc", "--compressed")[0].get("content-encoding") == "gzip"


@pytest.mark.parametrize("hostile", ["", "a%0Ab", "%3Cscript%3E", "a%20b", "a%22b", "a%26x", "x" * 129, "a/b",
                                     "..%2F..", "a%3Fs%3Db"])
def test_a_hostile_or_missing_s_leaves_the_playlist_unchanged(host, hostile):
    station_ready(host, "demo-aac", min_segments=1)
    headers, uris = playlist_with(host, f"s={hostile}&ref=x")
    assert uris and all(SEGMENT_LINE.fullmatch(uri) for uri in uris), uris
    assert "content-length" in headers  # served as the file is: nginx did not even filter it


def segment_digests(host, uri: str) -> tuple[str, str] | None:
    """sha256 of the segment fetched as the playlist lists it (with ?s=) and without the query; None when it was
    gone already (the playlist moved on in between)."""
    name = uri.split("?")[0]
    fetch = "curl -fsS http://127.0.0.1/hls/demo-aac/{} | sha256sum && test ${{PIPESTATUS[0]}} -eq 0"
    with_s, without = (host.run(f"bash -c {shlex.quote(fetch.format(shlex.quote(u)))}") for u in (uri, name))
    return (with_s.stdout, without.stdout) if with_s.rc == 0 and without.rc == 0 else None


def test_a_segment_with_s_is_the_same_file_and_is_logged_with_it(host):
    session = "trust-serving-7Kx.q~:-"

    def listed_and_fetched() -> tuple[str, tuple[str, str]] | None:
        # What a player does: resolve the playlist's URI as it is, query string included.
        uri = playlist_with(host, f"s={session}")[1][-1]
        digests = segment_digests(host, uri)
        return (uri, digests) if digests else None

    uri, (with_s, without) = wait_for(listed_and_fetched, what="a listed segment fetched with and without s=")
    assert uri.endswith(f"?s={session}")
    name = uri.split("?")[0]
    assert with_s == without
    assert http(host, f"/hls/demo-aac/{uri}", "-o", "/dev/null")[1]["cache-control"] == IMMUTABLE
    # The segment requests that carried s= are logged with it (their playlist's line may be written first).
    logged = wait_for(lambda: [f for f in (line.split("\t") for line in session_log(host, session))
                               if f[10] == f"/hls/demo-aac/{name}"], what="the segment's session log line")
    assert all(f[2:4] == ["demo-aac", session] and f[11] == "200" for f in logged), logged


# --- /health: the host serves, whatever one station does --------------------------------------------------------------

def health(host, path: str = "/health") -> tuple[int, dict | None]:
    status, headers, body = http(host, path)
    return status, json.loads(body) if headers.get("content-type") == "application/json" else None


def station_health_is(host, slug: str, code: int) -> dict:
    return wait_for(lambda: (r := health(host, f"/health/stations/{slug}"))[0] == code and r[1],
                    what=f"/health/stations/{slug} to answer {code}")


def test_health_stays_200_while_one_station_is_stopped(host):
    for station in STATIONS:
        station_ready(host, station["slug"], min_segments=1)
    station_health_is(host, "demo-mp3", 200)
    streaming_ffmpeg_pid(host, "demo-mp3")  # its stop reports "inactive (dead)", not "failed"
    host.check_output("systemctl stop hls@demo-mp3")
    try:
        # hls-status reports every 10 s: a report taken while the stop ran says "deactivating" first.
        report = wait_for(
            lambda: not (r := station_health_is(host, "demo-mp3", 503))["state"].startswith("deactivating") and r,
            what="a report of demo-mp3 after its stop")
        assert (report["on_air"], report["state"]) == (False, "inactive (dead)")
        status, body = health(host)
        assert status == 200 and body is not None
        assert (body["status"], body["unhealthy"]) == ("degraded", ["demo-mp3"])
        assert health(host, "/health/stations/demo-aac")[0] == 200
        listed = {station["slug"]: station["healthy"] for station in health(host, "/health/stations")[1]["stations"]}
        assert listed == {"demo-mp3": False, "demo-aac": True}
        assert health(host, "/health/stations/no-such-station")[0] == 404
    finally:
        host.check_output("systemctl start hls@demo-mp3")
    station_health_is(host, "demo-mp3", 200)


def test_health_stays_200_while_one_station_is_broken(host, backend):
    # A record whose upstream does not exist: its station starts, fails and restarts forever.
    broken = [{**STATIONS[0], "stream_url": "http://127.0.0.1:8000/no-such-mount"}, STATIONS[1]]
    cursor = journal_cursor(host, "hls@demo-mp3")
    backend(stations=broken)
    assert run_sync(host).rc == 0
    report = station_health_is(host, "demo-mp3", 503)
    assert report["on_air"] is False
    status, body = health(host)
    assert status == 200 and body is not None and body["unhealthy"] == ["demo-mp3"]
    # The launcher's error exit (1) is still a failure that systemd restarts, unlike a stop on purpose.
    wait_for(lambda: "Failed with result 'exit-code'" in journal_after(host, "hls@demo-mp3", cursor),
             what="hls@demo-mp3 to fail with its exit code")


def test_health_is_503_when_no_station_serves(host):
    host.check_output("systemctl stop hls@demo-mp3 hls@demo-aac")
    try:
        status, body = wait_for(lambda: (r := health(host))[0] == 503 and r, what="/health to answer 503")
        assert body is not None
        assert (body["status"], body["reason"]) == ("unhealthy", "none of the 2 station(s) that should run is healthy")
    finally:
        host.check_output("systemctl start hls@demo-mp3 hls@demo-aac")
    wait_for(lambda: health(host)[0] == 200, what="/health to answer 200 again")


def test_health_is_503_when_hls_status_stops_vouching(host):
    wait_for(lambda: health(host)[0] == 200, what="/health to answer 200")
    host.check_output("systemctl stop hls-status.timer")
    try:
        # Its last run vouched for 60 s (to the end of a 10 s bucket): then every /health* answers 503 by itself.
        wait_for(lambda: health(host)[0] == 503, timeout=180, what="/health to go 503 without hls-status")
        assert health(host, "/health/stations/demo-aac")[0] == 503
        assert health(host, "/health/stations")[0] == 503
    finally:
        host.check_output("systemctl start hls-status.timer")
    wait_for(lambda: health(host)[0] == 200, what="/health to answer 200 again")


def test_health_is_503_while_hls_status_cannot_read_the_station_list(host):
    wait_for(lambda: health(host)[0] == 200, what="/health to answer 200")
    mode = host.check_output(f"stat -c %a {STATION_DIR}")
    host.check_output(f"chmod 0700 {STATION_DIR}")
    try:
        status, body = wait_for(lambda: (r := health(host))[0] == 503 and r, what="/health to answer 503")
        assert body is not None and body["status"] == "unknown"
        assert body["reason"].startswith(f"cannot read the station list {STATION_DIR}: Permission denied")
    finally:
        host.check_output(f"chmod {mode} {STATION_DIR}")
    wait_for(lambda: health(host)[0] == 200, what="/health to answer 200 again")


# --- a stop on purpose is not a failure; a crash still is -------------------------------------------------------------

def journal_cursor(host, unit: str) -> str:
    out = host.check_output(f"journalctl -u {unit} -n 0 --show-cursor --no-pager")
    return out.rsplit("-- cursor: ", 1)[1].strip()


def journal_after(host, unit: str, cursor: str) -> str:
    return host.check_output(f"journalctl -u {unit} --no-pager -o cat --after-cursor={shlex.quote(cursor)}")


def unit_state(host, slug: str) -> tuple[str, str]:
    out = host.check_output(f"systemctl show -p ActiveState -p Result hls@{slug}")
    fields = dict(line.split("=", 1) for line in out.splitlines())
    return fields["ActiveState"], fields["Result"]


def test_systemctl_stop_leaves_the_station_inactive_not_failed(host):
    streaming_ffmpeg_pid(host, "demo-mp3")
    host.check_output("systemctl stop hls@demo-mp3")
    try:
        assert unit_state(host, "demo-mp3") == ("inactive", "success")
        assert host.run("systemctl is-failed hls@demo-mp3").stdout.strip() == "inactive"
    finally:
        host.check_output("systemctl start hls@demo-mp3")
    station_ready(host, "demo-mp3", min_segments=1)


def test_a_station_the_sync_disables_ends_inactive_not_failed(host, backend):
    # (The sync also runs reset-failed on the stations it removes, so this held before SuccessExitStatus=255.)
    streaming_ffmpeg_pid(host, "demo-mp3")
    backend(stations=[{**STATIONS[0], "disabled": True}, STATIONS[1]])
    assert run_sync(host).rc == 0
    wait_for(lambda: unit_state(host, "demo-mp3")[0] == "inactive", what="hls@demo-mp3 to stop")
    assert unit_state(host, "demo-mp3") == ("inactive", "success")
    assert host.run("systemctl is-failed hls@demo-mp3").rc != 0


@pytest.mark.parametrize(("signal", "result"), [("SEGV", "core-dump|signal"), ("ABRT", "core-dump|signal"),
                                                 ("TERM", None)])
def test_a_crash_still_fails_and_any_exit_restarts(host, signal, result):
    pid = streaming_ffmpeg_pid(host, "demo-mp3")
    restarts = int(host.check_output("systemctl show -p NRestarts --value hls@demo-mp3"))
    cursor = journal_cursor(host, "hls@demo-mp3")
    host.check_output(f"kill -{signal} {pid}")
    wait_for(lambda: int(host.check_output("systemctl show -p NRestarts --value hls@demo-mp3")) > restarts,
             what=f"systemd to restart hls@demo-mp3 after SIG{signal}")
    journal = journal_after(host, "hls@demo-mp3", cursor)
    if result is None:  # SIGTERM from anyone but systemd: FFmpeg's 255, a clean exit, restarted all the same
        assert "Failed with result" not in journal, journal
    else:
        assert re.search(rf"Failed with result '({result})'", journal), journal
    station_ready(host, "demo-mp3", min_segments=1)
    assert main_pid(host, "demo-mp3") != pid


# --- the watchdog restarts only what runs -----------------------------------------------------------------------------

WATCHDOG_RESTART = (f"{PYTHON} -c 'from radio_hls.operations import watchdog; "
                    f"watchdog.restart_if_running(\"demo-mp3\")'")
HOLD_DIR = "/run/systemd/system/hls@demo-mp3.service.d"
RELEASE = "/run/hls-test-release-stop"
# A drop-in that keeps a stop under way (stop-post) until the test creates RELEASE, however long that takes.
HOLD_STOP = ("[Service]", "TimeoutStopSec=infinity",
             f'ExecStopPost=/bin/sh -c "while [ ! -e {RELEASE} ]; do sleep 0.2; done"')


def no_job(host) -> bool:
    return not host.check_output("systemctl list-jobs --no-legend --no-pager hls@demo-mp3.service").strip()


def stop_under_way(host) -> bool:
    return host.check_output("systemctl show -p SubState --value hls@demo-mp3") == "stop-post"


@contextlib.contextmanager
def stops_held_until_released(host) -> Iterator[None]:
    """While inside, a stop of hls@demo-mp3 stays under way (stop-post) until RELEASE exists."""
    lines = " ".join(shlex.quote(line) for line in HOLD_STOP)
    host.check_output(f"rm -f {RELEASE} && mkdir -p {HOLD_DIR} && printf '%s\\n' {lines} > {HOLD_DIR}/hold-stop.conf "
                      "&& systemctl daemon-reload")
    try:
        yield
    finally:
        host.check_output(f"touch {RELEASE}")
        wait_for(lambda: not stop_under_way(host), what="the held stop to finish")
        host.check_output(f"rm -rf {HOLD_DIR} {RELEASE} && systemctl daemon-reload")


def test_the_watchdog_leaves_a_stopped_station_stopped(host):
    streaming_ffmpeg_pid(host, "demo-mp3")  # a stop of a station still opening its upstream fails (exit 1)
    host.check_output("systemctl stop hls@demo-mp3")
    try:
        # The watchdog saw it running and decided to restart it, but the operator was quicker.
        host.check_output(WATCHDOG_RESTART)
        # --no-block: a (re)start would be queued by now, or already done.
        assert no_job(host)
        assert unit_state(host, "demo-mp3") == ("inactive", "success")
    finally:
        host.check_output("systemctl start hls@demo-mp3")
    station_ready(host, "demo-mp3", min_segments=1)


def test_the_watchdog_lets_a_stop_under_way_finish(host):
    streaming_ffmpeg_pid(host, "demo-mp3")  # a stop of a station still opening its upstream fails (exit 1)
    try:
        with stops_held_until_released(host):
            host.check_output("systemctl stop --no-block hls@demo-mp3")
            wait_for(lambda: stop_under_way(host), what="the stop to be under way")
            host.check_output(WATCHDOG_RESTART)  # `restart` here replaced the stop job with a restart
            host.check_output(f"touch {RELEASE}")
            wait_for(lambda: no_job(host), what="every job of hls@demo-mp3 to finish")
            assert unit_state(host, "demo-mp3") == ("inactive", "success")
    finally:
        host.check_output("systemctl start hls@demo-mp3")
    station_ready(host, "demo-mp3", min_segments=1)


def test_the_watchdog_still_restarts_a_running_station(host):
    station_ready(host, "demo-mp3", min_segments=1)
    pid = main_pid(host, "demo-mp3")
    host.check_output(WATCHDOG_RESTART)
    wait_for(lambda: main_pid(host, "demo-mp3") not in (0, pid), what="a new FFmpeg for hls@demo-mp3")
    station_ready(host, "demo-mp3", min_segments=1)
    assert playlist(host, "demo-mp3") is not None
