"""The conformance checker (tests/conformance/checker.py): a conforming history passes, and for each rule a history
that breaks that rule (and, where one cannot break it alone, the rules it drags along, named here) is reported with
that rule's code. This is each check shown red once."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate

import pytest
from conformance.checker import (
    PTS_HZ,
    PTS_WRAP,
    RULES,
    RenditionFacts,
    SegmentFacts,
    Snapshot,
    bit_rates,
    check,
    check_multivariant,
    codecs_of,
    parse,
)

T = 2  # target duration, s
WINDOW = 6  # segments listed once the playlist is full
START = 1_796_000_000.0  # Unix time of the first segment
FRAME = 0.023  # one AAC frame at 44.1 kHz: the last packet starts this long before a segment ends


@dataclass(frozen=True)
class Seg:
    name: str
    start: float  # Unix time of its first sample: its PTS and, unless shifted, its PDT
    duration: float = T
    discontinuity: bool = False
    pdt_shift: float = 0.0  # s added to the PDT only
    has_pdt: bool = True

    @property
    def end(self) -> float:
        return self.start + self.duration


def runs(start: float = START) -> list[Seg]:
    """Two runs of ten segments: the second begins 3 s after the first ended (an outage), marked."""
    first = [Seg(f"{round(start * 1000)}-{i}.ts", start + i * T) for i in range(10)]
    restart = first[-1].end + 3
    second = [Seg(f"{round(restart * 1000)}-{i}.ts", restart + i * T, discontinuity=i == 0) for i in range(10)]
    return first + second


def pdt(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Title changes (Unix time, ICY StreamTitle): one before the first segment, one inside each run.
TITLES = [(START - 30.5, "Early - One"), (START + 9.0, "Band - Two"), (START + 31.0, "Three")]


def title_tag(start: float, title: str) -> str:
    """The EXT-X-DATERANGE the design writes for a title change."""
    artist, _, song = title.partition(" - ")
    split = f',X-ARTIST="{artist}",X-SONG="{song}"' if song else ""
    return (f'#EXT-X-DATERANGE:ID="title-{round(start * 1000)}",CLASS="net.radio-hls.title",START-DATE="{pdt(start)}",'
            f'END-ON-NEXT=YES,X-TITLE="{title}"{split}')


def render(segs: Sequence[Seg], lo: int, hi: int, titles: Sequence[tuple[float, str]] = ()) -> str:
    """The playlist listing segs[lo:hi] as the design writes it: each title change before the segment it falls
    in, the one in effect at the first listed segment before that."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{T}", f"#EXT-X-MEDIA-SEQUENCE:{lo}",
             f"#EXT-X-DISCONTINUITY-SEQUENCE:{sum(seg.discontinuity for seg in segs[:lo])}",
             "#EXT-X-INDEPENDENT-SEGMENTS"]
    first = segs[lo].start
    kept = [title for title in titles if title[0] <= first][-1:] + [title for title in titles if title[0] > first]
    for seg in segs[lo:hi]:
        lines += [title_tag(*title) for title in kept if title[0] < seg.end and (seg.start == first
                                                                               or title[0] >= seg.start)]
        lines += ["#EXT-X-DISCONTINUITY"] if seg.discontinuity else []
        lines += [f"#EXT-X-PROGRAM-DATE-TIME:{pdt(seg.start + seg.pdt_shift)}"] if seg.has_pdt else []
        lines += [f"#EXTINF:{seg.duration:.3f},", seg.name]
    return "\n".join(lines) + "\n"


def headers(fetched: float, modified: float) -> dict[str, str]:
    return {"content-type": "application/vnd.apple.mpegurl", "content-encoding": "gzip",
            "date": formatdate(fetched, usegmt=True), "last-modified": formatdate(modified, usegmt=True)}


def default_bounds(count: int) -> list[tuple[int, int]]:
    return [(max(0, hi - WINDOW), hi) for hi in range(1, count + 1)]


def history(segs: Sequence[Seg], bounds: Sequence[tuple[int, int]] | None = None,
            edit: Callable[[int, str], str] = lambda index, text: text,
            titles: Sequence[tuple[float, str]] = ()) -> list[Snapshot]:
    """One fetch of each version, 0.2 s after its newest segment ended; edit(index, text) alters a version."""
    snapshots = []
    for index, (lo, hi) in enumerate(bounds or default_bounds(len(segs))):
        fetched = segs[hi - 1].end + 0.2
        text = edit(index, render(segs, lo, hi, titles))
        snapshots.append(Snapshot(text, fetched, headers(fetched, segs[hi - 1].end)))
    return snapshots


def wall(seconds: float) -> int:
    return round(seconds * PTS_HZ) % PTS_WRAP


def facts(segs: Sequence[Seg]) -> dict[str, SegmentFacts]:
    return {seg.name: SegmentFacts(wall(seg.start), wall(seg.end - FRAME)) for seg in segs}


def everything_served(uris: list[str]) -> set[str]:
    return set(uris)


def codes(snapshots: Sequence[Snapshot], segs: Sequence[Seg] | None = None, **options: object) -> set[str]:
    """The codes of the rules the checker reports, with the usual options unless the test sets them."""
    known = facts(segs if segs is not None else runs())
    settings: dict[str, object] = {"facts": known, "target_duration": T, "fetch": everything_served,
                                   "clock": lambda: snapshots[-1].fetched + 1}
    settings.update(options)
    violations = check(snapshots, **settings)  # type: ignore[arg-type]
    return {violation.rule.code for violation in violations}


def replace(segs: list[Seg], index: int, **changes: object) -> list[Seg]:
    segs = list(segs)
    segs[index] = dataclasses.replace(segs[index], **changes)  # type: ignore[arg-type]
    return segs


def shift_pdt_from(segs: list[Seg], index: int, shift: float) -> list[Seg]:
    return segs[:index] + [dataclasses.replace(seg, pdt_shift=shift) for seg in segs[index:]]


def in_version(which: int, edit: Callable[[str], str]) -> Callable[[int, str], str]:
    return lambda index, text: edit(text) if index == which else text


def everywhere(edit: Callable[[str], str]) -> Callable[[int, str], str]:
    return lambda index, text: edit(text)


# --- a conforming history passes -------------------------------------------------------------------------------------

def test_a_conforming_history_with_a_restart_passes():
    segs = runs()
    assert check(history(segs), facts=facts(segs), target_duration=T, fetch=everything_served,
                 clock=lambda: segs[-1].end + 1) == []


def test_timestamps_that_wrap_at_33_bits_still_continue():
    # The first run crosses the 33-bit wrap of the 90 kHz clock (every 26.5 h) in its middle.
    wrap = 18_818 * PTS_WRAP / PTS_HZ
    segs = runs(start=round(wrap - 5 * T))
    assert wall(segs[4].start) > wall(segs[6].start)  # the wrap really lies inside
    assert codes(history(segs), segs) == set()


def test_polled_every_half_second_with_repeated_versions_passes():
    segs = runs()
    once = history(segs)
    twice = [s for snap in once for s in (snap, dataclasses.replace(snap, fetched=snap.fetched + 0.5))]
    assert codes(twice) == set()


def test_every_rule_is_documented_with_its_number():
    from pathlib import Path
    page = (Path(__file__).parents[2] / "docs" / "conformance.md").read_text()
    for rule in RULES.values():
        assert f"| {rule.reference} | `{rule.code}` |" in page, rule


# --- each rule, broken ----------------------------------------------------------------------------------------------

TEXT_EDITS = {
    # rule: (how a version's text is changed, in which versions, what else that necessarily breaks)
    "extm3u": (lambda text: "# comment\n" + text, 8, set()),
    "version-once": (lambda text: text.replace("#EXT-X-VERSION:3", "#EXT-X-VERSION:3\n#EXT-X-VERSION:3"), None, set()),
    "version-compatible": (lambda text: text.replace("#EXT-X-VERSION:3", "#EXT-X-VERSION:2"), None, set()),
    "extinf": (lambda text: text.replace("#EXTINF:2.000,", "#EXTINF:2.000"), 8, set()),
    "pdt-format": (lambda text: text.replace(".000Z", "Z"), 8, set()),
    # m3u8 cannot read a target that is not an integer: the version is lost to the other rules.
    "target-duration": (lambda text: text.replace(f"TARGETDURATION:{T}", f"TARGETDURATION:{T}.0"), 8, {"parse"}),
    "media-sequence-tag": (lambda text: text.replace("#EXT-X-MEDIA-SEQUENCE:2\n", "") + "#EXT-X-MEDIA-SEQUENCE:2\n",
                           7, set()),
    "discontinuity-sequence-tag": (lambda text: text.replace("#EXT-X-DISCONTINUITY-SEQUENCE:0\n", "")
                                   + "#EXT-X-DISCONTINUITY-SEQUENCE:0\n", 8, set()),
    "discontinuity-sequence-present": (lambda text: text.replace("#EXT-X-DISCONTINUITY-SEQUENCE:0\n", ""), 8, set()),
    "independent-segments": (lambda text: text.replace("#EXT-X-INDEPENDENT-SEGMENTS\n", ""), 8, set()),
    "no-playlist-type": (lambda text: text.replace("#EXT-X-INDEPENDENT-SEGMENTS", "#EXT-X-INDEPENDENT-SEGMENTS\n"
                                                   "#EXT-X-PLAYLIST-TYPE:EVENT"), 8, set()),
    "no-endlist": (lambda text: text + "#EXT-X-ENDLIST\n", 8, set()),
    # A kept segment changes its EXTINF by a millisecond.
    "append-only": (lambda text: text.replace("#EXTINF:2.000,\n1796000000000-7.ts",
                                              "#EXTINF:2.001,\n1796000000000-7.ts"), 9, set()),
    # The media sequence goes back (version 7 had 2): every listed number now names another URI.
    "media-sequence-monotonic": (lambda text: text.replace("#EXT-X-MEDIA-SEQUENCE:3", "#EXT-X-MEDIA-SEQUENCE:1"), 8,
                                 {"media-sequence-names-one-uri"}),
    # The last version's numbers are off by one: they grew, but name other URIs.
    "media-sequence-names-one-uri": (lambda text: text.replace("#EXT-X-MEDIA-SEQUENCE:14", "#EXT-X-MEDIA-SEQUENCE:15"),
                                     19, set()),
    # A segment that left comes back at the end: it necessarily gets a second number.
    "uri-unique": (lambda text: text + "#EXT-X-PROGRAM-DATE-TIME:2026-11-30T00:00:00.000Z\n#EXTINF:2.000,\n"
                   "1796000000000-0.ts\n", 19, {"media-sequence-names-one-uri"}),
}


@pytest.mark.parametrize("rule", sorted(TEXT_EDITS))
def test_a_text_that_breaks_one_rule_is_reported_with_its_number(rule):
    edit, which, also = TEXT_EDITS[rule]
    snapshots = history(runs(), edit=everywhere(edit) if which is None else in_version(which, edit))
    assert codes(snapshots) == {rule} | also


def test_a_segment_without_extinf_is_reported():
    # m3u8 drops such a segment; the lines still show it.
    drop = in_version(2, lambda text: text.replace("#EXTINF:2.000,\n1796000000000-2.ts", "1796000000000-2.ts"))
    assert codes(history(runs(), edit=drop)) == {"extinf"}


def test_an_extinf_that_rounds_above_the_target_is_reported():
    # Apple 7.7 (target + 0.5) follows from 4.3.3.1 with an integer target: both are named.
    segs = runs()
    segs = [*segs[:4], dataclasses.replace(segs[4], duration=2.6),
            *[dataclasses.replace(seg, start=seg.start + 0.6) for seg in segs[5:]]]
    assert codes(history(segs), segs) == {"target-duration", "extinf-max"}


def test_a_target_duration_that_changes_is_reported():
    def bigger(index: int, text: str) -> str:
        return text.replace(f"TARGETDURATION:{T}", f"TARGETDURATION:{T + 1}") if index > 9 else text

    # Without a configured target: target-configured would name the change too.
    assert codes(history(runs(), edit=bigger), target_duration=None) == {"target-constant"}


def test_a_target_duration_other_than_configured_is_reported():
    assert codes(history(runs()), target_duration=T + 1) == {"target-configured"}


def test_a_discontinuity_sequence_that_stays_when_its_segment_leaves_is_reported():
    # What FFmpeg's hls muxer does: the EXT-X-DISCONTINUITY leaves, the count stays (here 0 written every time).
    stays = everywhere(lambda text: text.replace("#EXT-X-DISCONTINUITY-SEQUENCE:1", "#EXT-X-DISCONTINUITY-SEQUENCE:0"))
    assert codes(history(runs(), edit=stays)) == {"discontinuity-sequence"}


def test_a_version_removing_segments_below_three_targets_is_reported():
    # Before six segments were ever listed: version 2 drops the first segment and lists one (2 s < 3 x 2 s).
    bounds = default_bounds(20)
    bounds[1] = (1, 2)
    bounds[2:7] = [(1, hi) for hi in range(3, 8)]
    assert codes(history(runs(), bounds)) == {"min-duration"}


def test_fewer_than_six_segments_after_six_were_listed_is_reported():
    bounds = default_bounds(20)
    bounds[9] = (5, 10)  # five segments (10 s: still 3 x target)
    assert codes(history(runs(), bounds)) == {"min-segments"}


def test_a_late_update_is_reported_unless_excused():
    snapshots = history(runs())
    # Version 8 is fetched again 4.2 s later and still the newest: its successor came > 1.5 x 2 s + 1 s after it.
    late = [*snapshots[:9], dataclasses.replace(snapshots[8], fetched=snapshots[8].fetched + 4.2),
            *[dataclasses.replace(snap, fetched=snap.fetched + 4.3) for snap in snapshots[9:]]]
    assert codes(late, fetch=None) == {"update-cadence"}
    outage = (snapshots[8].fetched - 1, snapshots[8].fetched + 10)
    assert codes(late, fetch=None, excused=[outage]) == set()


def test_a_removed_segment_that_is_gone_too_early_is_reported():
    snapshots = history(runs())
    assert codes(snapshots, fetch=lambda uris: set()) == {"segment-availability"}
    # Long after (duration + longest playlist past its last listing) nothing is owed.
    assert codes(snapshots, fetch=lambda uris: set(), clock=lambda: snapshots[-1].fetched + 60) == set()


def test_timestamps_that_go_back_are_reported():
    # Segment 5 starts a new run that continues the timeline (no gap), marked, but its first PTS is 10 ms before
    # the last PTS of segment 4: within the wall-clock tolerance, and backwards.
    segs = replace(runs(), 5, discontinuity=True)
    known = facts(segs)
    known[segs[5].name] = dataclasses.replace(known[segs[5].name], first_pts=known[segs[4].name].last_pts - 900)
    assert codes(history(segs), segs, facts=known) == {"media-timestamps"}


def test_a_timestamp_jump_without_discontinuity_is_reported():
    # Segment 5's first PTS is 0.09 s late (within the wall clock), so 0.113 s after segment 4's last: not a frame.
    segs = runs()
    known = facts(segs)
    known[segs[5].name] = dataclasses.replace(known[segs[5].name], first_pts=wall(segs[5].start + 0.09))
    assert codes(history(segs), segs, facts=known) == {"discontinuity-marked"}


def test_a_missing_program_date_time_is_reported():
    segs = replace(runs(), 4, has_pdt=False)
    assert codes(history(segs), segs) == {"pdt-present"}


def test_program_date_time_going_back_is_reported():
    # From segment 5 on (marked) the PDT is 70 ms earlier: back, though within the wall-clock tolerance.
    segs = shift_pdt_from(replace(runs(), 5, discontinuity=True), 5, -0.07)
    assert codes(history(segs), segs) == {"pdt-monotonic"}


def test_program_date_time_jumping_without_discontinuity_is_reported():
    segs = shift_pdt_from(runs(), 5, 0.07)
    assert codes(history(segs), segs) == {"pdt-continuous"}


def test_segments_from_the_future_are_reported():
    # Each fetch 0.2 s after its newest segment ended; here the timeline (PDT and PTS alike) runs 9 s ahead.
    segs = runs()
    early = [Snapshot(snapshot.text, snapshot.fetched - 9.2, snapshot.headers) for snapshot in history(segs)]
    assert codes(early, segs, clock=lambda: early[-1].fetched + 1) == {"pdt-not-ahead"}
    almost = [Snapshot(snapshot.text, snapshot.fetched - 7.9, snapshot.headers) for snapshot in history(segs)]
    assert codes(almost, segs, clock=lambda: almost[-1].fetched + 1) == set()


def test_timestamps_off_the_wall_clock_are_reported():
    segs = runs()
    late = {name: SegmentFacts((fact.first_pts + PTS_HZ // 5) % PTS_WRAP, (fact.last_pts + PTS_HZ // 5) % PTS_WRAP)
            for name, fact in facts(segs).items()}
    assert codes(history(segs), segs, facts=late) == {"pts-wall-clock"}


@pytest.mark.parametrize(("rule", "change"), [
    ("content-type", {"content-type": "text/plain"}),
    ("gzip", {"content-encoding": "identity"}),
    ("last-modified", {"last-modified": formatdate(START, usegmt=True)}),
])
def test_headers_that_break_a_rule_are_reported(rule, change):
    snapshots = history(runs())
    snapshots[8] = dataclasses.replace(snapshots[8], headers={**snapshots[8].headers, **change})
    assert codes(snapshots) == {rule}


def test_a_stale_last_modified_is_excused_during_an_outage():
    snapshots = history(runs())
    snapshots[8] = dataclasses.replace(snapshots[8], headers={**snapshots[8].headers,
                                                              "last-modified": formatdate(START, usegmt=True)})
    at = snapshots[8].fetched
    assert codes(snapshots, excused=[(at - 1, at + 1)]) == set()


def test_ffmpegs_hls_muxer_after_a_restart_is_reported():
    """What the seed's FFmpeg hls muxer writes: no PDT, no discontinuity sequence, and a new FFmpeg's timestamps
    start again near zero."""
    segs = runs()
    known = facts(segs)
    for index, seg in enumerate(segs):  # each FFmpeg's timestamps start at 1.4 s
        first = 126_000 + index % 10 * T * PTS_HZ
        known[seg.name] = SegmentFacts(first, first + T * PTS_HZ - round(FRAME * PTS_HZ))
    seed = everywhere(lambda text: "\n".join(line for line in text.splitlines()
                                              if not line.startswith(("#EXT-X-PROGRAM-DATE-TIME",
                                                                      "#EXT-X-DISCONTINUITY-SEQUENCE",
                                                                      "#EXT-X-INDEPENDENT-SEGMENTS"))) + "\n")
    assert codes(history(segs, edit=seed), segs, facts=known) == {
        "pdt-present", "discontinuity-sequence-present", "discontinuity-sequence", "independent-segments",
        "media-timestamps"}


# --- hls-playlists' own playlist model through the checker ----------------------------------------------------------

def test_the_playlists_hls_playlists_writes_conform():
    """radio_hls.playlists.model, as hls-playlists drives it (append each finished segment, trim to the window,
    write): runs that continue the timeline, one after a gap, discontinuities leaving the window."""
    from radio_hls.playlists.model import MediaPlaylist

    window = 20.0  # s: ten segments, so discontinuities leave the window within the history
    first = runs()
    third_start = first[-1].end  # a restart that continues the timeline without a gap
    third = [Seg(f"{round(third_start * 1000)}-{i}.ts", third_start + i * T, discontinuity=i == 0) for i in range(12)]
    segs = first + third
    playlist = MediaPlaylist(T, int(START), int(START))
    snapshots = []
    for seg in segs:
        run, _, index = seg.name.removesuffix(".ts").partition("-")
        playlist.append(seg.name, int(run), int(index), seg.start, seg.duration)
        playlist.trim(window)
        snapshots.append(Snapshot(playlist.text(), seg.end + 0.2, headers(seg.end + 0.2, seg.end)))
    assert sum(seg.discontinuity for seg in segs) == 2
    assert codes(snapshots, segs, fetch=None) == set()


def test_the_titles_hls_playlists_writes_conform():
    """The model with title changes (one before the first segment, one inside a segment, one with quotes and no
    artist): every DATERANGE rule holds while the titles leave the window."""
    from radio_hls.playlists.model import MediaPlaylist, Title

    segs = runs()
    changes = [Title(START - 30.5, "Early - One"), Title(START + 9.0, "Band - Two"),
               Title(START + 31.0, 'A "quoted" title')]
    playlist = MediaPlaylist(T, int(START), int(START))
    snapshots = []
    for seg in segs:
        run, _, index = seg.name.removesuffix(".ts").partition("-")
        begins = tuple(title for title in changes if (seg is segs[0] and title.start < seg.end)
                       or seg.start <= title.start < seg.end)
        playlist.append(seg.name, int(run), int(index), seg.start, seg.duration, begins)
        playlist.trim(12.0)
        snapshots.append(Snapshot(playlist.text(), seg.end + 0.2, headers(seg.end + 0.2, seg.end)))
    assert all("#EXT-X-DATERANGE" in snapshot.text for snapshot in snapshots)
    assert codes(snapshots, segs, fetch=None) == set()


def test_the_multivariant_playlist_hls_playlists_writes_conforms():
    from radio_hls.playlists.multivariant import Rendition, measure, multivariant_text

    sizes = [(32_000, 2.0), (33_000, 2.0), (31_000, 2.0)]  # as the three segments render() lists
    peak, average = measure(sizes)
    text = multivariant_text([Rendition("index.m3u8", "mp4a.40.2", peak, average),
                              Rendition("low/index.m3u8", "mp4a.40.2", 56_000, 52_000)])
    version = parse(Snapshot(render(runs(), 0, 3), 0.0))
    measured = bit_rates(version, {seg.uri: size for seg, (size, _) in zip(version.segments, sizes, strict=True)})
    assert measured[0] <= peak and abs(measured[1] - average) < 1
    assert master_codes(text, {"index.m3u8": RenditionFacts(*measured, "mp4a.40.2"), **MEASURED_LOW}) == set()


# --- EXT-X-DATERANGE: the titles in the playlist ---------------------------------------------------------------------

def test_a_history_with_title_changes_passes():
    snapshots = history(runs(), titles=TITLES)
    assert sum("#EXT-X-DATERANGE" in snapshot.text for snapshot in snapshots) == len(snapshots)
    assert any(snapshot.text.count("#EXT-X-DATERANGE") == 2 for snapshot in snapshots)
    assert codes(snapshots) == set()


TWO = 'ID="title-1796000009000"'
DATERANGE_EDITS = {
    # rule: (how a version's text is changed, in which versions (None: all), what else that necessarily breaks)
    # m3u8 cannot read a DATERANGE without ID: those versions are lost to the other rules.
    "daterange-id": (lambda text: text.replace(TWO + ",", ""), None, {"parse"}),
    "daterange-start-date": (lambda text: re.sub(r'START-DATE="([^"]*)\.000Z"', r'START-DATE="\1"', text), None,
                             set()),
    "daterange-stable": (lambda text: text.replace('X-TITLE="Band - Two"', 'X-TITLE="Band - 2"'), 12, set()),
    "daterange-end-on-next": (lambda text: text.replace('CLASS="net.radio-hls.title",', ""), None, set()),
    "daterange-end-date": (lambda text: text.replace("END-ON-NEXT=YES", 'END-DATE="2000-01-01T00:00:00.000Z"'),
                           None, set()),
    "daterange-duration": (lambda text: text.replace("END-ON-NEXT=YES", "DURATION=-1.5"), None, set()),
    "daterange-client-attribute": (lambda text: text.replace("END-ON-NEXT=YES", "END-ON-NEXT=YES,X-COUNT=twelve"),
                                   None, set()),
    # Without any PDT every segment lacks its own too.
    "daterange-pdt": (lambda text: re.sub(r"#EXT-X-PROGRAM-DATE-TIME:.*\n", "", text), None, {"pdt-present"}),
    "title-daterange": (lambda text: re.sub(r',X-TITLE="[^"]*"', "", text), None, set()),
}


@pytest.mark.parametrize("rule", sorted(DATERANGE_EDITS))
def test_a_daterange_that_breaks_one_rule_is_reported(rule):
    edit, which, also = DATERANGE_EDITS[rule]
    snapshots = history(runs(), edit=everywhere(edit) if which is None else in_version(which, edit), titles=TITLES)
    assert codes(snapshots) == {rule} | also


@pytest.mark.parametrize(("rule", "edit"), [
    # The same tag twice in one version: its ID is not unique, though nothing about it changed.
    ("daterange-id", lambda text: re.sub(f"(#EXT-X-DATERANGE:{TWO}.*\n)", r"\1\1", text)),
    ("daterange-end-on-next", lambda text: text.replace("END-ON-NEXT=YES", "END-ON-NEXT=YES,DURATION=10.0")),
    ("daterange-end-on-next", lambda text: text.replace("END-ON-NEXT=YES", "END-ON-NEXT=NO")),
    ("daterange-duration", lambda text: text.replace("END-ON-NEXT=YES", "PLANNED-DURATION=-1")),
    ("daterange-end-date", lambda text: text.replace("END-ON-NEXT=YES", 'END-DATE="the end"')),
])
def test_more_dateranges_that_break_a_rule_are_reported(rule, edit):
    assert codes(history(runs(), edit=everywhere(edit), titles=TITLES)) == {rule}


@pytest.mark.parametrize("edit", [
    lambda text: text.replace("END-ON-NEXT=YES", 'END-DATE="2100-01-01T00:00:00.000Z"'),
    lambda text: text.replace("END-ON-NEXT=YES", "DURATION=1.5,PLANNED-DURATION=0"),
    lambda text: text.replace("END-ON-NEXT=YES", "END-ON-NEXT=YES,X-COUNT=0x0C,X-RATE=1.5,X-NOTE=\"\""),
    lambda text: re.sub(r'START-DATE="([^"]*)Z"', r'START-DATE="\1+01:00"', text),
])
def test_dateranges_within_the_rules_pass(edit):
    assert codes(history(runs(), edit=everywhere(edit), titles=TITLES)) == set()


# --- timed ID3 in the segments -------------------------------------------------------------------------------------

def id3_at(segs: Sequence[Seg], offset: float | None) -> dict[str, SegmentFacts]:
    """The facts with a timed ID3 tag `offset` s after each segment's first PTS (None: no timed ID3 stream)."""
    return {name: dataclasses.replace(fact, id3_pts=() if offset is None else
                                      ((fact.first_pts + round(offset * PTS_HZ)) % PTS_WRAP, fact.last_pts))
            for name, fact in facts(segs).items()}


def test_timed_id3_at_each_segments_start_passes():
    segs = runs()
    assert codes(history(segs), segs, facts=id3_at(segs, 0.0)) == set()
    assert codes(history(segs), segs, facts=id3_at(segs, -0.05)) == set()


@pytest.mark.parametrize("offset", [None, 0.2, -0.2])
def test_timed_id3_missing_or_off_the_start_is_reported(offset):
    segs = runs()
    titled = history(segs, titles=[(segs[0].start - 10, "Artist - Song")])  # a title in effect all along
    assert codes(titled, segs, facts=id3_at(segs, offset)) == {"timed-id3"}


def test_a_segment_that_begins_before_the_first_title_starts_with_its_tag():
    # No title at the segment's start: its first tag is the first title's, where its DATERANGE begins.
    segs = runs()
    first = segs[3]
    titles = [(first.start + 1.3, "Artist - First")]
    late = {name: dataclasses.replace(fact, id3_pts=((fact.first_pts + round(1.3 * PTS_HZ)) % PTS_WRAP,))
            if name == first.name else dataclasses.replace(fact, id3_pts=(fact.first_pts,))
            for name, fact in facts(segs).items()}
    assert codes(history(segs, titles=titles), segs, facts=late) == set()
    # Before it, segments without a tag are right: there was nothing to carry.
    untagged_before = {name: dataclasses.replace(fact, id3_pts=()) if name in {seg.name for seg in segs[:3]}
                       else fact for name, fact in late.items()}
    assert codes(history(segs, titles=titles), segs, facts=untagged_before) == set()
    # Without that DATERANGE, or with the tag elsewhere, it is reported.
    assert codes(history(segs), segs, facts=late) == {"timed-id3"}
    assert codes(history(segs, titles=[(first.start + 0.5, "Artist - First")]), segs, facts=late) == {"timed-id3"}


# --- the multivariant playlist ---------------------------------------------------------------------------------------

MASTER = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=131000,CODECS="mp4a.40.2"
index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=56000,AVERAGE-BANDWIDTH=52000,CODECS="mp4a.40.2"
low/index.m3u8
"""
MEASURED = {"index.m3u8": RenditionFacts(139_000, 130_000, "mp4a.40.2"),
            "low/index.m3u8": RenditionFacts(55_000, 51_000, "mp4a.40.2")}
LOW = "#EXT-X-STREAM-INF:BANDWIDTH=56000,AVERAGE-BANDWIDTH=52000,"
MEASURED_LOW = {"low/index.m3u8": MEASURED["low/index.m3u8"]}


def master_codes(text: str, measured: dict[str, RenditionFacts] = MEASURED) -> set[str]:
    snapshots = [Snapshot(text, START + 2 * index) for index in range(3)]
    return {violation.rule.code for violation in check_multivariant(snapshots, [measured] * len(snapshots))}


def test_a_conforming_multivariant_playlist_passes():
    assert master_codes(MASTER) == set()
    # Within 10 % of the measured average either way; without measurements nothing measured is checked.
    assert master_codes(MASTER.replace("AVERAGE-BANDWIDTH=52000", "AVERAGE-BANDWIDTH=56000")) == set()
    assert master_codes(MASTER.replace("AVERAGE-BANDWIDTH=52000", "AVERAGE-BANDWIDTH=46000")) == set()
    assert master_codes(MASTER.replace("BANDWIDTH=56000", "BANDWIDTH=1"), {}) == set()


MASTER_EDITS = {
    "extm3u": lambda text: text.removeprefix("#EXTM3U\n"),
    "version-once": lambda text: text.replace("#EXT-X-VERSION:3\n", ""),
    "independent-segments": lambda text: text.replace("#EXT-X-INDEPENDENT-SEGMENTS\n", ""),
    "parse": lambda text: text.split("#EXT-X-STREAM-INF")[0],
    "stream-inf-bandwidth": lambda text: text.replace(LOW, "#EXT-X-STREAM-INF:AVERAGE-BANDWIDTH=52000,"),
    "stream-inf-average-bandwidth": lambda text: text.replace("AVERAGE-BANDWIDTH=52000,", ""),
    "stream-inf-codecs": lambda text: text.replace(LOW + 'CODECS="mp4a.40.2"', LOW.rstrip(",")),
    "stream-inf-uri": lambda text: text.replace("low/index.m3u8\n", ""),
    "multivariant-media-tags": lambda text: text.replace("#EXT-X-INDEPENDENT-SEGMENTS\n",
                                                         "#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:2\n"),
    "audio-only": lambda text: text.replace(LOW, LOW + "RESOLUTION=640x360,"),
    "main-first": lambda text: "\n".join([*text.splitlines()[:3], *text.splitlines()[5:], *text.splitlines()[3:5]]),
    "bandwidth-peak": lambda text: text.replace(LOW, LOW.replace("56000", "54000")),
    "average-bandwidth-measured": lambda text: text.replace("AVERAGE-BANDWIDTH=52000", "AVERAGE-BANDWIDTH=57000"),
    "codecs-measured": lambda text: text.replace(LOW + 'CODECS="mp4a.40.2"', LOW + 'CODECS="mp4a.40.5"'),
}


@pytest.mark.parametrize("rule", sorted(MASTER_EDITS))
def test_a_multivariant_playlist_that_breaks_one_rule_is_reported(rule):
    also = {"parse"} if rule == "stream-inf-bandwidth" else set()  # m3u8 cannot read a variant without BANDWIDTH
    assert master_codes(MASTER_EDITS[rule](MASTER)) == {rule} | also


def test_a_uri_without_stream_inf_and_a_tag_before_its_uri_are_reported():
    assert master_codes(MASTER + "extra.m3u8\n") == {"stream-inf-uri"}
    assert master_codes(MASTER.replace("\nlow/", "\n#EXT-X-INDEPENDENT-SEGMENTS\nlow/")) == {"stream-inf-uri"}


def test_bit_rates_and_codecs_are_measured():
    version = parse(history(runs())[5])  # segments 0-5, 2 s each
    sizes = {segment.uri: 32_000 for segment in version.segments} | {version.segments[3].uri: 36_000}
    assert bit_rates(version, sizes) == (144_000, (5 * 32_000 + 36_000) * 8 / 12)
    assert bit_rates(version, {}) == (0.0, 0.0)
    assert [codecs_of("aac", "LC"), codecs_of("aac", "HE-AACv2"), codecs_of("mp3", "unknown")] == [
        "mp4a.40.2", "mp4a.40.29", "mp4a.40.34"]
