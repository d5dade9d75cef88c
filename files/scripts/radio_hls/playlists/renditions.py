"""One media playlist of a station on disk: its main rendition's or one of its ladder's.

A rendition lists the finished segments of its run's list (stations/runs.py) in its playlist file, writes it
atomically, and deletes segments once they have been out of it long enough. The playlist file is its only state:
hls-playlists reads it back when it starts. When the station stops, the playlist goes and a small file keeps where
its sequences got to, so that the next playlist goes on from there.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

from radio_hls.common.files import read_json_object, write_atomically
from radio_hls.playlists import timed_id3
from radio_hls.playlists.model import MediaPlaylist, Segment, Title
from radio_hls.playlists.titles import Tagging
from radio_hls.stations.runs import LIST_SUFFIX, MAX_BURST_SECONDS, SEGMENT_SUFFIX, Listed, Run, read_list

log = logging.getLogger("hls-playlists")

# <playlist>.json next to a playlist while the station is stopped: where its sequences got to (new_playlist).
SEQUENCES_SUFFIX = ".json"
LONGEST_SEGMENT = 60  # seconds: the launcher's bound on HLS_SEGMENT_SECONDS
MIN_SEGMENTS = 6  # Apple's authoring spec 8.11: a live playlist that listed six never lists fewer


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
        if playlist.last is not None:
            numbers["next_slot"] = playlist.last.slot + 1
        try:
            write_atomically(sequences_path(playlist_path), json.dumps(numbers) + "\n", mode=0o644)
        except OSError as error:
            log.error("cannot keep the sequences of %s: %s", playlist_path, error.strerror)
    playlist_path.unlink(missing_ok=True)


def new_playlist(playlist_path: Path, target: int, first_slot: int) -> MediaPlaylist:
    """A station's playlist, first or after a stop or a reboot. Its media sequence begins at its first segment's
    slot, as on every other origin, and never below where the last playlist left it (kept at a stop), so a player
    that polled that one sees it go on; slots only grow, so a lost one (a RAM-backed output after a reboot) was
    below too. The discontinuity sequence goes on from the last one's and stays small: hls.js walks it from 0 on
    every load."""
    kept = read_json_object(sequences_path(playlist_path))
    media, discontinuity = kept.get("media_sequence"), kept.get("discontinuity_sequence")
    return MediaPlaylist(target, max(first_slot, media if isinstance(media, int) else 0),
                         discontinuity if isinstance(discontinuity, int) and discontinuity >= 0 else 0)


def first_free_slot(playlist_path: Path) -> int:
    """The slot after the last one the station's last playlist listed (kept at a stop). A first run starts early by
    the upstream's burst (launcher.begin_run), which can reach back into slots already published: its segments
    there are never published, so a name never names two segments."""
    kept = read_json_object(sequences_path(playlist_path)).get("next_slot")
    return kept if isinstance(kept, int) else 0


class Rendition:
    """One media playlist: `directory` holds the run's segments and list (the station's own directory for the
    main rendition, <name>/ in it for one of the ladder's)."""

    def __init__(self, label: str, directory: Path, playlist_path: Path, window_seconds: float,
                 deletions: Deletions, replicated: bool = False) -> None:
        self.label, self.directory, self.playlist_path = label, directory, playlist_path
        self.window_seconds, self.deletions, self.replicated = window_seconds, deletions, replicated
        self.playlist = read_playlist(playlist_path)
        self.list_stamp: tuple[int, int, int] | None = None
        self.id3_continuity = 0  # the timed-ID3 stream's TS continuity counter, continued from segment to segment
        self.sizes: dict[str, int] = {}  # bytes of the listed segments: what the multivariant playlist measures
        for segment in self.playlist.segments if self.playlist else ():  # read back: measured as they are
            try:
                self.sizes[segment.name] = (directory / segment.name).stat().st_size
            except OSError:
                pass
        if replicated and self.playlist is not None and self.playlist.last is not None and \
                self.playlist.last.name not in self.sizes:
            # Its newest segment is gone (a reboot emptied the station's directory): nothing it lists can be
            # served. The next playlist starts at its own first slot, as every other origin numbers it.
            log.info("%s: the playlist read back lists segments that are gone: it starts again", label)
            self.retire()

    def keep_seconds(self, target: int) -> float:
        """How long a segment stays on disk after it left the playlist: its own duration plus the longest playlist
        that listed it (RFC 8216 6.2.2), which trim() keeps under the window plus one segment."""
        return self.window_seconds + 2 * target

    def clear_leftovers(self, current: Run | None, now: float) -> None:
        """At start: segments this program no longer knows about (it was stopped while they left, or never listed
        them) go after the usual wait; lists of runs other than the current one go now."""
        listed = {segment.name for segment in self.playlist.segments} if self.playlist else set()
        current_prefix = f"{current.run}-" if current else None
        target = self.playlist.target if self.playlist else current.segment_seconds if current else LONGEST_SEGMENT
        keep = self.keep_seconds(target)
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.endswith(SEGMENT_SUFFIX) and entry.name not in listed and not (
                    current_prefix and entry.name.startswith(current_prefix)):
                self.deletions.add(Path(entry.path), now + keep)
            elif entry.name.endswith(LIST_SUFFIX) and (current is None or entry.name != f"{current.run}{LIST_SUFFIX}"):
                Path(entry.path).unlink(missing_ok=True)

    def poll(self, run: Run, tagging: Callable[[Listed], Tagging], now: float) -> Listed | None:
        """List what the run finished since the last poll; returns the last segment listed, if any."""
        list_stamp = stamp(run.list_path(self.directory))
        if list_stamp == self.list_stamp:
            return None
        self.list_stamp = list_stamp
        return self.list_finished(run, tagging, now)

    def end_run(self, run: Run, tagging: Callable[[Listed], Tagging], now: float) -> None:
        """The run stopped: its last segments (finished as it stopped) are listed, its list goes, and so do its
        files never published: the segment it was writing when it was killed, the one cut short by its stop."""
        self.list_finished(run, tagging, now)
        run.list_path(self.directory).unlink(missing_ok=True)
        for unpublished in self.directory.glob(f"{run.run}-*{SEGMENT_SUFFIX}"):
            self.deletions.add(unpublished, now)
        self.list_stamp = None

    def list_finished(self, run: Run, tagging: Callable[[Listed], Tagging], now: float) -> Listed | None:
        """Append the run's newly finished segments; rewrite the playlist when there were any."""
        last = self.playlist.last if self.playlist else None
        finished = read_list(self.directory, run)
        if self.playlist is not None and last is not None and last.run is None and any(
                listed.slot == last.slot for listed in finished):
            self.playlist.continue_run(run.run)  # read back at a start of this program: the run goes on
            last = self.playlist.last
        # A segment cut short by a stop is not published: its slot is where the next run begins (that run starts
        # after the last cut, launcher.begin_run), so a slot never names two segments.
        new = [listed for listed in finished if listed.whole and (last is None or listed.slot > last.slot)]
        if self.playlist is None and new:
            # Within a burst's reach of the last listed slot; a run further back is a clock that stepped back,
            # whose audio is not the last playlist's again: it is listed, numbered on.
            free = first_free_slot(self.playlist_path)
            reach = free - math.ceil(MAX_BURST_SECONDS / run.segment_seconds) - 1
            for taken in [listed for listed in new if reach <= listed.slot < free]:
                self.deletions.add(self.directory / taken.name, now)
            new = [listed for listed in new if not reach <= listed.slot < free]
        if self.replicated and self.playlist is not None and last is not None and new and \
                new[0].slot > last.slot + 1:
            # A gap: numbered one by one, the segments after it would leave their slots, and the other origins'
            # numbers, which an edge mixes with these. Held until they alone fill three target durations and six
            # segments (RFC 8216 6.2.2, Apple 8.11), then the playlist starts again there. On a host of its own a
            # station's numbers go on one by one instead, and nothing waits.
            if len(new) < MIN_SEGMENTS or sum(listed.duration for listed in new) < 3 * self.playlist.target:
                return None
            log.info("%s: slots %d-%d missing: the playlist starts again at %d", self.label, last.slot + 1,
                     new[0].slot - 1, new[0].slot)
            self._leave(self.playlist.restart_at(new[0].slot), now)
        added: Listed | None = None
        for listed in new:
            if self.playlist is None:
                self.playlist = new_playlist(self.playlist_path, run.segment_seconds, listed.slot)
            titles = self._tag(listed, tagging(listed))
            last = self.playlist.append(listed.published, run.run, listed.slot, listed.start, listed.duration,
                                        titles)
            added = listed
        if added is None or self.playlist is None:
            return None
        self._leave(self.playlist.trim(self.window_seconds), now)
        try:
            write_atomically(self.playlist_path, self.playlist.text(), mode=0o644, durable=False)
        except OSError as error:
            log.error("%s: cannot write %s: %s", self.label, self.playlist_path, error.strerror)
        return added

    def _leave(self, removed: list[Segment], now: float) -> None:
        """Segments that left the playlist: deleted once no client holding a playlist that listed them may ask."""
        for segment in removed:
            self.sizes.pop(segment.name, None)
            if self.playlist is not None:
                self.deletions.add(self.directory / segment.name, now + self.keep_seconds(self.playlist.target))

    def _tag(self, listed: Listed, tagging: Tagging) -> tuple[Title, ...]:
        """Put the station's titles into the segment's file and publish it under its slot's name, before anyone can
        fetch it; a file that cannot be tagged is published as it is (the audio matters more than its title)."""
        path, published = self.directory / listed.name, self.directory / listed.published
        if tagging.tags:
            tags = [(at, timed_id3.id3_tag(text)) for at, text in tagging.tags]
            try:
                self.id3_continuity = timed_id3.tag_segment(path, tags, self.id3_continuity)
            except (OSError, ValueError) as error:
                log.warning("%s: %s listed without its title: %s", self.label, listed.name, error)
        try:
            path.replace(published)
            self.sizes[listed.published] = published.stat().st_size
        except OSError as error:  # listed all the same: nginx answers 404, a player skips it
            log.error("%s: cannot publish %s as %s: %s", self.label, listed.name, listed.published, error.strerror)
        return tagging.titles

    def measured(self) -> list[tuple[int, float]]:
        """(bytes, seconds) of each listed segment whose size is known."""
        if self.playlist is None:
            return []
        return [(self.sizes[segment.name], segment.duration) for segment in self.playlist.segments
                if segment.name in self.sizes]

    def retire(self) -> None:
        retire(self.playlist_path, self.playlist)
        self.playlist = None
