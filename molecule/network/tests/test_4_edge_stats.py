"""Listeners are counted where they arrive (docs/design.md, "### Edges"): the edge runs the analytics, hls-status with
the live listener counts, /health and the status page; the origins never take the edge's fetches for listeners."""

from __future__ import annotations

import json
import time
import urllib.request

from conftest import counted, edge_port, http, serving, wait_for

SLUG = "demo-mp3"  # not test_2's station, so its players are not in the edge's 60 s window
SESSION_LOG = "/var/log/nginx/hls-access.log"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (loopback, the test's own edge)
        return answer.read().decode("utf-8", "replace")


def test_the_edge_counts_a_listener_once_and_the_origins_never(origins, edge):
    # The tests before stopped an origin and moved stations: until both serve the station again, the edge may have
    # nothing fresh to give (asked here, on the origins themselves, where no listener of the edge's counts).
    for origin in origins:
        wait_for(lambda origin=origin: serving(origin, SLUG), timeout=180,
                 what=f"{SLUG} served by {origin.backend.hostname}")
    base = f"http://127.0.0.1:{edge_port()}/hls/{SLUG}/"
    for _ in range(3):  # a player: the playlist, its newest segments (each line carries ?s=), again
        playlist = get(base + "index.m3u8?s=net-count-1")
        for uri in [line for line in playlist.splitlines() if line and not line.startswith("#")][-2:]:
            get(base + uri)
        time.sleep(2)
    wait_for(lambda: counted(edge).get(SLUG) == 1, what="the edge's analytics to count the listener once")
    # hls-status reads the analytics' counts on its own timer: its metrics follow within one of its runs.
    counted_line = f'hls_station_listeners{{station="{SLUG}"}} 1'
    metrics = wait_for(lambda: (answer := http(edge, "/metrics"))[0] == 200 and counted_line in answer[1].splitlines()
                       and answer[1], timeout=60, what=f"{counted_line} in the edge's /metrics")
    assert "hls_station_up" not in metrics  # the edge runs no station
    # The edge's fetches are no listener on an origin: none of its addresses in their session logs (field 7 is the
    # connecting address, realip_remote_addr).
    addresses = set(edge.interface("eth0").addresses)
    for origin in origins:
        log = origin.file(SESSION_LOG)
        lines = log.content_string.splitlines() if log.exists else []
        assert not [line for line in lines if line.split("\t")[6] in addresses], origin.backend.hostname


def test_the_edge_serves_health_and_its_status_page(edge):
    assert wait_for(lambda: http(edge, "/health")[0] == 200, what="the edge's /health")
    assert json.loads(http(edge, "/status.json")[1])["edge"] is True
    assert http(edge, "/")[0] == 200 and http(edge, "/hls.min.js")[0] == 200
    assert edge.service("hls-status.timer").is_running and edge.service("hls-analytics.timer").is_running
    assert edge.run("systemctl cat hls-sync.service").rc != 0  # no station machinery
