"""Every path an operator can set, moved (molecule.yml): /health, /metrics and the station still work."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TypeVar

# The non-default paths of molecule.yml.
INSTALL_DIR = "/opt/radio"
CONFIG_DIR = "/etc/radio"
LOG_DIR = "/var/log/radio"
SESSION_LOG = "/var/log/radio-nginx/session.log"
PAGE_DIR = "/srv/radio-www"
TEXTFILE_DIR = "/var/lib/radio-textfile"
OUTPUT_DISK_DIR = "/srv/radio/hls-output"  # hls_output_storage disk
SLUG = "paths-aac"
NGINX = "http://127.0.0.1"
T = TypeVar("T")


def until(probe: Callable[[], T], what: str, timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(1)
    return result


def get(host, path: str, into: str = "-") -> tuple[int, str]:
    """Status and text body of a GET through nginx, from inside the host; a binary body goes `into` a file."""
    out = host.check_output(f"curl -sS -o {into} -w '\\n%{{http_code}}' '{NGINX}{path}'")
    body, _, status = out.rpartition("\n")
    return int(status), body


def metric(host, sample: str) -> float | None:
    """The value of one sample of /metrics, e.g. hls_station_up{station="x"}; None when it is missing."""
    status, body = get(host, "/metrics")
    found = re.search(rf"^{re.escape(sample)} (\S+)$", body, re.MULTILINE) if status == 200 else None
    return float(found.group(1)) if found else None


def media_sequence(host) -> int | None:
    status, body = get(host, f"/hls/{SLUG}/index.m3u8")
    found = re.search(r"^#EXT-X-MEDIA-SEQUENCE:(\d+)$", body, re.MULTILINE) if status == 200 else None
    return int(found.group(1)) if found else None


def test_the_files_are_where_the_variables_say(host):
    for path in (f"{INSTALL_DIR}/venv/bin/python", f"{CONFIG_DIR}/sync.env", f"{CONFIG_DIR}/status.env",
                 f"{CONFIG_DIR}/stations/{SLUG}.env", f"{PAGE_DIR}/index.html", f"{PAGE_DIR}/hls.min.js"):
        assert host.file(path).exists, path
    for default in ("/opt/hls", "/etc/hls", "/var/log/hls", "/var/www/hls-status", "/var/log/nginx/hls-access.log"):
        assert not host.file(default).exists, default
    until(lambda: host.file(f"{LOG_DIR}/{SLUG}.log").exists, "the station's FFmpeg log")
    assert "hls_station_up" in until(lambda: host.file(f"{TEXTFILE_DIR}/hls.prom").exists
                                     and host.file(f"{TEXTFILE_DIR}/hls.prom").content_string, "hls.prom")


def test_health_answers_200(host):
    until(lambda: get(host, "/health")[0] == 200, "/health to answer 200")
    until(lambda: get(host, f"/health/stations/{SLUG}")[0] == 200, f"/health/stations/{SLUG} to answer 200")


def test_metrics_show_the_station_up(host):
    until(lambda: metric(host, f'hls_station_up{{station="{SLUG}"}}') == 1, "the station up in /metrics")
    assert metric(host, f'hls_station_healthy{{station="{SLUG}"}}') == 1


def test_the_playlist_advances(host):
    first = until(lambda: media_sequence(host), "a playlist")
    until(lambda: (media_sequence(host) or 0) > first, "the playlist to advance")


def test_a_segment_decodes(host):
    status, playlist = get(host, f"/hls/{SLUG}/index.m3u8")
    assert status == 200
    segment = [line for line in playlist.splitlines() if line.endswith(".ts")][-1]
    assert get(host, f"/hls/{SLUG}/{segment}", into="/tmp/paths-segment.ts")[0] == 200
    # ffprobe names an MPEG-TS stream once per section it appears in; the title rides along as timed ID3.
    codecs = host.check_output("ffprobe -v error -show_entries stream=codec_name -of csv=p=0 /tmp/paths-segment.ts")
    assert "aac" in codecs.split() and set(codecs.split()) <= {"aac", "timed_id3"}, codecs
    host.check_output("ffmpeg -v error -xerror -i /tmp/paths-segment.ts -f null -")


def test_the_segments_are_on_disk_in_the_moved_directory(host):
    # /run/hls is that directory, bound (findmnt names a bind mount's source as device[path]) and locked down.
    source, options = host.check_output("findmnt --noheadings --output SOURCE,OPTIONS /run/hls").split()
    assert source.endswith(f"[{OUTPUT_DISK_DIR}]"), source
    assert {"nosuid", "nodev", "noexec"} <= set(options.split(",")), options
    status, playlist = get(host, f"/hls/{SLUG}/index.m3u8")
    assert status == 200
    segment = [line for line in playlist.splitlines() if line.endswith(".ts")][-1]
    assert host.file(f"{OUTPUT_DISK_DIR}/{SLUG}/{segment}").size > 0
    assert host.file(f"{OUTPUT_DISK_DIR}/_playlists/{SLUG}.m3u8").exists
    # At boot systemd-tmpfiles empties the stations' directories, as a tmpfs would be, and keeps _playlists (the
    # sequences a station's next playlist continues from). Its rule, applied to a copy of such a tree:
    host.check_output("rm -rf /tmp/boot && mkdir -p /tmp/boot/demo-aac /tmp/boot/_playlists"
                      " && touch /tmp/boot/demo-aac/1-0.ts /tmp/boot/_playlists/demo-aac.json"
                      " && sed 's|/run/hls|/tmp/boot|g' /etc/tmpfiles.d/hls-output.conf > /tmp/boot.conf"
                      " && systemd-tmpfiles --create --remove /tmp/boot.conf")
    assert host.check_output("cd /tmp/boot && find . | sort").split() == [".", "./_playlists",
                                                                          "./_playlists/demo-aac.json"]
    assert not host.file("/var/lib/hls/output").exists  # the default directory was never made


def test_the_analytics_read_the_moved_session_log(host):
    """nginx writes the session log where hls_common_access_log says and the analytics find it there, fields in
    the order of the contract: a listener shows in /metrics."""
    status, playlist = get(host, f"/hls/{SLUG}/index.m3u8?s=paths-listener-1")
    assert status == 200
    segment = [line for line in playlist.splitlines() if ".ts" in line][-1]
    assert get(host, f"/hls/{SLUG}/{segment}", into="/dev/null")[0] == 200
    assert until(lambda: "paths-listener-1" in host.file(SESSION_LOG).content_string, "the session log line")
    until(lambda: (metric(host, f'hls_station_listeners{{station="{SLUG}"}}') or 0) >= 1, "a listener in /metrics")


def test_a_stopped_station_leaves_nothing_on_the_disk(host):
    """systemd removes a stopped unit's runtime directory from a tmpfs only: on a disk output hls@.service marks the
    stop and hls-playlists empties the directory once the station stayed stopped (the directory itself stays: its
    parent is root's); a start brings the station back."""
    host.check_output(f"systemctl stop hls@{SLUG}")
    try:
        until(lambda: host.check_output(f"ls -A {OUTPUT_DISK_DIR}/{SLUG}") == "", "the station's files to go",
              timeout=60)
        assert get(host, f"/hls/{SLUG}/index.m3u8")[0] == 404
        assert not host.file(f"{OUTPUT_DISK_DIR}/_playlists/{SLUG}.m3u8").exists
        assert host.file(f"{OUTPUT_DISK_DIR}/_playlists/{SLUG}.json").exists  # the sequences, for its next playlist
    finally:
        host.check_output(f"systemctl start hls@{SLUG}")
    until(lambda: get(host, f"/hls/{SLUG}/index.m3u8")[0] == 200, "the station to serve again")
