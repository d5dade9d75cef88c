"""hls-watchdog's decisions: which running stations count as stuck."""

from __future__ import annotations

import os
from pathlib import Path

from hls_watchdog import RunningStation, parse_show, stalled

SHOW = """Id=hls@fresh.service
SubState=running
ExecMainStartTimestampMonotonic=1000000000

Id=hls@waiting.service
SubState=auto-restart
ExecMainStartTimestampMonotonic=0

Id=hls@stuck.service
SubState=running
ExecMainStartTimestampMonotonic=2000000000

Id=nginx.service
SubState=running
ExecMainStartTimestampMonotonic=5
"""


def test_parse_show_keeps_running_hls_units_only() -> None:
    assert parse_show(SHOW) == [RunningStation("fresh", 1000.0), RunningStation("stuck", 2000.0)]


def playlist(root: Path, slug: str, mtime: float) -> None:
    (root / slug).mkdir()
    (root / slug / "index.m3u8").write_text("#EXTM3U\n")
    os.utime(root / slug / "index.m3u8", (mtime, mtime))


def test_stalled_compares_playlist_age_and_run_time(tmp_path: Path) -> None:
    now_wall, now_mono = 100_000.0, 5_000.0
    playlist(tmp_path, "fresh", now_wall - 5)
    playlist(tmp_path, "stuck", now_wall - 300)
    playlist(tmp_path, "restarted", now_wall - 300)  # an old playlist, but FFmpeg started 10 s ago
    stations = [RunningStation("fresh", 0.0), RunningStation("stuck", 0.0),
                RunningStation("restarted", now_mono - 10), RunningStation("no-playlist-yet", now_mono - 30),
                RunningStation("no-playlist-ever", now_mono - 500)]
    assert stalled(stations, tmp_path, 120, now_wall, now_mono) == ["stuck", "no-playlist-ever"]
