"""Tests of hls-playlists (radio_hls/playlists) and the run files it reads (radio_hls/stations/runs.py): FFmpeg's
segment lists in, RFC 8216 media playlists out, across restarts of FFmpeg and of hls-playlists itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from radio_hls.common import clock
from radio_hls.common.contract import BadSetting
from radio_hls.playlists.model import MediaPlaylist, iso_ms
from radio_hls.playlists.writer import Config, Writer
from radio_hls.stations.runs import Run, last_timeline, parse_list

NOW = 1_700_000_000.0
T = 6


class FakeStation:
    """What the launcher and FFmpeg's segment muxer leave in a station's directory, run by run."""

    def __init__(self, root: Path, slug: str = "joy", frame_after_cut: float = 0.02) -> None:
        self.directory = root / slug
        self.directory.mkdir(parents=True)
        self.run: Run | None = None
        self.lines: list[str] = []
        self.frame_after_cut = frame_after_cut  # where the first audio frame after a boundary falls

    def start(self, at: float) -> Run:
        previous = last_timeline(self.directory)
        self.run = Run.begin(at if previous is None else max(at, previous.end + 0.1), T, "copy", "aac", at)
        self.run.write(self.directory)
        self.lines = []
        return self.run

    def finish_segments(self, count: int) -> None:
        """FFmpeg finishes `count` more segments: each is written, then listed (the list replaced whole)."""
        assert self.run is not None
        for _ in range(count):
            index = len(self.lines)
            start = float(self.lines[-1].split(",")[2]) if self.lines else 0.0
            end = (index + 1) * T + self.frame_after_cut  # the first packet at or after the next multiple of T
            self._finish(start, end)

    def stop_within(self, seconds: float) -> None:
        """FFmpeg stops (SIGTERM) `seconds` into a segment: it finishes that segment there, cut short."""
        start = float(self.lines[-1].split(",")[2]) if self.lines else 0.0
        self._finish(start, start + seconds)

    def _finish(self, start: float, end: float) -> None:
        assert self.run is not None
        index = len(self.lines)
        (self.directory / f"{self.run.run}-{index}.ts").write_bytes(b"G" * 188)
        self.lines.append(f"{self.run.run}-{index}.ts,{start:.6f},{end:.6f}")
        self.run.list_path(self.directory).write_text("\n".join(self.lines[-50:]) + "\n")

    def begin_unfinished(self) -> Path:
        """The segment FFmpeg is writing now: on disk, not listed."""
        assert self.run is not None
        path = self.directory / f"{self.run.run}-{len(self.lines)}.ts"
        path.write_bytes(b"G")
        return path


def writer(root: Path, minutes: int = 1, replicated: bool = False) -> Writer:
    return Writer(Config.from_env({"HLS_OUTPUT_ROOT": str(root), "HLS_WINDOW_MINUTES": str(minutes),
                                   "HLS_STOP_GRACE_SECONDS": "6", "HLS_REPLICATED": str(replicated).lower()}))


def playlist_of(root: Path, slug: str = "joy") -> MediaPlaylist:
    playlist = MediaPlaylist.from_text((root / "_playlists" / f"{slug}.m3u8").read_text())
    assert playlist is not None
    return playlist


# --- the run files ---------------------------------------------------------------------------------------

def test_a_list_gives_program_date_times_and_durations() -> None:
    run = Run.begin(NOW + 3.25, T, "copy", "aac", NOW)  # base NOW - 2 (a multiple of 6), offset 5.25
    text = (f"{run.run}-0.ts,0.000000,6.016256\n{run.run}-1.ts,6.016256,12.007011\n"
            f"{run.run}-2.ts,12.007011,18.0")  # the last line is not whole yet
    first, second = parse_list(text, run)
    # FFmpeg says the first segment starts at 0: its audio starts at the run's offset. A cut (the first frame at or
    # after a boundary) is put on the boundary: the same time on every host that runs the station.
    assert (first.name, first.index, first.start, first.duration) == (f"{run.run}-0.ts", 0, NOW + 3.25, 0.75)
    assert (second.start, second.duration) == (run.base + 6, 6)
    # Published under the interval of Unix time each starts in.
    assert (first.published, second.published) == (f"{int(run.base // T)}.ts", f"{int(run.base // T) + 1}.ts")
    assert first.whole and second.whole


def test_a_segment_cut_short_by_a_stop_is_not_whole() -> None:
    run = Run.begin(NOW + 3.25, T, "copy", "aac", NOW)
    (first, stopped) = parse_list(f"{run.run}-0.ts,0.000000,6.016256\n{run.run}-1.ts,6.016256,9.5\n", run)
    assert first.whole and not stopped.whole and stopped.duration == 3.5


@pytest.mark.parametrize("line", ["1-0.ts,0,6", "{run}-x.ts,0,6", "{run}-1.ts,a,6", "{run}-1.ts,6,6",
                                  "{run}-1.ts,0,6,7", "{run}-1.mp4,0,6", "{run}-١.ts,0,6"])
def test_lines_that_are_not_this_runs_segments_are_left(line: str) -> None:
    run = Run.begin(NOW, T, "copy", "aac", NOW)
    assert parse_list(line.format(run=run.run) + "\n", run) == []


def test_timestamps_sit_on_the_wall_clock_modulo_33_bits() -> None:
    run = Run.begin(NOW + 0.5, T, "transcode", "mp3", NOW)
    assert run.base % T == 0 and run.offset == pytest.approx(NOW + 0.5 - run.base)
    assert round((run.pts_base + run.offset) * 90000) % 2**33 == round((NOW + 0.5) * 90000) % 2**33


# --- the playlist model ----------------------------------------------------------------------------------

def test_the_playlist_text() -> None:
    playlist = MediaPlaylist(6, 1000)
    playlist.append("1000.ts", 5, 1000, NOW, 5.5)
    playlist.append("1001.ts", 5, 1001, NOW + 5.5, 6.02)
    playlist.append("1002.ts", 9, 1002, NOW + 20, 6.0)  # another run, though the next slot
    assert playlist.text() == (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:1000\n"
        "#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXTINF:5.500,\n1000.ts\n"
        "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:25.500Z\n#EXTINF:6.020,\n1001.ts\n"
        "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:40.000Z\n#EXTINF:6.000,\n1002.ts\n")
    assert MediaPlaylist.from_text(playlist.text()).text() == playlist.text()  # type: ignore[union-attr]


def test_a_gap_inside_a_run_is_a_discontinuity() -> None:
    playlist = MediaPlaylist(6, 1)
    playlist.append("5-0.ts", 5, 0, NOW, 6)
    assert playlist.append("5-2.ts", 5, 2, NOW + 12, 6).discontinuity


def test_trimming_keeps_the_window_and_the_numbers_of_what_stays() -> None:
    playlist = MediaPlaylist(6, 100)
    for index in range(20):
        # A new run at 5 and at 12: segments 5 and 12 carry EXT-X-DISCONTINUITY.
        run, first = (1, 0) if index < 5 else (2, 5) if index < 12 else (3, 12)
        playlist.append(f"{run}-{index - first}.ts", run, index - first, NOW + 6 * index, 6)
    numbers = {s.name: number for number, s in discontinuity_numbers(playlist)}
    removed = playlist.trim(60)
    assert [s.name for s in removed] == ["1-0.ts", "1-1.ts", "1-2.ts", "1-3.ts", "1-4.ts", "2-0.ts", "2-1.ts",
                                         "2-2.ts", "2-3.ts", "2-4.ts"]
    assert playlist.duration == 60 and playlist.media_sequence == 110
    # RFC 8216 6.2.2: the discontinuity sequence counts the tag that left; every remaining segment keeps its number.
    assert playlist.discontinuity_sequence == 1
    assert {s.name: number for number, s in discontinuity_numbers(playlist)}.items() <= numbers.items()


def discontinuity_numbers(playlist: MediaPlaylist) -> list[tuple[int, object]]:
    number, result = playlist.discontinuity_sequence, []
    for segment in playlist.segments:
        number += segment.discontinuity
        result.append((number, segment))
    return result


def test_never_shorter_than_three_target_durations() -> None:
    playlist = MediaPlaylist(6, 1)
    for index in range(10):
        playlist.append(f"1-{index}.ts", 1, index, NOW + 6 * index, 6)
    playlist.trim(1)
    assert len(playlist.segments) == 3


def test_program_date_time_round_trip() -> None:
    assert iso_ms(NOW + 0.0456) == "2023-11-14T22:13:20.046Z"
    assert clock.parse("2023-11-14T22:13:20.046Z") == pytest.approx(NOW + 0.046)


# --- hls-playlists on a real directory tree ---------------------------------------------------------------

def test_segments_are_listed_as_ffmpeg_finishes_them(root: Path) -> None:
    station, hls = FakeStation(root), writer(root)
    station.start(NOW + 0.3)
    hls.tick(NOW + 1)
    assert not (root / "_playlists" / "joy.m3u8").exists()  # nothing to list yet: 404 rather than empty
    station.finish_segments(3)
    hls.tick(NOW + 19)
    playlist = playlist_of(root)
    first_slot = int((NOW + 0.3) // T)
    assert [s.slot for s in playlist.segments] == [first_slot, first_slot + 1, first_slot + 2]
    # Named and numbered after their slots, as on any other origin running the station.
    assert [s.name for s in playlist.segments] == [f"{slot}.ts" for slot in range(first_slot, first_slot + 3)]
    assert all((station.directory / s.name).exists() for s in playlist.segments)
    assert playlist.media_sequence == first_slot and playlist.target == T
    assert playlist.discontinuity_sequence == 0  # hls.js walks it from 0 on every load: it stays small
    assert playlist.segments[0].start == pytest.approx(NOW + 0.3)
    for before, after in zip(playlist.segments, list(playlist.segments)[1:], strict=False):
        assert after.start == pytest.approx(before.end, abs=0.001)


def test_a_restart_continues_the_playlist_with_a_discontinuity(root: Path) -> None:
    station, hls = FakeStation(root), writer(root)
    first = station.start(NOW)
    station.finish_segments(4)
    unfinished = station.begin_unfinished()  # then kill -9
    hls.tick(NOW + 25)
    second = station.start(NOW + 26)
    station.finish_segments(2)
    hls.tick(NOW + 40)
    playlist = playlist_of(root)
    slot, restart = int(NOW // T), int((NOW + 26) // T)
    assert [(s.slot, s.discontinuity) for s in playlist.segments] == [
        (slot, False), (slot + 1, False), (slot + 2, False), (slot + 3, False), (restart, True), (restart + 1, False)]
    assert second.run != first.run
    assert playlist.segments[4].start >= playlist.segments[3].end  # the timeline never goes back
    assert not unfinished.exists()  # never listed: gone at once
    assert not first.list_path(station.directory).exists()


def test_a_segment_cut_short_by_a_stop_leaves_its_slot_to_the_next_run(root: Path) -> None:
    # systemctl restart: FFmpeg finishes the segment it was writing, 2.5 s into its slot. Published, the next run's
    # first segment (same slot, after the stop) would need a second name and number for one slot.
    station, hls = FakeStation(root), writer(root)
    first = station.start(NOW)
    station.finish_segments(3)
    station.stop_within(2.5)
    hls.tick(NOW + 20)
    second = station.start(NOW + 21)
    station.finish_segments(2)
    hls.tick(NOW + 40)
    playlist = playlist_of(root)
    slot = int(NOW // T)
    assert [(s.slot, s.discontinuity) for s in playlist.segments] == [
        (slot, False), (slot + 1, False), (slot + 2, False), (slot + 3, True), (slot + 4, False)]
    assert int(second.start // T) == slot + 3  # the slot the stop cut short
    assert not list(station.directory.glob(f"{first.run}-*.ts"))  # the unpublished one went at once


def test_after_a_gap_the_playlist_starts_again_at_the_slot(root: Path) -> None:
    # A replicated station, an outage longer than the upstream's burst: slots with no segment. Numbered one by one,
    # the later segments would leave their slots (and every other origin's numbers); a playlist cannot list a hole.
    station, hls = FakeStation(root), writer(root, replicated=True)
    station.start(NOW)
    station.finish_segments(7)
    hls.tick(NOW + 45)
    before = playlist_of(root)
    second = station.start(NOW + 80)
    station.finish_segments(5)  # fewer than six segments after the gap: held, the playlist as it was
    hls.tick(NOW + 110)
    assert playlist_of(root).text() == before.text()
    station.finish_segments(1)  # six, over three target durations
    hls.tick(NOW + 115)
    after = playlist_of(root)
    first_slot = int(second.start // T)
    assert after.media_sequence == first_slot
    assert [s.name for s in after.segments] == [f"{first_slot + n}.ts" for n in range(6)]
    assert after.segments[0].discontinuity
    # RFC 8216 6.2.2: what left is counted, so the discontinuity sequence of what stays is what it was.
    assert after.discontinuity_sequence == before.discontinuity_sequence + sum(s.discontinuity for s in before.segments)
    # The segments that left stay downloadable for the usual time, then go.
    hls.tick(NOW + 115 + 60 + 2 * T + 0.1)
    assert not any((station.directory / s.name).exists() for s in before.segments)


def test_a_playlist_whose_segments_are_gone_is_not_continued(root: Path) -> None:
    # A reboot empties the station's directory (systemd-tmpfiles) and keeps _playlists: the playlist read back
    # would list only missing segments and number on from them.
    station = FakeStation(root)
    station.start(NOW)
    station.finish_segments(3)
    writer(root, replicated=True).tick(NOW + 20)
    shutil.rmtree(station.directory)
    station, hls = FakeStation(root), writer(root, replicated=True)  # after the reboot: emptied, a new hls-playlists
    restarted = station.start(NOW + 300)
    station.finish_segments(1)
    hls.tick(NOW + 310)
    assert playlist_of(root).media_sequence == int(restarted.start // T)


def test_origins_publish_the_same_names_numbers_and_dates(tmp_path: Path) -> None:
    """Two origins run one station from different moments, their frames after each boundary a little apart: for
    every slot both list, the same name, media sequence number, PROGRAM-DATE-TIME and EXTINF."""
    lists = []
    for origin, (started, frame) in enumerate([(NOW + 0.3, 0.004), (NOW + 13.7, 0.041)]):
        root = tmp_path / f"origin{origin}"
        (root / "_playlists").mkdir(parents=True)
        station, hls = FakeStation(root, frame_after_cut=frame), writer(root, minutes=5)
        station.start(started)
        station.finish_segments(8)
        hls.tick(NOW + 60)
        playlist = playlist_of(root)
        lists.append({playlist.media_sequence + number: (s.name, s.start, s.duration)
                      for number, s in enumerate(playlist.segments)})
    shared = lists[0].keys() & lists[1].keys()
    assert len(shared) >= 5
    # A run's first segment starts with its audio, mid-slot: the same slot, not the same interval.
    whole = sorted(shared)[1:]
    assert all(lists[0][number] == lists[1][number] for number in whole), [
        (lists[0][number], lists[1][number]) for number in whole]


def test_segments_that_left_stay_downloadable_for_a_window_more(root: Path) -> None:
    station, hls = FakeStation(root), writer(root, minutes=1)
    station.start(NOW)
    station.finish_segments(17)  # 17 segments of 6 s: 102 s, the window is 60
    hls.tick(NOW + 105)
    playlist = playlist_of(root)
    assert playlist.duration >= 60 and playlist.duration - playlist.segments[0].duration < 60
    gone = [station.directory / f"{slot}.ts" for slot in range(int(NOW // T), playlist.segments[0].slot)]
    assert gone
    # RFC 8216 6.2.2: available for its own duration plus the longest playlist that listed it (window + T).
    hls.tick(NOW + 105 + 60 + 2 * T - 0.1)
    assert all(path.exists() for path in gone)
    hls.tick(NOW + 105 + 60 + 2 * T + 0.1)
    assert not any(path.exists() for path in gone)


def test_a_restarted_writer_continues_where_it_stopped(root: Path) -> None:
    station = FakeStation(root)
    station.start(NOW)
    station.finish_segments(3)
    writer(root).tick(NOW + 20)
    before = playlist_of(root)
    station.finish_segments(2)
    writer(root).tick(NOW + 40)  # a new process: its only state is the playlist
    after = playlist_of(root)
    assert after.media_sequence == before.media_sequence
    assert [s.slot - after.media_sequence for s in after.segments] == [0, 1, 2, 3, 4]
    assert not any(s.discontinuity for s in after.segments)  # the run it read back goes on


def test_a_stopped_station_loses_its_playlist(root: Path) -> None:
    station, hls = FakeStation(root), writer(root)
    station.start(NOW)
    station.finish_segments(2)
    hls.tick(NOW + 15)
    assert (root / "_playlists" / "joy.m3u8").exists()
    hls.next_discovery = NOW + 3600  # not thanks to the listing of the output root: at the next poll
    shutil.rmtree(station.directory)  # systemd's RuntimeDirectory on stop
    hls.tick(NOW + 15.5)
    assert not (root / "_playlists" / "joy.m3u8").exists()
    assert hls.stations == {}


@pytest.mark.parametrize("writer_restarts", [False, True])
def test_after_a_stop_neither_sequence_goes_back(root: Path, writer_restarts: bool) -> None:
    station, hls = FakeStation(root), writer(root, minutes=1)
    station.start(NOW)
    station.finish_segments(12)
    hls.tick(NOW + 75)
    station.start(NOW + 80)  # a restart: a discontinuity
    station.finish_segments(8)
    hls.tick(NOW + 130)
    before = playlist_of(root)
    assert before.discontinuity_sequence == 0 and before.segments[-8].discontinuity
    shutil.rmtree(station.directory)  # stopped (or the host rebooted)
    if writer_restarts:
        hls = writer(root, minutes=1)  # it was away when the station stopped
    hls.tick(NOW + 131)
    assert not (root / "_playlists" / "joy.m3u8").exists()
    station = FakeStation(root)
    station.start(NOW + 200)
    station.finish_segments(2)
    hls.tick(NOW + 215)
    after = playlist_of(root)
    assert after.media_sequence >= before.media_sequence + len(before.segments)
    # Its first segment is in a discontinuity sequence after every one the old playlist listed.
    assert after.discontinuity_sequence == before.discontinuity_sequence + 1 + 1


@pytest.mark.parametrize("replicated", [False, True])
def test_a_first_run_never_publishes_a_slot_again(root: Path, replicated: bool) -> None:
    # A first run (after a stop or a reboot: its directory is new) starts early by the upstream's burst
    # (launcher.begin_run), which can reach back into slots the station's last playlist already listed.
    station, hls = FakeStation(root), writer(root, replicated=replicated)
    station.start(NOW)
    station.finish_segments(5)
    hls.tick(NOW + 32)
    before = playlist_of(root)
    shutil.rmtree(station.directory)
    hls.tick(NOW + 33)
    station = FakeStation(root)
    station.start(NOW + 34 - 9)  # early by a 9 s burst: inside the last listed segment's slot, and the one before
    station.finish_segments(8)
    hls.tick(NOW + 80)
    after = playlist_of(root)
    assert not {s.name for s in after.segments} & {s.name for s in before.segments}
    assert after.segments[0].slot == before.segments[-1].slot + 1
    assert after.media_sequence >= before.media_sequence + len(before.segments)
    if replicated:  # every origin's number for the slot
        assert [s.slot for s in after.segments] == list(range(after.media_sequence,
                                                              after.media_sequence + len(after.segments)))


def test_a_station_stopped_on_a_disk_output_goes_after_the_grace(root: Path) -> None:
    # On a disk, systemd leaves a stopped station's directory; hls@.service's ExecStopPost marks the stop, and the
    # next start (ExecStartPre) clears the mark.
    station, hls = FakeStation(root), writer(root)
    station.start(NOW)
    station.finish_segments(2)
    hls.tick(NOW + 15)
    marker = station.directory / ".stopped"
    marker.touch()
    os.utime(marker, (NOW + 15, NOW + 15))
    hls.tick(NOW + 20)  # within the grace (6 s): a restart may be on its way
    assert (root / "_playlists" / "joy.m3u8").exists() and station.directory.exists()
    marker.unlink()  # restarted: nothing goes
    hls.tick(NOW + 40)
    assert (root / "_playlists" / "joy.m3u8").exists()
    marker.touch()
    os.utime(marker, (NOW + 40, NOW + 40))
    hls.tick(NOW + 46.5)
    assert not (root / "_playlists" / "joy.m3u8").exists() and not station.directory.exists()
    assert hls.stations == {}


def test_a_playlist_left_from_a_station_that_stopped_meanwhile_goes(root: Path) -> None:
    (root / "_playlists" / "gone.m3u8").write_text("#EXTM3U\n")
    writer(root).tick(NOW)
    assert not (root / "_playlists" / "gone.m3u8").exists()


def test_files_nobody_lists_are_cleared_at_start(root: Path) -> None:
    station = FakeStation(root)
    old = station.start(NOW)
    station.finish_segments(2)
    current = station.start(NOW + 20)  # hls-playlists did not run meanwhile: run `old` was never read
    hls = writer(root)
    hls.tick(NOW + 21)
    assert not old.list_path(station.directory).exists()
    assert current.run  # its files stay; the old run's segments go after the usual wait
    hls.tick(NOW + 21 + 60 + 2 * T + 0.1)
    assert not list(station.directory.glob(f"{old.run}-*.ts"))


GOOD = {"HLS_OUTPUT_ROOT": "/run/hls", "HLS_WINDOW_MINUTES": "25", "HLS_STOP_GRACE_SECONDS": "6"}


@pytest.mark.parametrize(("values", "message"), [
    ({**GOOD, "HLS_OUTPUT_ROOT": None}, "HLS_OUTPUT_ROOT is not set"),
    ({**GOOD, "HLS_WINDOW_MINUTES": ""}, "HLS_WINDOW_MINUTES is not set"),
    ({**GOOD, "HLS_STOP_GRACE_SECONDS": None}, "HLS_STOP_GRACE_SECONDS is not set"),
    ({**GOOD, "HLS_WINDOW_MINUTES": "0"}, "HLS_WINDOW_MINUTES='0' is not a whole number from 1 to 1440"),
    ({**GOOD, "HLS_WINDOW_MINUTES": "2.5"}, "not a whole number"),
    ({**GOOD, "HLS_STOP_GRACE_SECONDS": "-1"}, "HLS_STOP_GRACE_SECONDS='-1' is not a whole number"),
    ({**GOOD, "HLS_REPLICATED": "yes"}, "HLS_REPLICATED='yes' is neither true nor false"),
])
def test_settings_are_checked(values: dict[str, str | None], message: str) -> None:
    with pytest.raises(BadSetting, match=message):
        Config.from_env(values)
