"""hls-watchdog's decisions: which running stations count as stuck."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from radio_hls.operations import watchdog as hls_watchdog
from radio_hls.operations.watchdog import RunningStation, parse_show, stalled
from radio_hls.stations.runs import Run

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


def progress(root: Path, slug: str, mtime: float, run_began: float | None = None) -> None:
    """A station whose FFmpeg last finished a segment at `mtime` (its segment list), in a run begun at run_began."""
    run = Run.begin(mtime - 60, 6, "copy", "aac", mtime - 60)
    (root / slug).mkdir()
    run.write(root / slug)
    run.list_path(root / slug).write_text(f"{run.run}-0.ts,0.000000,6.000000\n")
    os.utime(run.list_path(root / slug), (mtime, mtime))
    began = mtime - 60 if run_began is None else run_began
    os.utime(root / slug / ".launch.json", (began, began))


def test_stalled_compares_ffmpegs_progress_and_run_time(tmp_path: Path) -> None:
    now_wall, now_mono = 100_000.0, 5_000.0
    progress(tmp_path, "fresh", now_wall - 5)
    progress(tmp_path, "stuck", now_wall - 300)
    progress(tmp_path, "restarted", now_wall - 300)  # nothing new for long, but FFmpeg started 10 s ago
    progress(tmp_path, "new-run", now_wall - 300, run_began=now_wall - 20)  # a run that has not cut a segment yet
    # The playlist is not FFmpeg's: an old one (hls-playlists stopped) says nothing about the station.
    (tmp_path / "_playlists").mkdir()
    (tmp_path / "_playlists" / "fresh.m3u8").write_text("#EXTM3U\n")
    os.utime(tmp_path / "_playlists" / "fresh.m3u8", (now_wall - 900, now_wall - 900))
    stations = [RunningStation("fresh", 0.0), RunningStation("stuck", 0.0),
                RunningStation("restarted", now_mono - 10), RunningStation("no-playlist-yet", now_mono - 30),
                RunningStation("no-playlist-ever", now_mono - 500), RunningStation("new-run", 0.0)]
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
        progress(tmp_path, slug, time.time() - (1 if slug == "fresh" else 300))
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
