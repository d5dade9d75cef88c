"""Tests of radio_hls/playlists/multivariant.py: CODECS from real segments (FFmpeg makes them), bit rates, text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from radio_hls.playlists import multivariant
from radio_hls.playlists.multivariant import (
    Rendition,
    codecs_from_profile,
    measure,
    multivariant_text,
    probe_codecs,
)


def encode(path: Path, *codec: str) -> Path:
    """Two seconds of a tone in MPEG-TS, as the segment muxer writes a segment."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=44100:duration=2", *codec, "-f", "mpegts", str(path)], check=True)
    return path


def test_an_aac_lc_segment_is_mp4a_40_2(tmp_path: Path) -> None:
    segment = encode(tmp_path / "1-0.ts", "-c:a", "aac", "-profile:a", "aac_low", "-b:a", "48k")
    assert probe_codecs(segment) == "mp4a.40.2"


def test_a_segment_that_is_not_aac_has_no_codecs(tmp_path: Path) -> None:
    assert probe_codecs(encode(tmp_path / "1-0.ts", "-c:a", "mp2")) is None


@pytest.mark.parametrize("content", [None, b"", b"not a transport stream" * 100])
def test_a_missing_or_broken_segment_has_no_codecs(tmp_path: Path, content: bytes | None) -> None:
    segment = tmp_path / "1-0.ts"
    if content is not None:
        segment.write_bytes(content)
    assert probe_codecs(segment) is None


def test_a_probe_that_hangs_is_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: object, **kwargs: object) -> None:
        assert kwargs.get("timeout") == multivariant.PROBE_TIMEOUT_SECONDS
        raise subprocess.TimeoutExpired("ffprobe", multivariant.PROBE_TIMEOUT_SECONDS)

    monkeypatch.setattr(multivariant.subprocess, "run", hang)
    assert probe_codecs(tmp_path / "1-0.ts") is None


def test_without_ffprobe_there_are_no_codecs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    segment = encode(tmp_path / "1-0.ts", "-c:a", "aac")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert probe_codecs(segment) is None


@pytest.mark.parametrize(("profile", "codecs"), [
    ("LC", "mp4a.40.2"),
    # Debian's FFmpeg cannot encode HE-AAC: the names ffprobe gives an upstream copied as it is.
    ("HE-AAC", "mp4a.40.5"),
    ("HE-AACv2", "mp4a.40.29"),
    ("Main", None),
    ("unknown", None),
    ("", None),
])
def test_codecs_from_profile(profile: str, codecs: str | None) -> None:
    assert codecs_from_profile(profile) == codecs


def test_measure_gives_the_peak_and_the_average_rounded_up() -> None:
    # 6000 bytes in 6 s: 8000 bit/s; 9001 bytes in 6 s: 12001.33 -> 12002; all: 120008 bits in 12 s -> 10000.67.
    assert measure([(6000, 6.0), (9001, 6.0)]) == (12002, 10001)


def test_a_short_segment_can_be_the_peak() -> None:
    # The last segment of a run is short: its rate, not its size, is what counts.
    assert measure([(36000, 6.0), (9000, 1.0)]) == (72000, 51429)


def test_measure_leaves_out_segments_without_a_duration() -> None:
    assert measure([(6000, 6.0), (100, 0.0)]) == (8000, 8000)
    assert measure([]) == (0, 0)


def test_the_multivariant_playlist_lists_the_main_rendition_first() -> None:
    text = multivariant_text([Rendition("index.m3u8", "mp4a.40.2", 140001, 131000),
                              Rendition("low/index.m3u8", "mp4a.40.2", 60000, 52000)])
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=140001,AVERAGE-BANDWIDTH=131000,CODECS="mp4a.40.2"\n'
        "index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=60000,AVERAGE-BANDWIDTH=52000,CODECS="mp4a.40.2"\n'
        "low/index.m3u8\n")
