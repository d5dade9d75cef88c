"""Checks the media playlist versions one poller saw for one station against RFC 8216, Apple's HLS Authoring
Specification and the project's own promises (docs/conformance.md lists every rule with its number).

Input: each version as fetched (text, fetch time, optionally the response headers), optionally per-segment facts
(first and last PTS and the timed ID3 packets' PTS, from ffprobe) and a way to ask which removed segments are still
served. Output: a list of violations, each naming its rule. check_multivariant() does the same for the versions of a
station's multivariant playlist, with what its renditions' segments measure. The playlist is parsed with the `m3u8`
package; what that parser drops (the order of tags, a segment without EXTINF, the text of a date or of an attribute)
is read from the lines themselves.

Timing rules never blame the poller: a late update is reported only when the fetches prove it (the newest segment
stayed the same from one fetch to another more than 1.5 target durations later), so a slow or missed poll can hide a
violation but never invent one.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import m3u8  # type: ignore[import-untyped]  # no type hints, no stub package
from m3u8.parser import ATTRIBUTELISTPATTERN  # type: ignore[import-untyped]  # how m3u8 splits an attribute list

PTS_HZ = 90_000  # MPEG-TS presentation timestamps count a 90 kHz clock...
PTS_WRAP = 1 << 33  # ...in 33 bits: they wrap every 26.5 hours
PDT_TOLERANCE = 0.05  # s: EXTINF is written to the millisecond, PDT too; the gap between two that continue
PTS_CONTINUES = 0.1  # s: the first PTS of a segment that continues the last one is one audio frame (< 0.1 s) later
WALL_CLOCK_TOLERANCE = 0.1  # s: first PTS against PDT x 90 kHz (the design makes the timestamps the wall clock)
MIN_SEGMENTS = 6  # Apple 8.11
# s: how far the newest listed segment may end after the fetch. A station's first run begins at the wall clock
# and the upstream's burst on connect (Icecast: 64 KiB, 4 s at 128 kbit/s, 5.5 s at 96) puts it ahead by that;
# later runs start early by the burst their predecessor measured and skip what a quick restart repeats, so they
# stay on the clock. Each quick restart without the skip added another burst (8.4 s after one).
AHEAD_TOLERANCE = 8.0
PLAYLIST_TYPES = ("application/vnd.apple.mpegurl", "audio/mpegurl")  # RFC 8216 4, Apple 10.4
# RFC 8216 4.3.2.6 asks for ISO 8601 "such as YYYY-MM-DDThh:mm:ss.SSSZ" with a time zone and milliseconds.
PDT_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3,}(Z|[+-]\d{2}:?\d{2})")
EXTINF_FORMAT = re.compile(r"(\d+(\.\d*)?),.*")  # RFC 8216 4.3.2.1: <duration>,[<title>]
DECIMAL_INTEGER = re.compile(r"\d{1,20}")  # RFC 8216 4.2
# RFC 8216 4.2: the three types an X- client attribute may take (4.3.2.7).
CLIENT_VALUE = re.compile(r'"[^"\r\n]*"|0[xX][0-9A-Fa-f]+|\d+(\.\d*)?')
DECIMAL_FLOAT = re.compile(r"-?\d+(\.\d*)?")  # RFC 8216 4.2, signed so that a negative one is named as such
# RFC 8216 4.3.2.7: START-DATE and END-DATE are ISO 8601 dates; a date-time with a time zone is what a client can
# place on the timeline (the fraction is optional there, unlike the project's PDT).
DATE_TIME = re.compile(r'"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})"')
TITLE_CLASS = "net.radio-hls.title"  # the project's DATERANGE class of a title change (docs/design.md)
ID3_AT_START = 0.1  # s: the first timed ID3 tag against the segment's first audio PTS
# Apple's appendix "Declared versus measured values of bandwidths": a declared AVERAGE-BANDWIDTH within 10 % of
# what the segments measure.
AVERAGE_TOLERANCE = 0.10
# RFC 6381 names (the mp4a object types ISO/IEC 14496-3 assigns) of the profiles ffprobe reports for the audio.
CODECS = {("aac", "LC"): "mp4a.40.2", ("aac", "HE-AAC"): "mp4a.40.5", ("aac", "HE-AACv2"): "mp4a.40.29",
          ("mp3", ""): "mp4a.40.34"}
# RFC 8216 4.3.2 and 4.3.3: tags of a Media Playlist, which 4.1 keeps out of a Multivariant Playlist.
MEDIA_TAGS = ("#EXTINF", "#EXT-X-BYTERANGE", "#EXT-X-DISCONTINUITY", "#EXT-X-KEY", "#EXT-X-MAP",
              "#EXT-X-PROGRAM-DATE-TIME", "#EXT-X-DATERANGE", "#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE",
              "#EXT-X-DISCONTINUITY-SEQUENCE", "#EXT-X-ENDLIST", "#EXT-X-PLAYLIST-TYPE", "#EXT-X-I-FRAMES-ONLY")


@dataclass(frozen=True)
class Rule:
    code: str  # stable name, used by the tests and docs/conformance.md
    reference: str  # where the rule comes from, with its section number
    summary: str


_RULES = (
    Rule("parse", "RFC 8216 4",
         "the m3u8 package reads the version as a Media Playlist (a multivariant one as a Multivariant Playlist)"),
    Rule("extm3u", "RFC 8216 4.3.1.1", "the first line is #EXTM3U"),
    Rule("version-once", "RFC 8216 4.3.1.2", "exactly one EXT-X-VERSION tag"),
    Rule("version-compatible", "RFC 8216 7",
         "EXT-X-VERSION is at least what the playlist uses (3 for decimal EXTINF durations)"),
    Rule("extinf", "RFC 8216 4.3.2.1", "every segment URI follows its own EXTINF:<duration>,"),
    Rule("pdt-format", "RFC 8216 4.3.2.6",
         "EXT-X-PROGRAM-DATE-TIME is an ISO 8601 date-time with a time zone and milliseconds"),
    Rule("daterange-id", "RFC 8216 4.3.2.7", "every EXT-X-DATERANGE has an ID, unique in the playlist"),
    Rule("daterange-start-date", "RFC 8216 4.3.2.7",
         "every EXT-X-DATERANGE has START-DATE, a quoted ISO 8601 date-time with a time zone"),
    Rule("daterange-stable", "RFC 8216 4.3.2.7",
         "an EXT-X-DATERANGE whose ID was seen before has the same value for every attribute both carry, in every "
         "later version (6.2.1: the playlist only grows)"),
    Rule("daterange-end-on-next", "RFC 8216 4.3.2.7",
         "END-ON-NEXT is YES, and a tag with it has CLASS and neither DURATION nor END-DATE"),
    Rule("daterange-end-date", "RFC 8216 4.3.2.7", "END-DATE is a date-time not before START-DATE"),
    Rule("daterange-duration", "RFC 8216 4.3.2.7", "DURATION and PLANNED-DURATION are not negative"),
    Rule("daterange-client-attribute", "RFC 8216 4.3.2.7",
         "an X- attribute's value is a quoted-string, a hexadecimal-sequence or a decimal-floating-point"),
    Rule("daterange-pdt", "RFC 8216 4.3.2.7", "a playlist with EXT-X-DATERANGE has EXT-X-PROGRAM-DATE-TIME"),
    Rule("target-duration", "RFC 8216 4.3.3.1",
         "one EXT-X-TARGETDURATION, a decimal integer; every EXTINF rounded to the nearest integer is <= it"),
    Rule("media-sequence-tag", "RFC 8216 4.3.3.2",
         "one EXT-X-MEDIA-SEQUENCE, before the first segment (required: segments are removed, 6.2.2)"),
    Rule("discontinuity-sequence-tag", "RFC 8216 4.3.3.3",
         "EXT-X-DISCONTINUITY-SEQUENCE at most once, before the first segment and before any EXT-X-DISCONTINUITY"),
    Rule("independent-segments", "RFC 8216 4.3.5.1",
         "EXT-X-INDEPENDENT-SEGMENTS is present (every AAC or MP3 frame decodes on its own)"),
    Rule("no-playlist-type", "RFC 8216 6.2.2", "a live playlist has no EXT-X-PLAYLIST-TYPE"),
    Rule("discontinuity-marked", "RFC 8216 4.3.2.3",
         "a segment whose PTS do not continue the previous segment's carries EXT-X-DISCONTINUITY (Apple 8.13)"),
    Rule("target-constant", "RFC 8216 6.2.1", "EXT-X-TARGETDURATION never changes"),
    Rule("append-only", "RFC 8216 6.2.1",
         "a new version only removes segments from the head and appends new ones; a kept segment keeps its EXTINF, "
         "EXT-X-PROGRAM-DATE-TIME and EXT-X-DISCONTINUITY, EXT-X-VERSION stays"),
    Rule("update-cadence", "RFC 8216 6.2.1",
         "without EXT-X-ENDLIST a version with a new segment follows within 1.5 x the target duration"),
    Rule("media-sequence-monotonic", "RFC 8216 6.2.2", "EXT-X-MEDIA-SEQUENCE never decreases"),
    Rule("media-sequence-names-one-uri", "RFC 8216 6.2.2",
         "a media sequence number always names the same URI (the sequence grows by the number of removed segments)"),
    Rule("uri-unique", "RFC 8216 6.2.2", "a URI is listed once and never comes back after it left"),
    Rule("discontinuity-sequence", "RFC 8216 6.2.2",
         "EXT-X-DISCONTINUITY-SEQUENCE never decreases and grows when a segment with EXT-X-DISCONTINUITY leaves, "
         "so every segment keeps its discontinuity sequence number"),
    Rule("min-duration", "RFC 8216 6.2.2",
         "a version that removed segments still lasts at least 3 x the target duration"),
    Rule("segment-availability", "RFC 8216 6.2.2",
         "a removed segment stays downloadable for its duration plus the longest playlist that listed it"),
    Rule("media-timestamps", "Apple 7.2",
         "the first PTS of a segment is after the last PTS of the segment before it (33-bit wrap aware)"),
    Rule("extinf-max", "Apple 7.7", "no EXTINF above the target duration + 0.5 s"),
    Rule("pdt-present", "Apple 8.4", "every segment has its own EXT-X-PROGRAM-DATE-TIME (Apple: the playlist has one)"),
    Rule("min-segments", "Apple 8.11", "once six segments are listed, no version lists fewer"),
    Rule("discontinuity-sequence-present", "Apple 8.17", "EXT-X-DISCONTINUITY-SEQUENCE is always present"),
    Rule("last-modified", "Apple 8.24", "the playlist's Last-Modified is within 3 x the target duration of its Date"),
    Rule("gzip", "Apple 10.1", "the playlist is served with Content-Encoding gzip to a client that accepts it"),
    Rule("content-type", "Apple 10.4", "the playlist is served as application/vnd.apple.mpegurl (RFC 8216 4)"),
    Rule("target-configured", "project", "EXT-X-TARGETDURATION is the configured segment length"),
    Rule("no-endlist", "project", "a station's live playlist never ends (a stopped station's playlist is removed)"),
    Rule("pdt-monotonic", "project",
         "EXT-X-PROGRAM-DATE-TIME never goes back: PDT[i+1] >= PDT[i] + EXTINF[i] - 0.05 s"),
    Rule("pdt-continuous", "project",
         "PDT[i+1] = PDT[i] + EXTINF[i] within 0.05 s unless segment i+1 has EXT-X-DISCONTINUITY"),
    Rule("pts-wall-clock", "project", "a segment's first PTS is its PDT x 90 kHz modulo 2^33, within 0.1 s"),
    Rule("pdt-not-ahead", "project",
         "no listed segment ends more than 8 s after the fetch that listed it (PDT is the wall clock, give or "
         "take a first run's burst on connect)"),
    Rule("title-daterange", "project", f"an EXT-X-DATERANGE of CLASS {TITLE_CLASS} has X-TITLE"),
    Rule("timed-id3", "project",
         "every segment from the station's first title EXT-X-DATERANGE on carries a timed ID3 stream whose first tag "
         "is at the segment's first audio PTS, within 0.1 s, or where that first title begins (Apple, Timed Metadata "
         "for HTTP Live Streaming)"),
    # The multivariant playlist (check_multivariant).
    Rule("stream-inf-bandwidth", "RFC 8216 4.3.4.2", "every EXT-X-STREAM-INF has BANDWIDTH, a decimal integer"),
    Rule("stream-inf-average-bandwidth", "RFC 8216 4.3.4.2",
         "every EXT-X-STREAM-INF has AVERAGE-BANDWIDTH (Apple: every variant declares it), a decimal integer"),
    Rule("stream-inf-codecs", "RFC 8216 4.3.4.2",
         "every EXT-X-STREAM-INF has CODECS, a quoted list (Apple: every variant declares it)"),
    Rule("stream-inf-uri", "RFC 8216 4.3.4.2", "a URI line follows each EXT-X-STREAM-INF, and only there"),
    Rule("multivariant-media-tags", "RFC 8216 4.1",
         "no Media Playlist tag (4.3.2, 4.3.3) appears in a multivariant playlist"),
    Rule("audio-only", "project",
         "an audio-only station's variants have no RESOLUTION, FRAME-RATE or VIDEO and only mp4a CODECS"),
    Rule("main-first", "project", "the station's main rendition, index.m3u8, is the first variant"),
    Rule("bandwidth-peak", "RFC 8216 4.3.4.2",
         "BANDWIDTH is at least the peak segment bit rate the rendition's playlist shows (bytes x 8 / EXTINF)"),
    Rule("average-bandwidth-measured", "Apple (bandwidth appendix)",
         "AVERAGE-BANDWIDTH is within 10 % of the rendition's measured average (all bytes x 8 / all EXTINF)"),
    Rule("codecs-measured", "RFC 8216 4.3.4.2",
         "CODECS names the profile ffprobe finds in the rendition's segments (mp4a.40.2 LC, .5 HE-AAC, .29 HE-AACv2)"),
)
RULES: dict[str, Rule] = {rule.code: rule for rule in _RULES}


@dataclass(frozen=True)
class Snapshot:
    """One playlist version as the poller received it."""

    text: str
    fetched: float  # Unix time when the response arrived
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names; empty: the header rules are skipped


@dataclass(frozen=True)
class SegmentFacts:
    """What ffprobe says of one segment: its first and last audio packet's PTS, in 90 kHz ticks, and the PTS of its
    timed ID3 packets (empty: no timed_id3 stream; None: not probed, timed-id3 not checked)."""

    first_pts: int
    last_pts: int
    id3_pts: tuple[int, ...] | None = None


@dataclass(frozen=True)
class RenditionFacts:
    """What one rendition's segments measure: the peak and average bit rate over the segments its media playlist
    lists (bit_rates()), and the CODECS string of ffprobe's profile (codecs_of())."""

    peak: float  # bit/s
    average: float  # bit/s
    codecs: str | None


@dataclass(frozen=True)
class Violation:
    rule: Rule
    message: str
    fetched: float | None = None  # the fetch that showed it, if one did

    def __str__(self) -> str:
        when = "" if self.fetched is None else f" (fetch at {self.fetched:.3f})"
        return f"{self.rule.reference} [{self.rule.code}]{when}: {self.message}"


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float
    pdt: datetime | None
    discontinuity: bool  # has EXT-X-DISCONTINUITY
    discontinuity_number: int  # RFC 8216 6.2.1: the discontinuity sequence number
    title_starts: tuple[float, ...] = ()  # Unix times of the title EXT-X-DATERANGE tags placed before it


@dataclass(frozen=True)
class Version:
    """One parsed playlist version: the values through m3u8, and what only the lines show."""

    snapshot: Snapshot
    media_sequence: int
    discontinuity_sequence: int
    target_duration: float | None
    version: int | None
    independent: bool
    playlist_type: str | None
    endlist: bool
    segments: tuple[Segment, ...]

    @property
    def duration(self) -> float:
        return sum(segment.duration for segment in self.segments)

    def numbered(self) -> Iterable[tuple[int, Segment]]:
        return enumerate(self.segments, start=self.media_sequence)


@dataclass
class Entry:
    """A segment of the station's timeline (every segment any version listed), as first listed."""

    sequence: int
    segment: Segment
    first_seen: float
    last_seen: float
    longest_playlist: float  # the longest duration of a version that listed it (RFC 8216 6.2.2)


class _Report:
    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, code: str, message: str, fetched: float | None = None) -> None:
        """Each (rule, message) once: a defect every version repeats is one violation, at its first fetch."""
        if (code, message) not in self._seen:
            self._seen.add((code, message))
            self.violations.append(Violation(RULES[code], message, fetched))


def parse(snapshot: Snapshot) -> Version:
    playlist = m3u8.loads(snapshot.text)
    segments, number = [], int(playlist.discontinuity_sequence or 0)
    for item in playlist.segments:
        number += 1 if item.discontinuity else 0
        pdt = item.program_date_time
        if pdt is not None and pdt.tzinfo is None:
            pdt = pdt.replace(tzinfo=UTC)  # RFC 8216 4.3.2.6: no time zone means UTC (pdt-format reports it)
        title_starts = tuple(start.timestamp() for daterange in item.dateranges
                             if str(daterange.class_).strip('"') == TITLE_CLASS
                             and (start := _date(f'"{str(daterange.start_date).strip(chr(34))}"')) is not None)
        segments.append(Segment(str(item.uri), float(item.duration), pdt, bool(item.discontinuity), number,
                                title_starts))
    return Version(snapshot, int(playlist.media_sequence or 0), int(playlist.discontinuity_sequence or 0),
                   None if playlist.target_duration is None else float(playlist.target_duration),
                   None if playlist.version is None else int(playlist.version), bool(playlist.is_independent_segments),
                   playlist.playlist_type, bool(playlist.is_endlist), tuple(segments))


def _tag(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name, value


def _check_lines(snapshot: Snapshot, report: _Report) -> None:
    """The rules about the text itself: which tags, how often, in which order, written how."""
    at = snapshot.fetched
    lines = [line.strip() for line in snapshot.text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        report.add("extm3u", f"first line is {lines[0][:40] if lines else 'missing'!r}", at)
    counts: dict[str, int] = {}
    first_uri = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    needs, pending_extinf, seen_discontinuity = 1, False, False
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            if not pending_extinf:
                report.add("extinf", f"segment {line} has no EXTINF of its own", at)
            pending_extinf = False
            continue
        name, value = _tag(line)
        counts[name] = counts.get(name, 0) + 1
        if name == "#EXTINF":
            if not EXTINF_FORMAT.fullmatch(value):
                report.add("extinf", f"EXTINF {value!r} is not <duration>,[<title>]", at)
            elif "." in value.partition(",")[0]:
                needs = max(needs, 3)
            pending_extinf = True
        elif name == "#EXT-X-PROGRAM-DATE-TIME" and not PDT_FORMAT.fullmatch(value):
            report.add("pdt-format", f"EXT-X-PROGRAM-DATE-TIME {value!r} lacks a time zone or milliseconds", at)
        elif name in ("#EXT-X-BYTERANGE", "#EXT-X-I-FRAMES-ONLY"):
            needs = max(needs, 4)
        elif name == "#EXT-X-MAP":
            needs = max(needs, 5)
        elif name == "#EXT-X-DISCONTINUITY":
            seen_discontinuity = True
        elif name in ("#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE") and index > first_uri:
            code = "media-sequence-tag" if name == "#EXT-X-MEDIA-SEQUENCE" else "discontinuity-sequence-tag"
            report.add(code, f"{name[1:]} comes after the first segment", at)
        elif name == "#EXT-X-DISCONTINUITY-SEQUENCE" and seen_discontinuity:
            report.add("discontinuity-sequence-tag", "EXT-X-DISCONTINUITY-SEQUENCE comes after an EXT-X-DISCONTINUITY",
                       at)
        elif name == "#EXT-X-TARGETDURATION" and not DECIMAL_INTEGER.fullmatch(value):
            report.add("target-duration", f"EXT-X-TARGETDURATION {value!r} is not a decimal integer", at)
    version_tags = [_tag(line)[1] for line in lines if line.startswith("#EXT-X-VERSION:")]
    if len(version_tags) != 1:
        report.add("version-once", f"{len(version_tags)} EXT-X-VERSION tags", at)
    elif version_tags[0].isdigit() and int(version_tags[0]) < needs:
        report.add("version-compatible", f"EXT-X-VERSION {version_tags[0]} but the playlist needs {needs}", at)
    for name, code in (("#EXT-X-TARGETDURATION", "target-duration"), ("#EXT-X-MEDIA-SEQUENCE", "media-sequence-tag"),
                       ("#EXT-X-DISCONTINUITY-SEQUENCE", "discontinuity-sequence-tag")):
        if counts.get(name, 0) > 1:
            report.add(code, f"{counts[name]} {name[1:]} tags", at)
    for name, code in (("#EXT-X-TARGETDURATION", "target-duration"), ("#EXT-X-MEDIA-SEQUENCE", "media-sequence-tag"),
                       ("#EXT-X-DISCONTINUITY-SEQUENCE", "discontinuity-sequence-present"),
                       ("#EXT-X-INDEPENDENT-SEGMENTS", "independent-segments")):
        if name not in counts:
            report.add(code, f"no {name[1:]}", at)
    if "#EXT-X-PLAYLIST-TYPE" in counts:
        report.add("no-playlist-type", "EXT-X-PLAYLIST-TYPE in a live playlist", at)
    if "#EXT-X-ENDLIST" in counts:
        report.add("no-endlist", "EXT-X-ENDLIST: the live playlist ended", at)


def attributes(value: str) -> dict[str, str]:
    """An attribute list (RFC 8216 4.2) as written: each name with its value, quotes kept (their types are rules)."""
    found = {}
    for item in ATTRIBUTELISTPATTERN.split(value)[1::2]:
        name, _, raw = item.partition("=")
        found[name.strip()] = raw.strip()
    return found


def _dateranges(text: str) -> list[dict[str, str]]:
    return [attributes(_tag(line.strip())[1]) for line in text.splitlines()
            if line.strip().startswith("#EXT-X-DATERANGE:")]


def _date(value: str) -> datetime | None:
    return datetime.fromisoformat(value.strip('"')) if DATE_TIME.fullmatch(value) else None


def _check_daterange(tag: Mapping[str, str], ids: Sequence[str | None], at: float, report: _Report) -> None:
    """RFC 8216 4.3.2.7 on one EXT-X-DATERANGE, and the project's title class."""
    name = tag.get("ID")
    if name is None:
        report.add("daterange-id", f"EXT-X-DATERANGE without ID: {tag}", at)
    elif ids.count(name) > 1:
        report.add("daterange-id", f"ID {name} on {ids.count(name)} tags", at)
    start = _date(tag.get("START-DATE", ""))
    if start is None:
        report.add("daterange-start-date", f"{name}: START-DATE {tag.get('START-DATE')!r}", at)
    if "END-ON-NEXT" in tag and (tag["END-ON-NEXT"] != "YES" or "CLASS" not in tag
                                 or {"DURATION", "END-DATE"} & tag.keys()):
        report.add("daterange-end-on-next", f"{name}: END-ON-NEXT={tag['END-ON-NEXT']} with "
                   f"{sorted({'CLASS', 'DURATION', 'END-DATE'} & tag.keys())}", at)
    if "END-DATE" in tag:
        end = _date(tag["END-DATE"])
        if end is None or (start is not None and end < start):
            report.add("daterange-end-date", f"{name}: END-DATE {tag['END-DATE']} (START-DATE {start})", at)
    for key in ("DURATION", "PLANNED-DURATION"):
        if key in tag and not (DECIMAL_FLOAT.fullmatch(tag[key]) and float(tag[key]) >= 0):
            report.add("daterange-duration", f"{name}: {key}={tag[key]}", at)
    for key, value in tag.items():
        if key.startswith("X-") and not CLIENT_VALUE.fullmatch(value):
            report.add("daterange-client-attribute", f"{name}: {key}={value}", at)
    if tag.get("CLASS") == f'"{TITLE_CLASS}"' and "X-TITLE" not in tag:
        report.add("title-daterange", f"{name} has no X-TITLE", at)


def _check_dateranges(snapshots: Sequence[Snapshot], report: _Report) -> None:
    """Each version's EXT-X-DATERANGE tags on their own, then each against what its ID carried before."""
    first: dict[str, dict[str, str]] = {}
    for snapshot in snapshots:
        at, tags = snapshot.fetched, _dateranges(snapshot.text)
        if tags and "#EXT-X-PROGRAM-DATE-TIME:" not in snapshot.text:
            report.add("daterange-pdt", "EXT-X-DATERANGE in a playlist without EXT-X-PROGRAM-DATE-TIME", at)
        ids = [tag.get("ID") for tag in tags]
        for tag in tags:
            _check_daterange(tag, ids, at, report)
            if (name := tag.get("ID")) is None:
                continue
            earlier = first.setdefault(name, tag)
            if changed := sorted(key for key in earlier.keys() & tag.keys() if earlier[key] != tag[key]):
                report.add("daterange-stable", f"{name}: " + ", ".join(f"{key} {earlier[key]} -> {tag[key]}"
                                                                         for key in changed), at)


def _check_version(version: Version, target: int | None, report: _Report) -> None:
    """The rules one version shows on its own, from the parsed values."""
    at = version.snapshot.fetched
    declared = version.target_duration
    if target is not None and declared is not None and declared != target:
        report.add("target-configured", f"EXT-X-TARGETDURATION {declared:g}, configured {target}", at)
    for segment in version.segments:
        if declared is not None and math.floor(segment.duration + 0.5) > declared:
            report.add("target-duration", f"{segment.uri}: EXTINF {segment.duration:g} rounds above "
                       f"EXT-X-TARGETDURATION {declared:g}", at)
        if declared is not None and segment.duration > declared + 0.5:
            report.add("extinf-max", f"{segment.uri}: EXTINF {segment.duration:g} > target {declared:g} + 0.5", at)
        if segment.pdt is None:
            report.add("pdt-present", f"{segment.uri} has no EXT-X-PROGRAM-DATE-TIME", at)
        elif (ahead := segment.pdt.timestamp() + segment.duration - at) > AHEAD_TOLERANCE:
            report.add("pdt-not-ahead", f"{segment.uri} ends {ahead:.1f} s after the fetch that listed it", at)


def _same_tags(old: Segment, new: Segment) -> bool:
    return (math.isclose(old.duration, new.duration, abs_tol=1e-9) and old.pdt == new.pdt
            and old.discontinuity == new.discontinuity)


def _check_change(old: Version, new: Version, report: _Report) -> None:
    """RFC 8216 6.2.1 and 6.2.2 between two versions the poller saw one after the other."""
    at = new.snapshot.fetched
    if old.target_duration != new.target_duration:
        report.add("target-constant", f"EXT-X-TARGETDURATION {old.target_duration} -> {new.target_duration}", at)
    if new.media_sequence < old.media_sequence:
        report.add("media-sequence-monotonic", f"EXT-X-MEDIA-SEQUENCE {old.media_sequence} -> {new.media_sequence}",
                   at)
    if new.discontinuity_sequence < old.discontinuity_sequence:
        report.add("discontinuity-sequence", f"EXT-X-DISCONTINUITY-SEQUENCE {old.discontinuity_sequence} -> "
                   f"{new.discontinuity_sequence}", at)
    if old.version != new.version:
        report.add("append-only", f"EXT-X-VERSION {old.version} -> {new.version}", at)
    old_uris = [segment.uri for segment in old.segments]
    new_uris = [segment.uri for segment in new.segments]
    # The kept segments are a tail of the old list that starts the new one; everything after them is new.
    start = old_uris.index(new_uris[0]) if new_uris and new_uris[0] in old_uris else len(old_uris)
    kept = old.segments[start:]
    if [segment.uri for segment in kept] != new_uris[:len(kept)] or set(new_uris[len(kept):]) & set(old_uris):
        report.add("append-only", f"the segments changed other than at the ends: {old_uris} -> {new_uris}", at)
        return
    for before, after in zip(kept, new.segments, strict=False):
        if not _same_tags(before, after):
            report.add("append-only", f"{after.uri} changed its tags: {before} -> {after}", at)
        if before.discontinuity_number != after.discontinuity_number:
            report.add("discontinuity-sequence", f"{after.uri}: discontinuity sequence number "
                       f"{before.discontinuity_number} -> {after.discontinuity_number}", at)
    if start and not new.endlist and new.duration < 3 * (new.target_duration or 0):
        report.add("min-duration", f"removed {start} segment(s) leaving {new.duration:.3f} s < 3 x target", at)


def _title_begins(segment: Segment, offset: float) -> bool:
    """Whether a title EXT-X-DATERANGE placed before `segment` starts `offset` s into it: a segment that begins
    before the station's first title has the title's own tag first, where it begins."""
    if segment.pdt is None:
        return False
    at = segment.pdt.timestamp() + offset
    return any(abs(start - at) <= ID3_AT_START + WALL_CLOCK_TOLERANCE for start in segment.title_starts)


def _pts_difference(later: int, earlier: int) -> int:
    """later - earlier in 90 kHz ticks, across the 33-bit wrap (the nearer way round)."""
    difference = (later - earlier) % PTS_WRAP
    return difference - PTS_WRAP if difference >= PTS_WRAP // 2 else difference


def _wall_clock_pts(pdt: datetime) -> int:
    return round(pdt.timestamp() * PTS_HZ) % PTS_WRAP


def timeline(versions: Sequence[Version]) -> list[Entry]:
    """Every segment any version listed, as first listed (its number too), in the order they were first listed
    (the order of play, while the playlist only grows at its end)."""
    entries: dict[str, Entry] = {}
    for version in versions:
        at = version.snapshot.fetched
        for sequence, segment in version.numbered():
            entry = entries.setdefault(segment.uri, Entry(sequence, segment, at, at, 0.0))
            entry.last_seen = at
            entry.longest_playlist = max(entry.longest_playlist, version.duration)
    return list(entries.values())


def _check_identity(versions: Sequence[Version], report: _Report) -> None:
    """A number names one URI and a URI one number, for good; a URI that left stays gone."""
    uri_of: dict[int, str] = {}
    number_of: dict[str, int] = {}
    gone: set[str] = set()
    listed: set[str] = set()
    for version in versions:
        at = version.snapshot.fetched
        uris = [segment.uri for segment in version.segments]
        for uri in {uri for uri in uris if uris.count(uri) > 1}:
            report.add("uri-unique", f"{uri} is listed {uris.count(uri)} times", at)
        for uri in set(uris) & gone:
            report.add("uri-unique", f"{uri} is listed again after it left", at)
        gone |= listed - set(uris)
        listed = set(uris)
        for sequence, segment in version.numbered():
            if uri_of.setdefault(sequence, segment.uri) != segment.uri:
                report.add("media-sequence-names-one-uri",
                           f"media sequence {sequence} names {segment.uri}, earlier {uri_of[sequence]}", at)
            if number_of.setdefault(segment.uri, sequence) != sequence:
                report.add("media-sequence-names-one-uri",
                           f"{segment.uri} has media sequence {sequence}, earlier {number_of[segment.uri]}", at)


def _check_timeline(entries: Sequence[Entry], facts: Mapping[str, SegmentFacts], report: _Report) -> None:
    """The promises between neighbouring segments: dates and timestamps continue, a jump is marked."""
    for previous, entry in zip(entries, entries[1:], strict=False):
        if entry.sequence != previous.sequence + 1:
            continue  # not neighbours: the poller missed the segments between, or the numbers are wrong
        before, after = previous.segment, entry.segment
        if before.pdt is not None and after.pdt is not None:
            gap = (after.pdt - before.pdt).total_seconds() - before.duration
            if gap < -PDT_TOLERANCE:
                report.add("pdt-monotonic", f"{after.uri} starts {-gap:.3f} s before {before.uri} ends",
                           entry.first_seen)
            if abs(gap) > PDT_TOLERANCE and not after.discontinuity:
                report.add("pdt-continuous", f"{after.uri} is {gap:+.3f} s off the end of {before.uri} without "
                           "EXT-X-DISCONTINUITY", entry.first_seen)
        first, last = facts.get(after.uri), facts.get(before.uri)
        if first is None or last is None:
            continue
        step = _pts_difference(first.first_pts, last.last_pts)
        if step <= 0:
            report.add("media-timestamps", f"{after.uri} starts at PTS {first.first_pts}, not after {before.uri}'s "
                       f"last PTS {last.last_pts} ({step / PTS_HZ:+.3f} s)", entry.first_seen)
        if not after.discontinuity and not 0 < step <= PTS_CONTINUES * PTS_HZ:
            report.add("discontinuity-marked", f"{after.uri}'s PTS jump {step / PTS_HZ:+.3f} s from {before.uri} "
                       "without EXT-X-DISCONTINUITY", entry.first_seen)
    titled = False  # a title EXT-X-DATERANGE came before: a title is in effect from here on
    for entry in sorted(entries, key=lambda entry: entry.sequence):
        known = facts.get(entry.segment.uri)
        titled_here = titled or bool(entry.segment.title_starts)
        titled = titled_here
        if known is not None and known.id3_pts is not None:
            if not known.id3_pts:
                if titled_here:  # before the station's first title, a segment has nothing to carry
                    report.add("timed-id3", f"{entry.segment.uri} has no timed ID3 stream", entry.first_seen)
            elif abs(off := _pts_difference(known.id3_pts[0], known.first_pts) / PTS_HZ) > ID3_AT_START and not (
                    off > 0 and _title_begins(entry.segment, off)):
                report.add("timed-id3", f"{entry.segment.uri}: the first ID3 tag is {off:+.3f} s off the first audio "
                           "PTS, and no title EXT-X-DATERANGE begins there", entry.first_seen)
        if known is not None and entry.segment.pdt is not None:
            off = _pts_difference(known.first_pts, _wall_clock_pts(entry.segment.pdt)) / PTS_HZ
            if abs(off) > WALL_CLOCK_TOLERANCE:
                report.add("pts-wall-clock", f"{entry.segment.uri}: first PTS {known.first_pts} is {off:+.3f} s off "
                           f"its PDT {entry.segment.pdt.isoformat()}", entry.first_seen)


def _excused(start: float, end: float, excused: Iterable[tuple[float, float]]) -> bool:
    return any(start <= until and end >= since for since, until in excused)


def _check_cadence(versions: Sequence[Version], tolerance: float, excused: Sequence[tuple[float, float]],
                   report: _Report) -> None:
    """RFC 8216 6.2.1: the newest segment stayed the newest from its first fetch to its last; the real interval
    between two updates was longer than that, so only that span can prove an update late."""
    stretches: list[tuple[str, float, float, float]] = []  # newest segment, first and last fetch, limit
    for version in versions:
        if version.endlist or not version.segments or version.target_duration is None:
            continue
        newest, at = version.segments[-1].uri, version.snapshot.fetched
        if stretches and stretches[-1][0] == newest:
            stretches[-1] = (newest, stretches[-1][1], at, stretches[-1][3])
        else:
            stretches.append((newest, at, at, 1.5 * version.target_duration + tolerance))
    for newest, first, last, limit in stretches:
        if last - first > limit and not _excused(first, last, excused):
            report.add("update-cadence", f"{newest} stayed the newest segment for at least {last - first:.1f} s "
                       f"(> 1.5 x target + {tolerance:g} s)", last)


def _check_headers(versions: Sequence[Version], excused: Sequence[tuple[float, float]], report: _Report) -> None:
    for version in versions:
        headers, at = version.snapshot.headers, version.snapshot.fetched
        if not headers:
            continue
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type not in PLAYLIST_TYPES:
            report.add("content-type", f"Content-Type {content_type!r}", at)
        if headers.get("content-encoding", "").lower() != "gzip":
            report.add("gzip", f"Content-Encoding {headers.get('content-encoding')!r}", at)
        try:
            age = (parsedate_to_datetime(headers["date"]) - parsedate_to_datetime(headers["last-modified"]))
        except (KeyError, TypeError, ValueError):
            report.add("last-modified", "no valid Date and Last-Modified headers", at)
            continue
        limit = 3 * (version.target_duration or 0)
        if age.total_seconds() > limit and not _excused(at, at, excused):
            report.add("last-modified", f"Last-Modified {age.total_seconds():.0f} s before Date (> {limit:g} s)", at)


def _check_availability(entries: Sequence[Entry], listed: Collection[str], fetch: Callable[[list[str]], set[str]],
                        clock: Callable[[], float], report: _Report) -> None:
    """RFC 8216 6.2.2, counted from the last fetch that still listed the segment: it left after that, so it must
    still be served now if now is within its duration + the longest playlist that listed it."""
    now = clock()
    due = [entry for entry in entries if entry.segment.uri not in listed
           and now < entry.last_seen + entry.segment.duration + entry.longest_playlist]
    served = fetch([entry.segment.uri for entry in due]) if due else set()
    for entry in due:
        if entry.segment.uri not in served:
            report.add("segment-availability", f"{entry.segment.uri} left the playlist after "
                       f"{entry.last_seen:.3f} and is gone {now - entry.last_seen:.1f} s later")


def check(snapshots: Sequence[Snapshot], *, facts: Mapping[str, SegmentFacts] | None = None,
          target_duration: int | None = None, excused: Sequence[tuple[float, float]] = (),
          cadence_tolerance: float = 1.0, fetch: Callable[[list[str]], set[str]] | None = None,
          clock: Callable[[], float] = time.time) -> list[Violation]:
    """Every rule of RULES over one station's playlist versions, in fetch order.

    target_duration: the configured segment length, if target-configured is to be checked.
    excused: (start, end) Unix times of disruptions caused on purpose (a killed FFmpeg, a dropped upstream): a late
    update or a stale Last-Modified within one is not reported (no media to list while there is none).
    cadence_tolerance: seconds allowed on top of 1.5 x the target duration for the fetches' own delays.
    fetch: given removed segment URIs, the set of those the server still serves (segment-availability).
    """
    report = _Report()
    versions = []
    for snapshot in snapshots:
        _check_lines(snapshot, report)
        try:
            versions.append(parse(snapshot))
        except (ValueError, TypeError, AttributeError, KeyError) as error:  # m3u8 on text it cannot read
            report.add("parse", f"m3u8 cannot read it: {error}", snapshot.fetched)
    for version in versions:
        _check_version(version, target_duration, report)
    _check_dateranges(snapshots, report)
    most = 0
    for old, new in zip(versions, versions[1:], strict=False):
        _check_change(old, new, report)
        most = max(most, len(old.segments))
        if most >= MIN_SEGMENTS > len(new.segments):
            report.add("min-segments", f"{len(new.segments)} segments after {most} were listed", new.snapshot.fetched)
    _check_identity(versions, report)
    entries = timeline(versions)
    _check_timeline(entries, facts or {}, report)
    _check_cadence(versions, cadence_tolerance, excused, report)
    _check_headers(versions, excused, report)
    if fetch is not None and versions:
        listed = {segment.uri for segment in versions[-1].segments}
        _check_availability(entries, listed, fetch, clock, report)
    return report.violations


# --- the multivariant playlist ---------------------------------------------------------------------------------------

def bit_rates(version: Version, sizes: Mapping[str, int]) -> tuple[float, float]:
    """The peak (the largest bytes x 8 / EXTINF) and average (all bytes x 8 / all EXTINF) bit rate of the listed
    segments whose size in bytes is known."""
    known = [(sizes[segment.uri], segment.duration) for segment in version.segments
             if segment.uri in sizes and segment.duration > 0]
    if not known:
        return 0.0, 0.0
    return (max(8 * size / duration for size, duration in known),
            8 * sum(size for size, _ in known) / sum(duration for _, duration in known))


def codecs_of(codec_name: str, profile: str) -> str | None:
    """The CODECS entry of what ffprobe says of an audio stream (codec_name, profile), None if the table lacks it."""
    return CODECS.get((codec_name, profile if codec_name == "aac" else ""))


def _variants(snapshot: Snapshot, report: _Report) -> list[tuple[dict[str, str], str]]:
    """Each EXT-X-STREAM-INF's attributes with the URI that follows it; the rules about the lines on the way."""
    at = snapshot.fetched
    lines = [line.strip() for line in snapshot.text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        report.add("extm3u", f"first line is {lines[0][:40] if lines else 'missing'!r}", at)
    if (count := sum(line.startswith("#EXT-X-VERSION:") for line in lines)) != 1:
        report.add("version-once", f"{count} EXT-X-VERSION tags", at)
    if "#EXT-X-INDEPENDENT-SEGMENTS" not in lines:
        report.add("independent-segments", "no EXT-X-INDEPENDENT-SEGMENTS", at)
    variants: list[tuple[dict[str, str], str]] = []
    pending: dict[str, str] | None = None
    for line in lines:
        if not line.startswith("#"):
            if pending is None:
                report.add("stream-inf-uri", f"URI {line} follows no EXT-X-STREAM-INF", at)
            else:
                variants.append((pending, line))
            pending = None
            continue
        name, value = _tag(line)
        if pending is not None:
            report.add("stream-inf-uri", f"{name[1:]} comes between an EXT-X-STREAM-INF and its URI", at)
        if name in MEDIA_TAGS:
            report.add("multivariant-media-tags", f"{name[1:]} in a multivariant playlist", at)
        if name == "#EXT-X-STREAM-INF":
            pending = attributes(value)
    if pending is not None:
        report.add("stream-inf-uri", "the last EXT-X-STREAM-INF has no URI", at)
    return variants


def _check_variant(tag: Mapping[str, str], uri: str, measured: RenditionFacts | None, at: float,
                   report: _Report) -> None:
    bandwidth, average, codecs = tag.get("BANDWIDTH", ""), tag.get("AVERAGE-BANDWIDTH", ""), tag.get("CODECS", "")
    if not DECIMAL_INTEGER.fullmatch(bandwidth):
        report.add("stream-inf-bandwidth", f"{uri}: BANDWIDTH {bandwidth or 'missing'}", at)
    if not DECIMAL_INTEGER.fullmatch(average):
        report.add("stream-inf-average-bandwidth", f"{uri}: AVERAGE-BANDWIDTH {average or 'missing'}", at)
    listed = set(codecs.strip('"').split(",")) if re.fullmatch(r'"[^"\r\n]+"', codecs) else None
    if listed is None:
        report.add("stream-inf-codecs", f"{uri}: CODECS {codecs or 'missing'}", at)
    if {"RESOLUTION", "FRAME-RATE", "VIDEO"} & tag.keys() or any(not name.startswith("mp4a.") for name in listed or ()):
        report.add("audio-only", f"{uri}: {dict(tag)}", at)
    if measured is None:
        return
    if DECIMAL_INTEGER.fullmatch(bandwidth) and int(bandwidth) < measured.peak:
        report.add("bandwidth-peak", f"{uri}: BANDWIDTH {bandwidth} < measured peak {measured.peak:.0f}", at)
    off = abs(int(average) - measured.average) if DECIMAL_INTEGER.fullmatch(average) else 0
    if off > AVERAGE_TOLERANCE * measured.average:
        report.add("average-bandwidth-measured", f"{uri}: AVERAGE-BANDWIDTH {average}, measured "
                   f"{measured.average:.0f}", at)
    if measured.codecs is not None and listed is not None and listed != {measured.codecs}:
        report.add("codecs-measured", f"{uri}: CODECS {codecs}, ffprobe finds {measured.codecs}", at)


def check_multivariant(snapshots: Sequence[Snapshot],
                       renditions: Sequence[Mapping[str, RenditionFacts]] = ()) -> list[Violation]:
    """The rules of a station's multivariant playlist over its versions, in fetch order.

    renditions: for each version (in the same order; none for those past its end), by variant URI as the playlist
    writes it, what that rendition's segments measured when the version was fetched; the measured rules are skipped
    for a URI without them.
    """
    report = _Report()
    for index, snapshot in enumerate(snapshots):
        measured = renditions[index] if index < len(renditions) else {}
        try:
            if not m3u8.loads(snapshot.text).is_variant:
                report.add("parse", "m3u8 reads no EXT-X-STREAM-INF", snapshot.fetched)
        except (ValueError, TypeError, AttributeError, KeyError) as error:  # a required attribute missing
            report.add("parse", f"m3u8 cannot read it: {error}", snapshot.fetched)
        variants = _variants(snapshot, report)
        for tag, uri in variants:
            _check_variant(tag, uri, measured.get(uri), snapshot.fetched, report)
        if variants and variants[0][1] != "index.m3u8":
            report.add("main-first", f"the first variant is {variants[0][1]}", snapshot.fetched)
    return report.violations
