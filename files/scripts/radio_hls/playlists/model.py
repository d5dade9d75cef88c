"""One station's live media playlist: what it lists, how it grows and shrinks, and its text (RFC 8216).

The rules it keeps (docs/conformance.md has each with its number):
- the target duration is the segment length, constant; the segment muxer cuts on it, so no EXTINF exceeds it by
  more than one audio frame;
- segments are only appended and removed from the head, the media sequence counts the removed ones, and the
  discontinuity sequence counts the removed EXT-X-DISCONTINUITY tags, so every listed segment keeps both numbers;
- a segment is named after its slot (stations/runs.py) and a playlist numbers from its first segment's slot, so
  origins that run a station publish the same names and numbers; after a gap (slots with no segment) a replicated
  station's playlist starts again at the new slot (restart_at), a single host's numbers go on one by one;
- every segment has its EXT-X-PROGRAM-DATE-TIME, the wall-clock time of its timestamps;
- EXT-X-DISCONTINUITY starts each run (a restart of FFmpeg: new encoder, maybe another codec) and marks segments
  hls-playlists missed;
- the playlist keeps `window` seconds of audio and never less than three target durations;
- each title change is an EXT-X-DATERANGE (RFC 8216 4.3.2.7) before the segment it begins in; the title in effect
  at the first listed segment stays at the top when its own segment has left.

The playlist file is the only state: hls-playlists reads it back when it starts (from_text).
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, replace
from functools import cached_property

from radio_hls.common import clock
from radio_hls.nowplaying.icy import split_title

VERSION = 3  # decimal EXTINF (RFC 8216 section 7); nothing this playlist uses needs more
PDT_FORMAT = "%Y-%m-%dT%H:%M:%S"


def iso_ms(epoch: float) -> str:
    """2026-11-30T09:05:03.250Z: Unix seconds as EXT-X-PROGRAM-DATE-TIME writes them."""
    milliseconds = round(epoch * 1000)
    return time.strftime(PDT_FORMAT, time.gmtime(milliseconds // 1000)) + f".{milliseconds % 1000:03d}Z"


TITLE_CLASS = "net.radio-hls.title"
DATERANGE = re.compile(r'#EXT-X-DATERANGE:.*START-DATE="([^"]*)".*X-TITLE="([^"]*)"')


def quoted(text: str) -> str:
    """A quoted-string may hold neither a double quote nor a line break (RFC 8216 4.2)."""
    return text.replace('"', "'").replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True)
class Title:
    """A title of the station's stream, from its start in the audio (EXT-X-DATERANGE, the timed ID3 tag's time)."""

    start: float  # Unix seconds
    text: str  # the ICY StreamTitle as hls-nowplaying cleaned it

    @cached_property
    def line(self) -> str:
        """One range per title, each ending where the next begins (END-ON-NEXT, which needs a CLASS); the ID
        comes from the start, so a title's tag is the same in every version of the playlist."""
        playing = split_title(self.text)
        attributes = [f'ID="title-{round(self.start * 1000)}"', f'CLASS="{TITLE_CLASS}"',
                      f'START-DATE="{iso_ms(self.start)}"', "END-ON-NEXT=YES", f'X-TITLE="{quoted(self.text)}"']
        if playing.artist and playing.song:
            attributes += [f'X-ARTIST="{quoted(playing.artist)}"', f'X-SONG="{quoted(playing.song)}"']
        return f"#EXT-X-DATERANGE:{','.join(attributes)}\n"


@dataclass(frozen=True)
class Segment:
    name: str  # <slot>.ts, relative to the playlist's URL
    run: int | None  # None when read back from the file: a run is not in the name
    slot: int
    start: float  # Unix seconds: its EXT-X-PROGRAM-DATE-TIME
    duration: float
    discontinuity: bool
    titles: tuple[Title, ...] = ()  # the titles that begin in it

    @property
    def end(self) -> float:
        return self.start + self.duration

    @cached_property
    def lines(self) -> str:
        """Rendered once, not at every rewrite of the playlist (one per new segment, up to 250 segments long)."""
        return "".join(title.line for title in self.titles) + \
            ("#EXT-X-DISCONTINUITY\n" if self.discontinuity else "") + \
            f"#EXT-X-PROGRAM-DATE-TIME:{iso_ms(self.start)}\n#EXTINF:{self.duration:.3f},\n{self.name}\n"


SEGMENT_NAME = re.compile(r"([0-9]+)\.ts")


class MediaPlaylist:
    def __init__(self, target: int, media_sequence: int, discontinuity_sequence: int = 0) -> None:
        self.target = target
        self.media_sequence = media_sequence  # of the first listed segment
        self.discontinuity_sequence = discontinuity_sequence
        self.segments: deque[Segment] = deque()
        self.duration = 0.0
        self.head_title: Title | None = None  # the last title of a segment that left: maybe still in effect
        self.starts_again = False  # restart_at emptied it: the next segment begins a discontinuity

    @property
    def last(self) -> Segment | None:
        return self.segments[-1] if self.segments else None

    def append(self, name: str, run: int, slot: int, start: float, duration: float,
               titles: tuple[Title, ...] = ()) -> Segment:
        """List a finished segment after the last; EXT-X-DISCONTINUITY when it starts a run or follows a gap."""
        last = self.last
        discontinuity = self.starts_again or last is not None and (run != last.run or slot != last.slot + 1)
        self.starts_again = False
        segment = Segment(name, run, slot, start, duration, discontinuity, titles)
        self.segments.append(segment)
        self.duration += duration
        return segment

    def continue_run(self, run: int) -> None:
        """The last segment (read back, its run unknown) is `run`'s: the next of that run continues it."""
        if self.segments:
            self.segments[-1] = replace(self.segments[-1], run=run)

    def restart_at(self, slot: int) -> list[Segment]:
        """After a gap: every listed segment leaves (as trim removes them, so both sequences count them) and the
        media sequence jumps to `slot`, the next segment's. A playlist cannot list a hole and its numbers must stay
        the slots (every origin's the same), so the window before an outage goes; the caller appends at least three
        target durations at once (RFC 8216 6.2.2). Returns the segments that left."""
        removed = self.trim(float("inf"), keep_none=True)
        self.media_sequence = slot
        self.starts_again = True
        return removed

    def trim(self, window: float, keep_none: bool = False) -> list[Segment]:
        """Remove the oldest segments while the rest still hold `window` seconds and three target durations (all
        of them with keep_none); returns them."""
        keep = max(window, 3 * self.target)
        removed = []
        while self.segments and (keep_none or self.duration - self.segments[0].duration >= keep):
            segment = self.segments.popleft()
            self.duration -= segment.duration
            self.media_sequence += 1
            # RFC 8216 6.2.2: the remaining segments keep their discontinuity sequence numbers.
            if segment.discontinuity:
                self.discontinuity_sequence += 1
            if segment.titles:
                self.head_title = segment.titles[-1]
            removed.append(segment)
        return removed

    def text(self) -> str:
        head = (f"#EXTM3U\n#EXT-X-VERSION:{VERSION}\n#EXT-X-TARGETDURATION:{self.target}\n"
                f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}\n"
                f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}\n#EXT-X-INDEPENDENT-SEGMENTS\n")
        first = self.segments[0] if self.segments else None
        if self.head_title is not None and first is not None and not (
                first.titles and first.titles[0].start <= first.start):
            head += self.head_title.line  # still in effect at the first segment
        return head + "".join(segment.lines for segment in self.segments)

    @classmethod
    def from_text(cls, text: str) -> MediaPlaylist | None:
        """A playlist this module wrote (hls-playlists restarting); None when the text is not one."""
        tags: dict[str, str] = {}
        pending: dict[str, str] = {}
        titles: list[Title] = []
        discontinuity = False
        playlist: MediaPlaylist | None = None
        for line in text.splitlines():
            if line.startswith("#EXT-X-DISCONTINUITY") and ":" not in line:
                discontinuity = True
            elif line.startswith("#EXT-X-DATERANGE:"):
                found_title = DATERANGE.match(line)
                title_start = clock.parse(found_title[1]) if found_title else None
                if found_title is None or title_start is None:
                    return None
                titles.append(Title(title_start, found_title[2]))
            elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:") or line.startswith("#EXTINF:"):
                tag, _, value = line.partition(":")
                pending[tag] = value.rstrip(",")
            elif line.startswith("#"):
                tag, _, value = line.partition(":")
                tags[tag] = value
            elif line:
                found = SEGMENT_NAME.fullmatch(line)
                try:
                    if playlist is None:
                        playlist = cls(int(tags["#EXT-X-TARGETDURATION"]), int(tags["#EXT-X-MEDIA-SEQUENCE"]),
                                       int(tags["#EXT-X-DISCONTINUITY-SEQUENCE"]))
                    if found is None:
                        return None
                    start = clock.parse(pending["#EXT-X-PROGRAM-DATE-TIME"])
                    duration = float(pending["#EXTINF"])
                except (KeyError, ValueError):
                    return None
                if start is None:
                    return None
                if not playlist.segments and titles and titles[0].start < start:
                    playlist.head_title = titles.pop(0)
                segment = Segment(line, None, int(found[1]), start, duration, discontinuity, tuple(titles))
                playlist.segments.append(segment)
                playlist.duration += duration
                pending, titles, discontinuity = {}, [], False
        return playlist
