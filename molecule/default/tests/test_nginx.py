"""nginx: what it serves, how it caches and what it logs for the listener analytics."""

from __future__ import annotations

import re
import uuid

import pytest
from conftest import http, session_log, station_ready, wait_for

LOG_FIELDS = 16
OUTPUT = "/run/hls"
PLAYLIST_DIR = f"{OUTPUT}/_playlists"  # contract.json: playlists_dir_name


@pytest.fixture(scope="module")
def segment(host):
    return station_ready(host, "demo-aac").segments[-1]


def test_playlist_headers(host):
    status, headers, body = http(host, "/hls/demo-aac/index.m3u8")
    assert status == 200
    assert body.startswith("#EXTM3U")
    assert headers["content-type"] == "application/vnd.apple.mpegurl"
    assert headers["cache-control"] == "no-cache"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["server"] == "nginx"  # no version


def test_playlist_is_gzipped_for_clients_that_ask(host):
    _, headers, _ = http(host, "/hls/demo-aac/index.m3u8", "-H", "Accept-Encoding: gzip", "-o", "/dev/null")
    assert headers.get("content-encoding") == "gzip"


def test_segment_headers(host, segment):
    status, headers, _ = http(host, f"/hls/demo-aac/{segment}", "-o", "/dev/null")
    assert status == 200
    assert headers["content-type"] == "video/mp2t"
    assert "immutable" in headers["cache-control"] and "max-age=31536000" in headers["cache-control"]
    assert headers["access-control-allow-origin"] == "*"


def test_cors_preflight_and_methods(host):
    status, headers, _ = http(host, "/hls/demo-aac/index.m3u8", "-X", "OPTIONS",
                              "-H", "Origin: https://app.example", "-H", "Access-Control-Request-Method: GET")
    assert status == 204
    assert "GET" in headers["access-control-allow-methods"]
    assert http(host, "/hls/demo-aac/index.m3u8", "-X", "POST")[0] == 405


@pytest.mark.parametrize("path", [
    "/hls/", "/hls/demo-aac/", "/hls/demo-aac/../../etc/passwd", "/hls/%2e%2e/%2e%2e/etc/passwd",
    "/hls/demo-aac/index.m3u8.tmp", "/hls/no-such-station/index.m3u8", "/hls/demo-aac/notes.txt",
    "/nginx.conf", "/hls/Demo-AAC/index.m3u8",
    # The status page is served at /, but nothing else of its directory or of the status files.
    "/index.html", "/health.json", "/healthy.json", "/metrics.prom", "/stations.json", "/hls-status-unhealthy",
    "/hls/demo-aac/.launch.json", "/hls/no-such-station/now-playing.json", "/status.js.map", "/hls.min.js.map",
    # hls-playlists' directory: its playlists only as /hls/<slug>/index.m3u8, its state files never.
    "/hls/_playlists/", "/hls/_playlists/demo-aac.m3u8", "/hls/_playlists/demo-aac.json", "/hls/demo-aac.m3u8",
    "/hls/demo-aac/demo-aac.m3u8", "/hls/demo-aac/demo-aac.json", "/hls/demo-aac/index.json",
    # /health* serve hls-status's reports through their own locations only.
    "/hls-status-report/host.json", "/report/host.json", "/ok/host.json", "/health/stations/no-such-station",
    "/health/stations/Demo-AAC", "/health/stations/demo-aac/", "/health/stations/../host", "/health/nope",
])
def test_nothing_else_is_served(host, path):
    status, _, body = http(host, path, "--path-as-is")
    assert status in (400, 404), (path, status)
    assert "root:" not in body and "Index of" not in body


def test_the_playlist_is_the_one_hls_playlists_writes(host):
    station_ready(host, "demo-aac")
    # It is rewritten once per segment: read both until they were read between two rewrites.
    wait_for(lambda: http(host, "/hls/demo-aac/index.m3u8")[2]
             == host.file(f"{PLAYLIST_DIR}/demo-aac.m3u8").content_string, what="the same playlist in both")


def test_no_other_file_of_the_output_is_served(host):
    # Whatever the launcher, FFmpeg and hls-playlists keep next to the segments (segment lists, run and state files,
    # playlists, the segment FFmpeg is writing under its own name), under each name they have now: 404 through the
    # station's path and through _playlists/. Only published segments (<slot>.ts) are served.
    station_ready(host, "demo-aac")
    names = host.check_output(f"find {OUTPUT}/demo-aac {PLAYLIST_DIR} -maxdepth 1 -type f -printf '%f\\n'").split()
    hidden = sorted({name for name in names if not re.fullmatch(r"[0-9]+\.ts", name) and name != "now-playing.json"})
    assert any(name.endswith(".m3u8") for name in hidden) and any(name.endswith(".json") for name in hidden), names
    assert any(re.fullmatch(r"[0-9]+-[0-9]+\.ts", name) for name in hidden), names  # FFmpeg's, unfinished
    paths = {f"/hls/demo-aac/{name}" for name in hidden} | {f"/hls/_playlists/{name}" for name in hidden}
    served = [(path, status) for path in sorted(paths - {"/hls/demo-aac/index.m3u8"})  # the one playlist
              if (status := http(host, path, "-o", "/dev/null")[0]) not in (400, 404)]
    assert not served, served


def test_session_log_line(host, segment):
    marker = f"sess-{uuid.uuid4().hex}"  # one per run: a host tested before holds the lines of earlier runs
    http(host, f"/hls/demo-aac/{segment}?s={marker}&ref=molecule", "-o", "/dev/null",
         "-A", "TestPlayer/1.0", "-H", "X-Forwarded-For: 203.0.113.9", "-H", "Referer: https://app.example/")
    line = session_log(host, marker)[-1]
    fields = line.split("\t")
    assert len(fields) == LOG_FIELDS
    assert fields[1].count(".") == 1 and len(fields[1].split(".")[1]) == 3  # msec: milliseconds
    assert fields[2:5] == ["demo-aac", marker, "molecule"]
    assert fields[7] == "203.0.113.9"
    assert fields[9:12] == ["GET", f"/hls/demo-aac/{segment}", "200"]
    assert int(fields[12]) > 0
    assert fields[14:16] == ["TestPlayer/1.0", "https://app.example/"]


def test_a_hostile_session_id_cannot_break_the_log(host):
    hostile = '"evil\\' + "x" * 3000 + "%09%0A"
    http(host, f"/hls/demo-aac/index.m3u8?s={hostile}&ref=%09tab", "-o", "/dev/null", "-A", 'quote"tab\tua')
    lines = session_log(host, "evil")
    assert lines, "the request was not logged"
    assert all(len(entry.split("\t")) == LOG_FIELDS for entry in lines)
    assert '\\"' in lines[-1]  # the quote from the user agent arrived escaped
