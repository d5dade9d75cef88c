"""Helpers for the testinfra tests: the GraphQL test backend, playlists through nginx, waiting."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

# The HLS conformance checker (tests/conformance), shared with the unit tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))

BACKEND = "http://127.0.0.1:8001"
NGINX = "http://127.0.0.1"
# The backend token of molecule.yml: a canary that must never show anywhere but in root-only files.
TOKEN = "canary-graphql-token-0d5e"
API_KEY = "molecule-analytics-key"  # hls_analytics_api_key in molecule.yml, a canary as well
STATIONS = [
    {"id": 1, "slug": "demo-mp3", "title": "Demo MP3", "stream_url": "http://127.0.0.1:8000/demo-mp3",
     "generate_hls_stream": True, "disabled": False},
    {"id": 2, "slug": "demo-aac", "title": "Demo AAC", "stream_url": "http://127.0.0.1:8000/demo-aac",
     "generate_hls_stream": True, "disabled": False},
]
SESSION_LOG = "/var/log/nginx/hls-access.log"
LOG_FLUSH_SECONDS = 1
T = TypeVar("T")


def wait_for(probe: Callable[[], T], timeout: float = 90.0, interval: float = 0.5, what: str = "condition") -> T:
    """Poll until probe() returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def set_backend(host, **state) -> None:
    body = shlex.quote(json.dumps(state))
    host.check_output(f"curl -fsS -X PUT -H 'Content-Type: application/json' -d {body} {BACKEND}/admin/state")


def run_sync(host):
    """Run one sync that starts now; the result's rc is the unit's success (0) or failure.

    `systemctl start` on a sync the timer or the watch already started joins that run, which may have read the
    backend before the test changed it: wait for it to end first. A run started after this wait reads the
    backend as the test left it, whoever started it.
    """
    wait_for(lambda: host.check_output("systemctl show -p ActiveState --value hls-sync.service")
             not in ("activating", "deactivating"), what="the running hls-sync to end")
    return host.run("systemctl start hls-sync.service")


def settled(probe: Callable[[], T], what: str, quiet_seconds: float = 3 * LOG_FLUSH_SECONDS) -> T:
    """probe()'s value once it has stayed the same for `quiet_seconds` (nginx flushes each worker's buffered log
    on its own timer, which a busy machine runs late: no single wait is long enough for sure)."""
    value, since = probe(), time.monotonic()
    deadline = since + 90
    while time.monotonic() - since < quiet_seconds:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after 90 s waiting for {what} to settle")
        time.sleep(0.5)
        if (latest := probe()) != value:
            value, since = latest, time.monotonic()
    return value


def session_log(host, marker: str | None = None) -> list[str]:
    """Lines of nginx's session log once written: those containing `marker` (waited for), else every line
    once no more arrive."""
    if marker is None:
        return settled(lambda: host.file(SESSION_LOG).content_string.splitlines(), what="the session log")
    return wait_for(lambda: [line for line in host.file(SESSION_LOG).content_string.splitlines() if marker in line],
                    what=f"a session log line with {marker[:20]!r}")


def sync_log(host, since: str) -> str:
    return host.check_output(f"journalctl -u hls-sync.service --no-pager -o cat --since {shlex.quote(since)}")


def now(host) -> str:
    return host.check_output("date '+%Y-%m-%d %H:%M:%S'")


def main_pid(host, slug: str) -> int:
    return int(host.check_output(f"systemctl show -p MainPID --value hls@{slug}.service"))


def ffmpeg_pid(host, slug: str) -> int:
    """The station's main PID once it is FFmpeg (the launcher, Python, runs first: probing, backing off)."""
    def ffmpeg() -> int:
        pid = main_pid(host, slug)
        return pid if pid and host.run(f"cat /proc/{pid}/comm").stdout.strip() == "ffmpeg" else 0
    return wait_for(ffmpeg, what=f"FFmpeg to be the main process of hls@{slug}")


def http(host, path: str, *curl_args: str):
    """(status, headers, body) of a request through nginx, made inside the host."""
    args = " ".join(shlex.quote(a) for a in curl_args)
    out = host.run(f"curl -sS -D /dev/stderr {args} {shlex.quote(NGINX + path)}")
    status_line, *header_lines = out.stderr.strip().splitlines()
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, out.stdout


@dataclass
class Playlist:
    sequence: int
    segments: list[str]
    discontinuities: list[int]  # indexes into segments that follow an EXT-X-DISCONTINUITY
    text: str

    def numbered(self) -> dict[str, int]:
        """Each listed segment name with its media sequence number."""
        return {name: self.sequence + index for index, name in enumerate(self.segments)}


def parse_playlist(text: str) -> Playlist:
    sequence, segments, discontinuities = -1, [], []
    pending_discontinuity = False
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            pending_discontinuity = True
        elif line and not line.startswith("#"):
            if pending_discontinuity:
                discontinuities.append(len(segments))
                pending_discontinuity = False
            segments.append(line)
    return Playlist(sequence, segments, discontinuities, text)


def new_run_in(before: Playlist, after: Playlist) -> int | None:
    """Where in `after` a run begun since `before` was read starts: the first EXT-X-DISCONTINUITY after the last
    segment `before` listed (a restarted FFmpeg's first segment carries one; the old one's last does not)."""
    last = before.sequence + len(before.segments) - 1
    return next((index for index in after.discontinuities if after.sequence + index > last), None)


def segment_of_a_new_run(host, slug: str, before: Playlist) -> Playlist:
    """The playlist once it lists a segment of an FFmpeg started after `before` was read."""
    return wait_for(lambda: (p := playlist(host, slug)) and new_run_in(before, p) is not None and p,
                    what=f"a segment from the new {slug} FFmpeg")


def playlist(host, slug: str) -> Playlist | None:
    status, _, body = http(host, f"/hls/{slug}/index.m3u8")
    return parse_playlist(body) if status == 200 else None


def station_ready(host, slug: str, min_segments: int = 3) -> Playlist:
    return wait_for(lambda: (p := playlist(host, slug)) and len(p.segments) >= min_segments and p,
                    what=f"{slug} to list {min_segments} segments")


def streaming_ffmpeg_pid(host, slug: str) -> int:
    """The main PID of an FFmpeg that has opened its upstream: it wrote a segment while it was the main process.

    A signal that lands while FFmpeg is still opening its input makes it exit 1 (FFmpeg 5.1), not 255: only a
    streaming FFmpeg shows what a stop does to a running station.
    """
    def attempt() -> int:
        pid = ffmpeg_pid(host, slug)
        before = station_ready(host, slug, min_segments=1).segments[-1]
        wait_for(lambda: (p := playlist(host, slug)) and p.segments and p.segments[-1] != before,
                 what=f"a new {slug} segment")
        return pid if main_pid(host, slug) == pid else 0
    return wait_for(attempt, what=f"a streaming FFmpeg in hls@{slug}")


@pytest.fixture
def backend(host):
    """The test backend serving the two demo stations; put back after the test whatever it changed."""
    normal = {"stations": STATIONS, "fail": None, "fail_count": None, "token": TOKEN,
              "api_key": "molecule-analytics-key", "submit_result": "ok"}
    set_backend(host, **normal)
    yield lambda **state: set_backend(host, **state)
    host.run("systemctl start hls-test-backend.service")
    wait_for(lambda: host.run(f"curl -fsS {BACKEND}/healthz").rc == 0, what="the test backend")
    set_backend(host, **normal)
    assert run_sync(host).rc == 0
    for station in STATIONS:
        station_ready(host, station["slug"], min_segments=1)
