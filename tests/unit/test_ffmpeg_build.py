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


def patches(tmp_path: Path, *texts: str) -> str:
    """A directory of patches for build.sh, empty unless given some."""
    directory = tmp_path / "patches"
    directory.mkdir()
    for index, text in enumerate(texts):
        (directory / f"{index:02d}.patch").write_text(text)
    return str(directory)


def test_without_its_arguments_it_says_how_to_call_it() -> None:
    result = build("5.1.9-0+deb12u1")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: ")


def test_patches_that_are_not_a_directory_are_refused_before_any_download(tmp_path: Path) -> None:
    result = build("5.1.9-0+deb12u1", str(tmp_path / "ffmpeg"), "/nonexistent", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert f"{tmp_path / 'missing'} is not a directory of patches" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="apt's download runs as root (as the role runs it)")
def test_a_version_the_mirrors_do_not_carry_fails_with_what_to_do_and_leaves_nothing(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text("deb-src http://deb.debian.org/debian bookworm main\n")
    output = tmp_path / "build" / "ffmpeg"
    before = work_dirs()
    result = build("7:5.1.0-0+never1", str(output), str(sources), patches(tmp_path), "--disable-everything")
    assert result.returncode == 1, result.stderr
    assert "ffmpeg 7:5.1.0-0+never1 is not on the mirrors" in " ".join(result.stderr.split())
    assert "upgrade the host's ffmpeg package" in result.stderr
    assert not output.exists()
    assert work_dirs() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="apt's download runs as root (as the role runs it)")
def test_a_mirror_it_cannot_reach_is_named_as_the_cause(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list"
    sources.write_text("deb-src http://127.0.0.1:9/debian bookworm main\n")  # the discard port: refused at once
    result = build("7:5.1.9-0+deb12u1", str(tmp_path / "ffmpeg"), str(sources), patches(tmp_path),
                   "--disable-everything")
    assert result.returncode == 1
    assert f"cannot read the source repositories in {sources}" in result.stderr
    assert "not on the mirrors" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="apt's download runs as root (as the role runs it)")
def test_a_patch_that_does_not_apply_is_named_and_nothing_is_built(tmp_path: Path) -> None:
    """Debian's next FFmpeg may move what a project patch changes: the build stops and says which patch."""
    sources = tmp_path / "sources.list"
    sources.write_text("deb-src http://deb.debian.org/debian bookworm main\n"  # as hls_ffmpeg_source_repositories
                       "deb-src http://deb.debian.org/debian bookworm-updates main\n"
                       "deb-src http://deb.debian.org/debian-security bookworm-security main\n")
    version = subprocess.run(["apt-cache", "show", "--no-all-versions", "ffmpeg"], capture_output=True, text=True,
                             check=True).stdout.split("Version: ", 1)[1].split()[0]
    stale = ("--- a/libavformat/http.c\n+++ b/libavformat/http.c\n@@ -1,1 +1,1 @@\n-no such line in http.c\n"
             "+a line\n")
    directory = patches(tmp_path, stale)
    output = tmp_path / "build" / "ffmpeg"
    before = work_dirs()
    result = build(version, str(output), str(sources), directory, "--disable-everything")
    assert result.returncode == 1, result.stderr
    assert f"{directory}/00.patch does not apply to Debian's ffmpeg {version}" in result.stderr
    assert not output.exists()
    assert work_dirs() == before
