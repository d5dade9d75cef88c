"""A station's titles on its timeline: which segment carries which title, for timed ID3 and EXT-X-DATERANGE.

hls-nowplaying writes now-playing.json when the ICY StreamTitle changes, with the time the change reached this
host (changed_at). At that moment FFmpeg's connection to the same upstream was at the same live audio, which its
run places `lead` seconds ahead of the wall clock (the upstream's burst on connect, as the run's segment list
shows): so the change is at changed_at + lead on the timeline, to within one ICY metadata interval.

A change is carried by the first segment listed after hls-playlists learned of it: at its place in the audio when
that falls inside the segment (the usual case: the segment was still being cut), else at the segment's start.
Every segment also carries the title in effect at its start, so a player that joins late shows it at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from radio_hls.common import clock
from radio_hls.playlists.model import Title


@dataclass(frozen=True)
class Tagging:
    """What one segment carries."""

    titles: tuple[Title, ...]  # the titles that begin in it: its EXT-X-DATERANGE tags
    tags: tuple[tuple[float, str], ...]  # (Unix time, title) for its timed ID3: the title at its start, then changes


@dataclass
class TitleTrack:
    path: Path  # the station's now-playing.json
    current: Title | None = None  # in effect at the end of the last segment given out
    _stamp: tuple[int, int] | None = None
    _known: str | None = None  # the last title read, even before a segment carried it
    _pending: list[tuple[float, str | None]] = field(default_factory=list)  # changes no segment carried yet

    def __post_init__(self) -> None:
        self._known = self.current.text if self.current else None

    def poll(self, lead: float) -> None:
        """Read now-playing.json if it changed; a new title becomes a change at its place on the timeline."""
        try:
            status = self.path.stat()
        except OSError:
            return
        if (status.st_ino, status.st_mtime_ns) == self._stamp:
            return
        self._stamp = status.st_ino, status.st_mtime_ns
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(document, dict):
            return
        title = document.get("title")
        # An empty StreamTitle (an upstream whose source just reconnected) changes nothing: the title in effect
        # stays, as its EXT-X-DATERANGE (END-ON-NEXT) says, until the next one.
        text = title if isinstance(title, str) and title.strip() else None
        if text is None or text == self._known:
            return
        self._known = text
        changed_at = clock.parse(document.get("changed_at"))
        self._pending.append(((changed_at if changed_at is not None else status.st_mtime) + lead, text))

    def segment(self, start: float, end: float) -> Tagging:
        """The titles and tags of the segment [start, end), about to be listed."""
        due = [(max(at, start), text) for at, text in self._pending if at < end]
        self._pending = [(at, text) for at, text in self._pending if at >= end]
        at_start = self.current
        begins: list[Title] = []
        for at, text in due:
            title = Title(round(at, 3), text) if text is not None else None
            if at <= start:
                at_start = title
            elif title is not None:
                begins.append(title)
            self.current = title
        if at_start is not None and at_start.start >= start and at_start not in begins:
            begins.insert(0, at_start)  # a change that begins the segment
        tags = ([(start, at_start.text)] if at_start is not None else []) + \
            [(title.start, title.text) for title in begins if title.start > start]
        return Tagging(tuple(begins), tuple(tags))
