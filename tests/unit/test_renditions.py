"""Tests of hls-playlists with a bitrate ladder: a media playlist per rendition, cut at the same times, and the
multivariant playlist measured from what they list (radio_hls/playlists/writer.py, renditions.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from patience import wait_for
from test_playlists import NOW, FakeStation, T, playlist_of, writer

from radio_hls.playlists import writer as hls_writer
from radio_hls.playlists.writer import Writer
from radio_hls.stations.runs import Run
from radio_hls.stations.variants import Variant

LOW = Variant("low", "48k")


class LadderStation(FakeStation):
    """FakeStation with a `low` rendition: the same segments, cut at the same times, a third of the size."""

    def start(self, at: float, variants: tuple[Variant, ...] = (LOW,)) -> Run:
        run = super().start(at)
        self.run = Run.begin(run.start, run.segment_seconds, run.mode, run.upstream_codec, at, variants=variants)
        self.run.write(self.directory)
        for variant in variants:
            Run.variant_dir(self.directory, variant.name).mkdir(exist_ok=True)
        return self.run

    def finish_segments(self, count: int) -> None:
        super().finish_segments(count)
        assert self.run is not None
        for variant in self.run.variants:
            low = Run.variant_dir(self.directory, variant.name)
            for line in self.lines:
                (low / line.split(",")[0]).write_bytes(b"L" * 188 * 40)
            self.run.list_path(low).write_text("\n".join(self.lines[-50:]) + "\n")
        for line in self.lines:  # the main rendition's segments: 120 packets
            (self.directory / line.split(",")[0]).write_bytes(b"G" * 188 * 120)


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """ffprobe as it answers for AAC-LC segments; the segments it was asked about."""
    asked: list[Path] = []

    def probe(segment: Path) -> str:
        asked.append(segment)
        return "mp4a.40.2"

    monkeypatch.setattr(hls_writer, "probe_codecs", probe)
    return asked


def master_of(root: Path, hls: Writer, at: float) -> str:
    """The multivariant playlist once the probes (another thread) are in."""
    path = root / "_playlists" / "joy.master.m3u8"

    def written() -> bool:
        hls.tick(at)
        return path.exists()

    wait_for(written, what="the multivariant playlist")
    return path.read_text()


def test_each_rendition_has_its_playlist_and_the_master_lists_them(root: Path, probed: list[Path]) -> None:
    station, hls = LadderStation(root), writer(root)
    run = station.start(NOW)
    station.finish_segments(3)
    hls.tick(NOW + 19)
    main, low = playlist_of(root), playlist_of(root, "joy.low")
    names = [f"{run.base // T + i}.ts" for i in range(3)]  # their slots
    assert [s.name for s in main.segments] == [s.name for s in low.segments] == names
    assert [s.start for s in main.segments] == [s.start for s in low.segments]
    master = master_of(root, hls, NOW + 19.5)
    # BANDWIDTH: the peak segment bit rate (the first segment is the shortest); AVERAGE-BANDWIDTH: all bits over
    # all seconds (RFC 8216 4.3.4.2). Main first: players begin with the first.
    first, total = main.segments[0].duration, sum(s.duration for s in main.segments)
    assert master.splitlines() == [
        "#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS",
        f"#EXT-X-STREAM-INF:BANDWIDTH={-(-188 * 120 * 8 // first):.0f},"
        f"AVERAGE-BANDWIDTH={-(-3 * 188 * 120 * 8 // total):.0f},CODECS=\"mp4a.40.2\"", "index.m3u8",
        f"#EXT-X-STREAM-INF:BANDWIDTH={-(-188 * 40 * 8 // first):.0f},"
        f"AVERAGE-BANDWIDTH={-(-3 * 188 * 40 * 8 // total):.0f},CODECS=\"mp4a.40.2\"", "low/index.m3u8"]
    assert sorted(path.parent.name for path in probed) == ["joy", "low"]  # once per run and rendition


def test_no_codec_measured_no_master(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Path] = []
    monkeypatch.setattr(hls_writer, "probe_codecs", lambda segment: asked.append(segment))
    station, hls = LadderStation(root), writer(root)
    station.start(NOW)
    station.finish_segments(1)
    hls.tick(NOW + 7)
    wait_for(lambda: not hls.tick(NOW + 7) and len(asked) == 2 and not hls.stations["joy"].probing,
             what="the first probes, in")
    station.finish_segments(1)
    hls.tick(NOW + 13)
    wait_for(lambda: len(asked) == 4, what="a second probe of each rendition")
    assert not (root / "_playlists" / "joy.master.m3u8").exists()  # never a variant without its CODECS


def test_a_run_without_the_ladder_retires_its_playlist(root: Path, probed: list[Path]) -> None:
    station, hls = LadderStation(root), writer(root)
    station.start(NOW)
    station.finish_segments(2)
    hls.tick(NOW + 13)
    assert (root / "_playlists" / "joy.low.m3u8").exists()
    station.start(NOW + 14, variants=())
    station.finish_segments(1)
    hls.tick(NOW + 21)
    assert not (root / "_playlists" / "joy.low.m3u8").exists()
    assert (root / "_playlists" / "joy.low.json").exists()  # a ladder that comes back continues its sequences
    assert "low/index.m3u8" not in master_of(root, hls, NOW + 21.5)


def test_a_stopped_station_loses_every_playlist(root: Path, probed: list[Path]) -> None:
    station, hls = LadderStation(root), writer(root)
    station.start(NOW)
    station.finish_segments(2)
    master_of(root, hls, NOW + 13)
    shutil.rmtree(station.directory)
    hls.tick(NOW + 13.5)
    assert sorted(path.name for path in (root / "_playlists").glob("*.m3u8")) == []
    # Left by a writer that was away when the station stopped: the next one clears them.
    for name in ("joy.m3u8", "joy.low.m3u8", "joy.master.m3u8"):
        (root / "_playlists" / name).write_text("#EXTM3U\n")
    writer(root).tick(NOW + 20)
    assert sorted(path.name for path in (root / "_playlists").glob("*.m3u8")) == []


def test_titles_go_into_every_rendition(root: Path, probed: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    tagged: list[str] = []
    monkeypatch.setattr(hls_writer.Rendition, "_tag", lambda self, listed, tagging: (
        tagged.append(f"{self.label} {listed.index}") or tagging.titles))
    station, hls = LadderStation(root), writer(root)
    station.start(NOW)
    station.finish_segments(2)
    hls.tick(NOW + 13)
    assert tagged == ["joy 0", "joy 1", "joy/low 0", "joy/low 1"]
    assert len(hls.stations["joy"].taggings) == 2  # decided once per segment


def test_a_restarted_writer_measures_the_segments_it_reads_back(root: Path, probed: list[Path]) -> None:
    station = LadderStation(root)
    station.start(NOW)
    station.finish_segments(3)
    writer(root).tick(NOW + 19)
    (root / "_playlists" / "joy.master.m3u8").unlink(missing_ok=True)
    hls = writer(root)  # restarted: its playlists read back, their segments measured as they are
    station.finish_segments(1)
    master = master_of(root, hls, NOW + 25)
    first = playlist_of(root).segments[0].duration  # the shortest: the peak, listed by the earlier process
    assert f"BANDWIDTH={-(-188 * 120 * 8 // first):.0f}," in master
