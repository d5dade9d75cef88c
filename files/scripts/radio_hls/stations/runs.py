"""A station's runs: what the launcher tells hls-playlists about each start of FFmpeg, and FFmpeg's segment list.

Every start of a station is a run. The launcher picks the run's timeline start (Unix seconds), never before the
end of what the previous run listed, and records the run in .launch.json. FFmpeg's segment muxer then writes,
into the station's directory:
- `<run>-<i>.ts`: the run's segments (`<run>` = the timeline start in Unix milliseconds, `<i>` from 0), cut where
  the timeline crosses a multiple of the segment length, so segments are clock-aligned;
- `<run>.csv`: the last LIST_SIZE finished segments, `<name>,<start>,<end>` (seconds on the cutting timeline,
  which begins at `start - base`; the first line says 0), replaced atomically after every segment.
Times on the cutting timeline plus `base` are Unix seconds: the segment's program date-time.
hls-playlists publishes each finished segment under its *slot*, `<slot>.ts`: the number of the segment-length
interval of Unix time it starts in. Cuts fall on the same boundaries on every host, so two origins running a
station publish the same names, media sequence numbers and program date-times for the same interval.
Each extra rendition of the run (its `variants`, the station's ladder) has the same two kinds of files, with the
same names and cut at the same times, in its own directory `<name>/` of the station's (variant_dir).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from radio_hls.common.contract import LAUNCH_INFO_NAME
from radio_hls.common.files import read_json_object, write_atomically
from radio_hls.stations.variants import Variant, variants_from_objects

SEGMENT_SUFFIX = ".ts"
LIST_SUFFIX = ".csv"
# Finished segments FFmpeg keeps in a run's list: hls-playlists may be away this long (times the segment length)
# before it misses one. The list is rewritten whole after each segment, so it stays small.
LIST_SIZE = 50
# MPEG-TS timestamps: 33 bits of a 90 kHz clock, so they wrap every 2^33 / 90000 s (about 26.5 hours).
PTS_WRAP_SECONDS = 2**33 / 90000
# The segment muxer cuts at the first audio frame at or after a boundary (an AAC frame is 21-46 ms, MP3 24-52 ms):
# a time this close after a boundary is a cut there. Also covers the list's rounding just before it. Less than the
# launcher's 0.1 s between runs, so a run that begins after a cut is not taken for one.
CUT_TOLERANCE = 0.06


def slot_of(time: float, segment_seconds: int) -> int:
    """The segment-length interval of Unix time that `time` falls in (a cut just before its boundary included)."""
    return math.floor((time + 0.002) / segment_seconds)


def cut_at(time: float, segment_seconds: int) -> float | None:
    """The boundary a time is a cut at (Unix seconds), None when it is none (a run's first audio, a stop)."""
    boundary = round(time / segment_seconds) * segment_seconds
    return float(boundary) if abs(time - boundary) < CUT_TOLERANCE else None


@dataclass(frozen=True)
class Run:
    run: int  # the timeline start in Unix milliseconds: the run's name
    start: float  # Unix seconds of the run's first audio
    base: int  # Unix seconds, a multiple of segment_seconds: where the cutting timeline is 0
    segment_seconds: int
    mode: str  # copy or transcode
    upstream_codec: str | None  # None when it was not probed
    started_at: float  # when the launcher decided (Unix seconds)
    skip: float = 0.0  # seconds of the upstream's first audio FFmpeg drops: what the last run already listed
    variants: tuple[Variant, ...] = ()  # the extra renditions FFmpeg encodes, each into variant_dir

    @classmethod
    def begin(cls, start: float, segment_seconds: int, mode: str, upstream_codec: str | None,
              now: float, skip: float = 0.0, variants: tuple[Variant, ...] = ()) -> Run:
        run = math.ceil(start * 1000)
        start = run / 1000
        return cls(run=run, start=start, base=int(start // segment_seconds) * segment_seconds,
                   segment_seconds=segment_seconds, mode=mode, upstream_codec=upstream_codec,
                   started_at=round(now, 3), skip=round(skip, 3), variants=variants)

    @property
    def offset(self) -> float:
        """Where the first audio sits on the cutting timeline: FFmpeg's -output_ts_offset."""
        return round(self.start - self.base, 3)

    @property
    def pts_base(self) -> float:
        """The base on the 33-bit MPEG-TS clock: the segment muxer's initial_offset, so that a segment's
        timestamps are its Unix time x 90 kHz, modulo 2^33."""
        return round(self.base % PTS_WRAP_SECONDS, 6)

    def segment_pattern(self, directory: Path) -> str:
        return str(directory / f"{self.run}-%d{SEGMENT_SUFFIX}")

    def list_path(self, directory: Path) -> Path:
        """The run's segment list in `directory`: the station's, or a rendition's (variant_dir)."""
        return directory / f"{self.run}{LIST_SUFFIX}"

    @staticmethod
    def variant_dir(directory: Path, name: str) -> Path:
        """Where a rendition's segments and lists go, in the station's directory; segment_pattern, list_path and
        read_list take it as they take the station's."""
        return directory / name

    def write(self, directory: Path) -> None:
        write_atomically(directory / LAUNCH_INFO_NAME, json.dumps(asdict(self)) + "\n", mode=0o644)


def read_run(directory: Path) -> Run | None:
    """The station's current run, None before the first or when the file is not one (an older version's)."""
    document = read_json_object(directory / LAUNCH_INFO_NAME)
    try:
        codec = document.get("upstream_codec")
        return Run(run=int(document["run"]), start=float(document["start"]), base=int(document["base"]),
                   segment_seconds=int(document["segment_seconds"]), mode=str(document["mode"]),
                   upstream_codec=codec if isinstance(codec, str) else None,
                   started_at=float(document["started_at"]), skip=float(document.get("skip", 0.0)),
                   variants=variants_from_objects(document.get("variants", [])))
    except (KeyError, TypeError, ValueError):  # InvalidVariants is a ValueError
        return None


@dataclass(frozen=True)
class Listed:
    """A finished segment, as its run's list reports it. An end (or a start) at a cut is put on its boundary, the
    same on every host, rather than on the audio frame there: at most CUT_TOLERANCE from the frame's time."""

    name: str  # FFmpeg's, <run>-<i>.ts
    index: int
    start: float  # Unix seconds: the program date-time
    duration: float
    slot: int  # the interval it starts in: its published name and media sequence number
    whole: bool  # it ends at a cut: every segment but a stopping run's last, which ends where the run stopped

    @property
    def published(self) -> str:
        return f"{self.slot}{SEGMENT_SUFFIX}"


def parse_list(text: str, run: Run) -> list[Listed]:
    """The finished segments of `run` in its list; a line that is not whole (or not one of this run's) is left."""
    prefix = f"{run.run}-"
    segments = []
    for line in text.split("\n")[:-1]:  # the last piece has no newline yet: not whole
        fields = line.split(",")
        if len(fields) != 3 or not fields[0].startswith(prefix) or not fields[0].endswith(SEGMENT_SUFFIX):
            continue
        index = fields[0][len(prefix):-len(SEGMENT_SUFFIX)]
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError:
            continue
        if not index.isascii() or not index.isdigit():
            continue
        # FFmpeg reports the first segment from 0; its audio starts at the run's offset.
        start = max(start, run.offset) if int(index) == 0 else start
        begins, ends = run.base + start, run.base + end
        begins_at, cut = cut_at(begins, run.segment_seconds), cut_at(ends, run.segment_seconds)
        begins, ends = begins if begins_at is None else begins_at, ends if cut is None else cut
        if ends > begins:
            segments.append(Listed(fields[0], int(index), round(begins, 3), round(ends - begins, 3),
                                   slot_of(begins, run.segment_seconds), cut is not None))
    return segments


def read_list(directory: Path, run: Run) -> list[Listed]:
    try:
        return parse_list(run.list_path(directory).read_text(encoding="utf-8", errors="replace"), run)
    except OSError:
        return []


# The most of an upstream's connect burst a run is started early for (Icecast's default burst, 64 KiB, is 4 s of
# 128 kbit/s audio, 8 s at 64 kbit/s).
MAX_BURST_SECONDS = 15.0


@dataclass(frozen=True)
class Timeline:
    """Where the last run left the station's timeline."""

    end: float  # the end of its last segment that ended at a cut (a stopping run's last is never published), or
    # its start when it has none
    burst: float  # how far its audio ran ahead of the clock because the upstream sent a burst on connect


def last_timeline(directory: Path) -> Timeline | None:
    """The last run's timeline, None before the first run.

    An upstream sends a few seconds of audio at once when FFmpeg connects (Icecast's burst), so a run's timeline
    runs that far ahead of the wall clock. The run's list was replaced when its last segment ended: at that wall
    time the timeline stood at the segment's end, and without a burst it would have stood at the run's start plus
    the time since the launcher decided, less the audio the run skipped.
    """
    run = read_run(directory)
    if run is None:
        return None
    listed = read_list(directory, run)
    if not listed:
        return Timeline(run.start, 0.0)
    end = listed[-1].start + listed[-1].duration
    whole = [segment for segment in listed if segment.whole]
    published = whole[-1].start + whole[-1].duration if whole else run.start
    try:
        finished = run.list_path(directory).stat().st_mtime
    except OSError:
        return Timeline(published, 0.0)
    burst = (end - finished) - (run.start - run.skip - run.started_at)
    return Timeline(published, min(max(burst, 0.0), MAX_BURST_SECONDS))
