"""The backend boundary on a real host: what the sync refuses, what the watch says, and what the watch may do."""

from __future__ import annotations

import json
import shlex

import pytest
from conftest import BACKEND, STATIONS, main_pid, now, run_sync, station_ready, sync_log, wait_for

WATCH = "hls-sync-watch.service"


def record(record_id: int, slug: str, stream_url: str) -> dict:
    return {"id": record_id, "slug": slug, "title": slug, "stream_url": stream_url, "generate_hls_stream": True,
            "disabled": False}


def watch_log(host, since: str) -> list[str]:
    return host.check_output(f"journalctl -u {WATCH} --no-pager -o cat --since {shlex.quote(since)}").splitlines()


def backend_requests(host) -> int:
    """How many /graphql requests the test backend has answered so far."""
    return len(json.loads(host.check_output(f"curl -fsS {BACKEND}/admin/requests")))


@pytest.fixture
def no_timer(host):
    """hls-sync.timer stopped, so that a sync run is the test's or the watch's; started again afterwards."""
    host.check_output("systemctl stop hls-sync.timer")
    yield
    host.check_output("systemctl start hls-sync.timer")


def test_a_station_url_aimed_inside_is_refused_with_one_line(host, backend):
    since = now(host)
    backend(stations=[*STATIONS, record(40, "metadata", "http://169.254.169.254/latest/meta-data/")])
    assert run_sync(host).rc == 0
    expected = ("ERROR skipping station: metadata: stream_url host 169.254.169.254 is an internal address "
                "(link-local); list its network in hls_upstream_allowed_networks to allow it")
    lines = [line for line in sync_log(host, since).splitlines() if "metadata" in line]
    assert lines and set(lines) == {expected}, lines
    assert not host.file("/etc/hls/stations/metadata.env").exists
    # The demo's Icecast on 127.0.0.1 is allowed (hls_upstream_allowed_networks in molecule.yml).
    for station in STATIONS:
        assert host.service(f"hls@{station['slug']}").is_running


def test_a_deployed_station_whose_url_turns_internal_keeps_running(host, backend):
    station_ready(host, "demo-aac", min_segments=1)
    pid, env = main_pid(host, "demo-aac"), host.file("/etc/hls/stations/demo-aac.env").content_string
    since = now(host)
    backend(stations=[STATIONS[0], {**STATIONS[1], "stream_url": "http://10.11.12.13:8000/demo-aac"}])
    assert run_sync(host).rc == 0
    assert "ERROR skipping station: demo-aac: stream_url host 10.11.12.13 is an internal address (private)" in \
        sync_log(host, since)
    assert host.file("/etc/hls/stations/demo-aac.env").content_string == env
    assert main_pid(host, "demo-aac") == pid


def test_an_upper_case_scheme_is_opened(host, backend):
    # FFmpeg's protocol names are case-sensitive ("HTTP://...: Protocol not found"): the sync writes it in lower case.
    backend(stations=[*STATIONS, record(41, "shouting", "HTTP://127.0.0.1:8000/demo-aac")])
    assert run_sync(host).rc == 0
    assert 'HLS_STREAM_URL="http://127.0.0.1:8000/demo-aac"' in \
        host.file("/etc/hls/stations/shouting.env").content_string
    station_ready(host, "shouting", min_segments=1)


def test_the_watch_says_a_bad_record_once_and_short(host, backend, no_timer):
    since = now(host)
    slug = "x" * 300
    backend(stations=[*STATIONS, record(42, slug, "http://127.0.0.1:8000/demo-aac")])
    first = wait_for(lambda: [line for line in watch_log(host, since) if "xxxxx" in line],
                     what="the watch to report the bad record")
    seen = backend_requests(host)
    # Three more checks of the same list (with the timer stopped and nothing to change, every request is the watch's).
    wait_for(lambda: backend_requests(host) >= seen + 3, what="three more checks by the watch")
    lines = [line for line in watch_log(host, since) if "xxxxx" in line]
    assert lines == first and len(lines) == 1, lines
    assert lines[0].startswith("ERROR skipping station: slug 'xxx") and "(300 characters)" in lines[0]
    assert len(lines[0]) < 200


def test_the_watch_holds_no_privilege_and_still_gets_a_sync_run(host, backend, no_timer):
    show = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show -p DynamicUser -p CapabilityBoundingSet -p NoNewPrivileges -p MainPID {WATCH}").splitlines())
    assert show["DynamicUser"] == "yes"
    assert show["CapabilityBoundingSet"] == ""
    assert show["NoNewPrivileges"] == "yes"
    assert host.check_output(f"ps -o uid= -p {show['MainPID']}").strip() != "0"
    # Without the timer, only the watch (through hls-sync.path) can have this station started.
    backend(stations=[*STATIONS, record(43, "watched-path", "http://127.0.0.1:8000/demo-mp3")])
    wait_for(lambda: host.file("/etc/hls/stations/watched-path.env").exists, what="the watch to have the sync run")
    assert host.service("hls-sync.path").is_running
