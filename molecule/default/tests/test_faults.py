"""Faults a station must survive by itself: crashes, a dead or silent upstream, a codec change."""

from __future__ import annotations

import contextlib
import re
import shlex
import time
from collections.abc import Iterator

import pytest
from conftest import STATIONS, main_pid, playlist, run_sync, segment_of_a_new_run, station_ready, wait_for

FEED_ENV = "/etc/hls-demo/demo-mp3.env"


def never_failed_while(host, slug: str, seconds: float) -> None:
    """Watch the unit for `seconds`: it may restart, it must never rest in `failed`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = host.check_output(f"systemctl show -p ActiveState --value hls@{slug}")
        assert state != "failed", f"hls@{slug} ended in failed"
        time.sleep(1)


def ffmpeg_argv(host, slug: str) -> str:
    """The station's FFmpeg command line, NUL-separated; empty while it is not running."""
    return host.run(f"cat /proc/{main_pid(host, slug)}/cmdline").stdout


def fresh_segment_after(host, slug: str, known: set[str], timeout: float = 90):
    return wait_for(lambda: (p := playlist(host, slug)) and p.segments[-1] not in known and p,
                    timeout=timeout, what=f"a fresh {slug} segment")


@contextlib.contextmanager
def station_on_a_fake_upstream(host, backend, server: str, port: int, slug: str, station_id: int) -> Iterator[None]:
    """While inside: `server` (Python source serving 127.0.0.1:`port`) runs as a transient unit and the backend
    lists station `slug` streaming from it, synced."""
    unit = f"hls-test-{slug}"
    host.check_output(f"systemd-run --unit {unit} python3 -c {shlex.quote(server)}")
    try:
        station = {"id": station_id, "slug": slug, "title": slug, "stream_url": f"http://127.0.0.1:{port}/live",
                   "generate_hls_stream": True, "disabled": False}
        backend(stations=[*STATIONS, station])
        assert run_sync(host).rc == 0
        yield
    finally:
        host.run(f"systemctl stop {unit}")


@pytest.mark.parametrize("signal", ["ABRT", "SEGV"])
def test_a_crash_is_restarted_and_the_playlist_continues(host, signal):
    slug = "demo-aac"
    before = station_ready(host, slug)
    old_pid = main_pid(host, slug)
    host.check_output(f"kill -{signal} {old_pid}")
    wait_for(lambda: main_pid(host, slug) not in (0, old_pid), what="a new FFmpeg")
    after = segment_of_a_new_run(host, slug, before)
    assert after.discontinuities
    assert set(before.numbered().items()) & set(after.numbered().items()), "the kept segments were renumbered"


def log_since(host, path: str, offset: int) -> str:
    """What was appended to `path` after it was `offset` bytes long."""
    return host.check_output(f"tail -c +{offset + 1} {shlex.quote(path)}")


def test_an_upstream_that_goes_away_is_retried_with_backoff_and_recovers(host):
    slug = "demo-mp3"
    log_path = f"/var/log/hls/{slug}.log"
    station_ready(host, slug)
    offset = host.file(log_path).size
    host.check_output("systemctl stop hls-demo-feed@demo-mp3")  # Icecast now answers 404 for the mount

    def waits() -> list[int]:
        state = host.check_output(f"systemctl show -p ActiveState --value hls@{slug}")
        assert state != "failed", f"hls@{slug} ended in failed"
        text = log_since(host, log_path, offset)
        return [int(n) for n in re.findall(r"the last start failed; waiting (\d+) s", text)]

    try:
        # molecule sets hls_restart_max_seconds to 8: the waits of this outage grow 1, 2, 4, 8, then stay at 8.
        seen = wait_for(lambda: (w := waits()) and len(w) >= 5 and w, timeout=120, interval=1,
                        what="five failed starts of this outage")
        assert seen[:5] == [1, 2, 4, 8, 8], seen
    finally:
        host.check_output("systemctl start hls-demo-feed@demo-mp3")
    known = set(playlist(host, slug).segments) if playlist(host, slug) else set()
    fresh_segment_after(host, slug, known)
    assert host.service(f"hls@{slug}").is_running


def test_an_upstream_answering_500_never_fails_the_unit(host, backend):
    # A one-line HTTP server that answers 500 to everything, as a broken stream host would.
    server = ("import http.server as h\n"
              "class H(h.BaseHTTPRequestHandler):\n"
              "    def do_GET(self): self.send_error(500)\n"
              "h.HTTPServer(('127.0.0.1', 8002), H).serve_forever()\n")
    with station_on_a_fake_upstream(host, backend, server, 8002, "broken-upstream", station_id=9):
        never_failed_while(host, "broken-upstream", 12)
        assert "cannot probe" in host.file("/var/log/hls/broken-upstream.log").content_string
        assert playlist(host, "broken-upstream") is None


def test_a_silent_upstream_ends_ffmpeg_and_the_station_restarts(host, backend):
    # Accepts the connection, sends one burst of audio, then nothing: FFmpeg must not hang on it.
    server = ("import socket, subprocess, threading, time\n"
              "seed = subprocess.run(['ffmpeg', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=d=4',"
              " '-c:a', 'aac', '-f', 'adts', '-'], capture_output=True).stdout\n"
              "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              "s.bind(('127.0.0.1', 8003)); s.listen(8)\n"
              "def serve(c):\n"
              "    c.recv(4096); c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Type: audio/aac\\r\\n\\r\\n' + seed)\n"
              "    time.sleep(3600)\n"
              "while True:\n"
              "    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()\n")
    with station_on_a_fake_upstream(host, backend, server, 8003, "silent-upstream", station_id=10):
        first = wait_for(lambda: main_pid(host, "silent-upstream"), what="the silent station to start")
        # molecule's read timeout is the default 15 s; FFmpeg must give up and be replaced.
        wait_for(lambda: main_pid(host, "silent-upstream") not in (0, first),
                 what="FFmpeg to give up on the silent upstream")
        assert "timed out" in host.file("/var/log/hls/silent-upstream.log").content_string


def test_an_upstream_that_switches_from_mp3_to_aac_is_copied_after_the_switch(host):
    slug = "demo-mp3"
    station_ready(host, slug)
    original = host.file(FEED_ENV).content_string
    switched = (original.replace("ENCODER=libmp3lame", "ENCODER=aac").replace("FORMAT=mp3", "FORMAT=adts")
                .replace("CONTENT_TYPE=audio/mpeg", "CONTENT_TYPE=audio/aac"))
    try:
        host.check_output(f"printf %s {shlex.quote(switched)} > {FEED_ENV}")
        host.check_output("systemctl restart hls-demo-feed@demo-mp3")
        # The source restart ends the listener connection: FFmpeg exits; its next start, held to MP3 (facts.py),
        # fails on the AAC upstream, and the start after a failed one probes again.
        wait_for(lambda: "-c:a\0copy" in ffmpeg_argv(host, slug), what="demo-mp3 to run in copy mode")
        assert "codec aac (probed), mode copy" in host.file(f"/var/log/hls/{slug}.log").content_string
    finally:
        host.check_output(f"printf %s {shlex.quote(original)} > {FEED_ENV}")
        host.check_output("systemctl restart hls-demo-feed@demo-mp3")
    wait_for(lambda: "-c:a\0aac" in ffmpeg_argv(host, slug), what="demo-mp3 back in transcode mode")


def test_a_full_output_filesystem_stops_nothing_for_good(host):
    slug = "demo-aac"
    station_ready(host, slug)
    # Fill the stations' tmpfs: segments can no longer be written.
    filled = host.run("dd if=/dev/zero of=/run/hls/filler bs=1M")
    try:
        assert "No space left on device" in filled.stderr  # (FFmpeg may free a few KB right after)
        never_failed_while(host, slug, 10)
    finally:
        host.check_output("rm -f /run/hls/filler")
    known = set(p.segments) if (p := playlist(host, slug)) else set()
    fresh_segment_after(host, slug, known)


def test_a_full_log_filesystem_does_not_stop_streaming(host):
    slug = "demo-aac"
    host.check_output("mount -t tmpfs -o size=1M,mode=0755 tmpfs /var/log/hls")
    try:
        host.run("dd if=/dev/zero of=/var/log/hls/filler bs=64k 2>/dev/null")
        assert host.check_output("df --output=avail -B1 /var/log/hls | tail -n 1").strip() == "0"
        # Start on the full filesystem: systemd opens the log there, every line the launcher and FFmpeg write fails.
        before = station_ready(host, slug, min_segments=1)
        old_pid = main_pid(host, slug)
        host.check_output(f"systemctl restart hls@{slug}")
        wait_for(lambda: main_pid(host, slug) not in (0, old_pid), what="a new FFmpeg")
        after = segment_of_a_new_run(host, slug, before)
        fresh_segment_after(host, slug, set(after.segments))
        assert host.service(f"hls@{slug}").is_running
        assert host.file(f"/var/log/hls/{slug}.log").size == 0  # it really wrote nothing: the disk stayed full
    finally:
        # Lazy: the FFmpeg still holds its log open there until the restart.
        host.check_output(f"umount -l /var/log/hls && systemctl restart hls@{slug}")
    station_ready(host, slug, min_segments=1)


def test_a_stuck_ffmpeg_is_restarted_by_the_watchdog(host):
    slug = "demo-aac"
    before = station_ready(host, slug)
    stuck = main_pid(host, slug)
    host.check_output(f"kill -STOP {stuck}")  # alive, but writes nothing any more
    try:
        # molecule: hls_stall_seconds 20, hls-watchdog.timer every 5 s.
        wait_for(lambda: main_pid(host, slug) not in (0, stuck), timeout=90, what="the watchdog to restart it")
    finally:
        host.run(f"kill -CONT {stuck}")
    assert "restarting hls@demo-aac" in host.check_output("journalctl -u hls-watchdog --no-pager -o cat")
    after = segment_of_a_new_run(host, slug, before)
    assert after.discontinuities
