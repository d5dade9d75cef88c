"""files/ffmpeg/build.sh, the stations' FFmpeg build (hls_ffmpeg_build): its refusals, which must say what to do
and leave nothing behind. The build itself runs in molecule (tests/test_stations.py), on a real deployment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

BUILD = Path(__file__).resolve().parents[2] / "files" / "ffmpeg" / "build.sh"
WORK_DIRS = Path("/var/tmp")


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(BUILD), *args], capture_output=True, text=True, timeout=600, check=False)


def work_dirs() -> set[Path]:
    return set(WORK_DIRS.glob("hls-ffmpeg-build.*"))


def test_without_its_arguments_it_says_how_to_call_it() -> None:
    result = build("5.1.9-0+deb12u1")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: ")


@pytest.mark.skipif(os.geteuid() != 0, reason="apt's download runs as root (as the role runs it)")
def test_a_version_the_mirrors_do_not_carry_fails_with_what_to_do_and_leaves_nothing(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text("deb-src http://deb.debian.org/debian bookworm main\n")
    output = tmp_path / "build" / "ffmpeg"
    before = work_dirs()
    result = build("7:5.1.0-0+never1", str(output), str(sources), "--disable-everything")
    assert result.returncode == 1, result.stderr
    assert "ffmpeg 7:5.1.0-0+never1 is not on the mirrors" in " ".join(result.stderr.split())
    assert "upgrade the host's ffmpeg package" in result.stderr
    assert not output.exists()
    assert work_dirs() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="apt's download runs as root (as the role runs it)")
def test_a_mirror_it_cannot_reach_is_named_as_the_cause(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text("deb-src http://127.0.0.1:9/debian bookworm main\n")  # the discard port: refused at once
    result = build("7:5.1.9-0+deb12u1", str(tmp_path / "ffmpeg"), str(sources), "--disable-everything")
    assert result.returncode == 1
    assert f"cannot read the source repositories in {sources}" in result.stderr
    assert "not on the mirrors" not in result.stderr
