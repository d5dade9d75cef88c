"""hls-watchdog's decisions: which running stations count as stuck."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from radio_hls.operations import watchdog as hls_watchdog
from radio_hls.operations.watchdog import RunningStation, parse_show, stalled

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


class FakeSystemctl:
    """Records the watchdog's systemctl calls; the units named in `refuse` answer like a unit being stopped."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.refuse = refuse

    def __call__(self, command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(command)
        if command[-1] in self.refuse:
            return subprocess.CompletedProcess(command, 1, "", f"Transaction for {command[-1]}/restart is destructive")
        return subprocess.CompletedProcess(command, 0, "", "")


def run_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeSystemctl) -> int:
    monkeypatch.setattr(hls_watchdog, "running_stations", lambda: [
        RunningStation("stuck", 0.0), RunningStation("stopping", 0.0), RunningStation("fresh", time.monotonic())])
    monkeypatch.setattr(hls_watchdog.subprocess, "run", fake)
    for slug in ("stuck", "stopping", "fresh"):
        playlist(tmp_path, slug, time.time() - (1 if slug == "fresh" else 300))
    return hls_watchdog.main(["--stall-seconds", "120", "--output-root", str(tmp_path)])


def test_only_a_running_station_is_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `restart` would start a station stopped since `systemctl show` said it ran (or replace a stop under way);
    # try-restart leaves an inactive unit alone and --job-mode=fail refuses to replace a pending stop.
    fake = FakeSystemctl()
    assert run_main(tmp_path, monkeypatch, fake) == 0
    assert fake.calls == [["systemctl", "try-restart", "--no-block", "--job-mode=fail", "hls@stuck.service"],
                          ["systemctl", "try-restart", "--no-block", "--job-mode=fail", "hls@stopping.service"]]


def test_a_refused_restart_is_logged_and_the_others_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeSystemctl(refuse=frozenset({"hls@stopping.service"}))
    assert run_main(tmp_path, monkeypatch, fake) == 0
    assert [call[-1] for call in fake.calls] == ["hls@stuck.service", "hls@stopping.service"]  # both tried
    assert "hls@stopping not restarted: Transaction for hls@stopping.service/restart is destructive" in caplog.text
