"""Tests of the titles in the stream: which segment carries which title (radio_hls/playlists/titles.py), the
EXT-X-DATERANGE tags of the playlist (model.py), and hls-playlists tagging each segment before it lists it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_playlists import NOW, FakeStation, T, playlist_of, writer

from radio_hls.playlists import timed_id3
from radio_hls.playlists.model import MediaPlaylist, Title
from radio_hls.playlists.titles import TitleTrack


def announce(path: Path, title: str | None, changed_at: float) -> None:
    """What hls-nowplaying writes when the title changes."""
    path.write_text(json.dumps({"station": "joy", "title": title, "changed_at": changed_at}))
    os.utime(path, (changed_at, changed_at))


def test_a_change_goes_where_it_happened_in_the_audio(tmp_path: Path) -> None:
    path = tmp_path / "now-playing.json"
    track = TitleTrack(path)
    announce(path, "Artist - First", NOW + 1.5)
    track.poll(lead=4.0)  # the run is 4 s ahead of the clock: the change is at NOW + 5.5 on its timeline
    first = track.segment(NOW, NOW + T)
    assert first.titles == (Title(NOW + 5.5, "Artist - First"),)
    assert first.tags == ((NOW + 5.5, "Artist - First"),)  # nothing was playing before it
    # Every later segment repeats it at its start; the file rewritten with the same title is no change.
    announce(path, "Artist - First", NOW + 7)
    track.poll(lead=4.0)
    second = track.segment(NOW + T, NOW + 2 * T)
    assert (second.titles, second.tags) == ((), ((NOW + T, "Artist - First"),))
    # A change inside a segment: the old title at its start, the new one where it began.
    announce(path, "Solo", NOW + 15)
    track.poll(lead=0.0)
    third = track.segment(NOW + 2 * T, NOW + 3 * T)
    assert third.titles == (Title(NOW + 15, "Solo"),)
    assert third.tags == ((NOW + 2 * T, "Artist - First"), (NOW + 15, "Solo"))


def test_a_change_learned_late_begins_the_next_segment(tmp_path: Path) -> None:
    path = tmp_path / "now-playing.json"
    track = TitleTrack(path, current=Title(NOW - 100, "Old"))
    announce(path, "New", NOW + 2)  # inside a segment listed already
    track.poll(lead=0.0)
    tagging = track.segment(NOW + T, NOW + 2 * T)
    assert tagging.titles == (Title(NOW + T, "New"),)
    assert tagging.tags == ((NOW + T, "New"),)


def test_a_change_after_the_segment_waits_for_its_own(tmp_path: Path) -> None:
    path = tmp_path / "now-playing.json"
    track = TitleTrack(path, current=Title(NOW - 100, "Old"))
    announce(path, "New", NOW + T + 1)
    track.poll(lead=0.0)
    assert track.segment(NOW, NOW + T).tags == ((NOW, "Old"),)
    assert track.segment(NOW + T, NOW + 2 * T).tags == ((NOW + T, "Old"), (NOW + T + 1, "New"))


def test_an_empty_title_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "now-playing.json"
    track = TitleTrack(path, current=Title(NOW - 100, "Old"))
    announce(path, None, NOW - 1)  # the upstream's source reconnected: an empty StreamTitle
    track.poll(lead=0.0)
    assert track.segment(NOW, NOW + T).tags == ((NOW, "Old"),)
    # A station that never had a title carries none; a missing or broken file changes nothing.
    fresh = TitleTrack(tmp_path / "other.json")
    path.write_text("{not json")
    fresh.poll(lead=0.0)
    assert fresh.segment(NOW + T, NOW + 2 * T).tags == ()


# --- EXT-X-DATERANGE -----------------------------------------------------------------------------------

def test_a_title_is_a_daterange_before_its_segment() -> None:
    playlist = MediaPlaylist(T, 100)
    playlist.append("0.ts", 1, 0, NOW, T)
    playlist.append("1.ts", 1, 1, NOW + T, T, (Title(NOW + 8.25, 'Grupul "Eldad" - Isus e Domnul, ăîșțâ'),))
    lines = playlist.text().splitlines()
    daterange = lines.index("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z") - 1
    assert lines[daterange] == (
        '#EXT-X-DATERANGE:ID="title-1700000008250",CLASS="net.radio-hls.title",'
        'START-DATE="2023-11-14T22:13:28.250Z",END-ON-NEXT=YES,'
        "X-TITLE=\"Grupul 'Eldad' - Isus e Domnul, ăîșțâ\",X-ARTIST=\"Grupul 'Eldad'\",X-SONG=\"Isus e Domnul, ăîșțâ\"")
    assert "X-ARTIST" not in Title(NOW, "Just a title").line


def test_the_title_in_effect_stays_when_its_segment_leaves() -> None:
    def playlist_with(later: tuple[Title, ...]) -> MediaPlaylist:
        playlist = MediaPlaylist(T, 100)
        playlist.append("0.ts", 1, 0, NOW, T, (Title(NOW + 1, "First"),))
        for index in range(1, 5):
            playlist.append(f"{index}.ts", 1, index, NOW + index * T, T, later if index == 2 else ())
        playlist.trim(3 * T)  # 1-2, 1-3 and 1-4 stay
        return playlist

    text = playlist_with(()).text()
    assert text.count("#EXT-X-DATERANGE") == 1 and 'X-TITLE="First"' in text
    assert text.index("#EXT-X-DATERANGE") < text.index("#EXT-X-PROGRAM-DATE-TIME")
    # Read back (hls-playlists restarting), the playlist is the same.
    again = MediaPlaylist.from_text(text)
    assert again is not None and again.text() == text and again.head_title == Title(NOW + 1, "First")
    # A title that begins the first segment replaces it; one that begins later does not.
    replaced = playlist_with((Title(NOW + 2 * T, "Second"),)).text()
    assert replaced.count("#EXT-X-DATERANGE") == 1 and 'X-TITLE="Second"' in replaced
    assert playlist_with((Title(NOW + 2 * T + 1, "Second"),)).text().count("#EXT-X-DATERANGE") == 2


# --- hls-playlists ---------------------------------------------------------------------------------------

def test_the_writer_tags_each_segment_before_listing_it(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tagged: list[tuple[str, list[float], bool]] = []

    def record(path: Path, tags: list[tuple[float, bytes]], continuity: int) -> int:
        playlist = root / "_playlists" / "joy.m3u8"
        listed = playlist.exists() and path.name in playlist.read_text()
        tagged.append((path.name, [at for at, _ in tags], listed))
        return continuity + len(tags)

    monkeypatch.setattr(timed_id3, "tag_segment", record)
    station = FakeStation(root)
    run = station.start(NOW)
    announce(station.directory / "now-playing.json", "Artist - Song", NOW + 3)
    hls = writer(root)
    hls.tick(NOW + 3.2)
    station.finish_segments(2)
    hls.tick(NOW + 2 * T + 0.3)
    first, second = playlist_of(root).segments
    assert first.titles == (Title(NOW + 3, "Artist - Song"),) and second.titles == ()
    assert tagged == [(f"{run.run}-0.ts", [NOW + 3], False), (f"{run.run}-1.ts", [second.start], False)]
    assert hls.stations["joy"].main.id3_continuity == 2


def test_a_segment_that_cannot_be_tagged_is_still_listed(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    station = FakeStation(root)  # its segments are not MPEG-TS
    station.start(NOW)
    announce(station.directory / "now-playing.json", "Artist - Song", NOW)
    hls = writer(root)
    station.finish_segments(1)
    hls.tick(NOW + T + 0.3)
    assert len(playlist_of(root).segments) == 1
    assert "listed without its title" in caplog.text
