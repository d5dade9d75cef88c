"""hls-playlists: every station's media playlist, from the segment lists FFmpeg writes. One process per host.

FFmpeg cuts the segments and lists the finished ones (stations/runs.py); this program lists them in
<output root>/_playlists/<slug>.m3u8, which nginx serves as /hls/<slug>/index.m3u8, and deletes segments once they
have been out of the playlist long enough. Owning the playlist is what gives it EXT-X-PROGRAM-DATE-TIME and an
EXT-X-DISCONTINUITY-SEQUENCE that survive restarts, which FFmpeg's hls muxer cannot write.

It costs three stat() calls per station per poll: the run file (.launch.json), the run's segment list and
now-playing.json; a file is read only when it changed. Before a segment is listed, its file gets the station's
titles as timed ID3 (titles.py, timed_id3.py), and the playlist an EXT-X-DATERANGE per title. A station whose
directory systemd removed (stopped) loses its playlist.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from radio_hls.common import logs
from radio_hls.common.contract import (
    LAUNCH_INFO_NAME,
    NOW_PLAYING_NAME,
    PLAYLISTS_DIR_NAME,
    SLUG_PATTERN,
    STOPPED_MARKER_NAME,
    BadSetting,
    playlist_path,
    setting,
)
from radio_hls.common.files import read_json_object, write_atomically
from radio_hls.playlists import timed_id3
from radio_hls.playlists.model import MediaPlaylist, Title
from radio_hls.playlists.titles import TitleTrack
from radio_hls.stations.runs import LIST_SUFFIX, MAX_BURST_SECONDS, SEGMENT_SUFFIX, Listed, Run, read_list, read_run

log = logging.getLogger("hls-playlists")

POLL_SECONDS = 0.5
# How often the output root is listed for stations that started or stopped.
DISCOVER_SECONDS = 2.0
SLUG = re.compile(SLUG_PATTERN)
PLAYLIST_SUFFIX = ".m3u8"
# <slug>.json next to it while the station is stopped: where its sequences got to (new_playlist).
SEQUENCES_SUFFIX = ".json"
LONGEST_SEGMENT = 60  # seconds: the launcher's bound on HLS_SEGMENT_SECONDS


@dataclass(frozen=True)
class Config:
    output_root: Path
    window_seconds: float
    stop_grace_seconds: float  # a station stopped this long stays stopped: its restart would have come

    @classmethod
    def from_env(cls, values: Mapping[str, str | None]) -> Config:
        def whole(name: str, low: int, high: int) -> int:
            value = setting(values, name)
            if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
                raise BadSetting(f"{name}={value!r} is not a whole number from {low} to {high}")
            return int(value)

        return cls(Path(setting(values, "HLS_OUTPUT_ROOT")), whole("HLS_WINDOW_MINUTES", 1, 1440) * 60.0,
                   float(whole("HLS_STOP_GRACE_SECONDS", 1, 86400)))


def stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is replaced or rewritten; None when it is missing."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


def read_playlist(path: Path) -> MediaPlaylist | None:
    try:
        return MediaPlaylist.from_text(path.read_text(encoding="utf-8"))
    except OSError:
        return None


class Deletions:
    """Files to delete at a time: segments that left a playlist stay available for as long as a client holding the
    last playlist that listed them may ask (RFC 8216 6.2.2)."""

    def __init__(self) -> None:
        self._due: list[tuple[float, str]] = []

    def add(self, path: Path, due: float) -> None:
        heapq.heappush(self._due, (due, str(path)))

    def run(self, now: float) -> None:
        while self._due and self._due[0][0] <= now:
            Path(heapq.heappop(self._due)[1]).unlink(missing_ok=True)


class Station:
    def __init__(self, slug: str, directory: Path, playlist_path: Path, config: Config, deletions: Deletions,
                 now: float) -> None:
        self.slug, self.directory, self.playlist_path = slug, directory, playlist_path
        self.config, self.deletions = config, deletions
        self.run: Run | None = None
        self.run_stamp: tuple[int, int, int] | None = None
        self.list_stamp: tuple[int, int, int] | None = None
        self.playlist = read_playlist(playlist_path)
        self.titles = TitleTrack(directory / NOW_PLAYING_NAME, last_title(self.playlist))
        self.lead = 0.0  # how far the run's timeline is ahead of the clock (its upstream's burst)
        self.id3_continuity = 0  # the timed-ID3 stream's TS continuity counter, continued from segment to segment
        self._clear_leftovers(read_run(directory), now)


    def keep_seconds(self, target: int) -> float:
        """How long a segment stays on disk after it left the playlist: its own duration plus the longest playlist
        that listed it (RFC 8216 6.2.2), which trim() keeps under the window plus one segment."""
        return self.config.window_seconds + 2 * target

    def _clear_leftovers(self, current: Run | None, now: float) -> None:
        """At start: segments this program no longer knows about (it was stopped while they left, or never listed
        them) go after the usual wait; lists of runs other than the current one go now."""
        listed = {segment.name for segment in self.playlist.segments} if self.playlist else set()
        current_prefix = f"{current.run}-" if current else None
        target = self.playlist.target if self.playlist else current.segment_seconds if current else LONGEST_SEGMENT
        keep = self.keep_seconds(target)
        for entry in os.scandir(self.directory):
            if entry.name.endswith(SEGMENT_SUFFIX) and entry.name not in listed and not (
                    current_prefix and entry.name.startswith(current_prefix)):
                self.deletions.add(Path(entry.path), now + keep)
            elif entry.name.endswith(LIST_SUFFIX) and (current is None or entry.name != f"{current.run}{LIST_SUFFIX}"):
                Path(entry.path).unlink(missing_ok=True)

    def poll(self, now: float) -> bool:
        """Take in what FFmpeg finished since the last poll; False when the station is gone (stopped)."""
        run_stamp = stamp(self.directory / LAUNCH_INFO_NAME)
        if run_stamp is None and not self.directory.is_dir():
            return False
        stopped = stamp(self.directory / STOPPED_MARKER_NAME)
        if stopped is not None and now - stopped[1] / 1e9 > self.config.stop_grace_seconds:
            return False
        self.titles.poll(self.lead)  # before the segments: a change learned now goes into the next one listed
        if run_stamp != self.run_stamp:
            self.run_stamp = run_stamp
            run = read_run(self.directory)
            if run is not None and (self.run is None or run.run != self.run.run):
                self._begin(run, now)
        if self.run is not None:
            list_stamp = stamp(self.run.list_path(self.directory))
            if list_stamp != self.list_stamp:
                self.list_stamp = list_stamp
                self._list(self.run, now)
        return True

    def _begin(self, run: Run, now: float) -> None:
        previous = self.run
        if previous is not None:
            self._list(previous, now)  # its last segments, finished as it stopped
            previous.list_path(self.directory).unlink(missing_ok=True)
            # The segment it was writing when it was killed, never listed, if any.
            last = self.playlist.last if self.playlist else None
            unfinished = (last.index + 1) if last is not None and last.run == previous.run else 0
            self.deletions.add(self.directory / f"{previous.run}-{unfinished}{SEGMENT_SUFFIX}", now)
        self.run, self.list_stamp = run, None
        log.info("%s: run %d (%s, %s s segments)", self.slug, run.run, run.mode, run.segment_seconds)

    def _list(self, run: Run, now: float) -> None:
        """Append the run's newly finished segments; rewrite the playlist when there were any."""
        last = self.playlist.last if self.playlist else None
        added = False
        for listed in read_list(self.directory, run):
            if last is not None and (run.run, listed.index) <= (last.run, last.index):
                continue
            if self.playlist is None:
                self.playlist = new_playlist(self.playlist_path, run.segment_seconds, now)
            titles = self._tag(listed)
            last = self.playlist.append(listed.name, run.run, listed.index, listed.start, listed.duration, titles)
            added = True
        if not added or self.playlist is None:
            return
        if self.list_stamp is not None and last is not None:
            # The list was replaced when its last segment ended: the timeline stood at that end then.
            self.lead = min(max(last.end - self.list_stamp[1] / 1e9, 0.0), MAX_BURST_SECONDS)
        for segment in self.playlist.trim(self.config.window_seconds):
            self.deletions.add(self.directory / segment.name, now + self.keep_seconds(self.playlist.target))
        try:
            write_atomically(self.playlist_path, self.playlist.text(), mode=0o644, durable=False)
        except OSError as error:
            log.error("%s: cannot write %s: %s", self.slug, self.playlist_path, error.strerror)

    def _tag(self, listed: Listed) -> tuple[Title, ...]:
        """Put the station's titles into the segment's file before anyone can fetch it; a file that cannot be
        tagged is listed as it is (the audio matters more than its title)."""
        tagging = self.titles.segment(listed.start, listed.start + listed.duration)
        if tagging.tags:
            tags = [(at, timed_id3.id3_tag(text)) for at, text in tagging.tags]
            try:
                self.id3_continuity = timed_id3.tag_segment(self.directory / listed.name, tags, self.id3_continuity)
            except (OSError, ValueError) as error:
                log.warning("%s: %s listed without its title: %s", self.slug, listed.name, error)
        return tagging.titles

    def remove(self) -> None:
        """The station stopped: its playlist goes, and its files if systemd left them (on a disk output; the empty
        directory stays, as its parent is root's, and is followed again as a station that has no run yet)."""
        retire(self.playlist_path, self.playlist)
        shutil.rmtree(self.directory, ignore_errors=True)


def last_title(playlist: MediaPlaylist | None) -> Title | None:
    """The title in effect at the end of a playlist read back (hls-playlists restarting)."""
    if playlist is None:
        return None
    titles = [title for segment in playlist.segments for title in segment.titles]
    return titles[-1] if titles else playlist.head_title


def sequences_path(playlist_path: Path) -> Path:
    return playlist_path.with_suffix(SEQUENCES_SUFFIX)


def retire(playlist_path: Path, playlist: MediaPlaylist | None) -> None:
    """Remove a stopped station's playlist, keeping where its sequences got to for the station's next playlist."""
    if playlist is not None:
        numbers = {"media_sequence": playlist.media_sequence + len(playlist.segments),
                   # One more than the last segment's: the next playlist starts another discontinuity.
                   "discontinuity_sequence": playlist.discontinuity_sequence + 1
                   + sum(segment.discontinuity for segment in playlist.segments)}
        try:
            write_atomically(sequences_path(playlist_path), json.dumps(numbers) + "\n", mode=0o644)
        except OSError as error:
            log.error("cannot keep the sequences of %s: %s", playlist_path, error.strerror)
    playlist_path.unlink(missing_ok=True)


def new_playlist(playlist_path: Path, target: int, now: float) -> MediaPlaylist:
    """A station's playlist after a stop or a reboot: both sequences go on from where the last one left them, so a
    player that polled that one sees neither go back. The media sequence is at least the Unix time, which is ahead
    of any number an earlier playlist reached (at most one segment a second) if those were lost (a RAM-backed
    output after a reboot). The discontinuity sequence stays small: hls.js walks it from 0 on every load."""
    kept = read_json_object(sequences_path(playlist_path))
    media, discontinuity = kept.get("media_sequence"), kept.get("discontinuity_sequence")
    return MediaPlaylist(target, max(int(now), media if isinstance(media, int) else 0),
                         discontinuity if isinstance(discontinuity, int) and discontinuity >= 0 else 0)


class Writer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.playlists_dir = config.output_root / PLAYLISTS_DIR_NAME
        self.stations: dict[str, Station] = {}
        self.deletions = Deletions()
        self.next_discovery = 0.0

    def discover(self, now: float) -> None:
        present = {entry.name for entry in os.scandir(self.config.output_root)
                   if SLUG.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)}
        for slug in present - self.stations.keys():
            try:
                self.stations[slug] = Station(slug, self.config.output_root / slug,
                                              playlist_path(self.config.output_root, slug), self.config,
                                              self.deletions, now)
            except OSError as error:  # removed between the listing and now: seen again at the next discovery
                log.debug("%s: %s", slug, error)
        for slug in self.stations.keys() - present:
            self.forget(slug)
        for playlist in self.playlists_dir.glob(f"*{PLAYLIST_SUFFIX}"):
            if playlist.name.removesuffix(PLAYLIST_SUFFIX) not in present:  # stopped while this program was away
                retire(playlist, read_playlist(playlist))

    def forget(self, slug: str) -> None:
        self.stations.pop(slug).remove()
        log.info("%s: stopped, playlist removed", slug)

    def tick(self, now: float) -> None:
        if now >= self.next_discovery:
            self.discover(now)
            self.next_discovery = now + DISCOVER_SECONDS
        gone = []
        for station in self.stations.values():
            try:
                if not station.poll(now):
                    gone.append(station.slug)
            except OSError as error:
                log.warning("%s: %s", station.slug, error)
        for slug in gone:  # at once, not at the next discovery: a stopped station's playlist must not linger
            self.forget(slug)
        self.deletions.run(now)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            self.tick(time.time())
            stop.wait(max(0.0, POLL_SECONDS - (time.monotonic() - started)))


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(description="Write every station's HLS media playlist (hls-playlists.service). "
                            "Settings from the environment: HLS_OUTPUT_ROOT, HLS_WINDOW_MINUTES, "
                            "HLS_STOP_GRACE_SECONDS.").parse_args(argv)
    logs.setup()
    try:
        config = Config.from_env(os.environ)
    except BadSetting as error:
        log.error("%s", error)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    log.info("writing the playlists of %s: %g minutes each", config.output_root, config.window_seconds / 60)
    Writer(config).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
