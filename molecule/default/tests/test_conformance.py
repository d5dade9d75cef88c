"""RFC 8216 and Apple's HLS authoring rules hold at all times, across a kill -9, a restart, an upstream drop and a
watchdog restart: both demo stations' playlists (and, where the host serves them, their `low` rendition's and their
multivariant playlist) are polled through nginx about every second, every new segment's timestamps, timed ID3 and
size read with ffprobe in the host, and every version checked by tests/conformance/checker.py (its rules:
docs/conformance.md)."""

from __future__ import annotations

import dataclasses
import gzip
import os
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from conformance.checker import (
    PTS_HZ,
    PTS_WRAP,
    RenditionFacts,
    SegmentFacts,
    Snapshot,
    Version,
    bit_rates,
    check,
    check_multivariant,
    codecs_of,
    parse,
    timeline,
)
from conftest import STATIONS, station_ready
from test_trust_serving import WATCHDOG_RESTART

PORT = os.environ.get("HLS_MOLECULE_HTTP_PORT", "18080")  # nginx, published on the controller's loopback
SLUGS = [station["slug"] for station in STATIONS]
LADDER = "low"  # molecule.yml's hls_variants: checked where the host serves it
MASTER = "master.m3u8"
MEASURED_ROUNDS = 20  # rounds in which the multivariant playlist's measured rules must be checked
T = 2  # molecule.yml's hls_segment_seconds
WINDOW = 155  # s of polling
POLL = 1.0  # s between two rounds of fetches
# What the test does, when (s into the window), to which station. The feed's stop ends at "feed back".
DISRUPTIONS = [
    (10, "demo-aac", "kill -9", "systemctl kill -s KILL hls@demo-aac"),
    (35, "demo-mp3", "restart", "systemctl restart --no-block hls@demo-mp3"),
    (55, "demo-aac", "upstream drop", "systemctl stop hls-demo-feed@demo-aac"),
    (115, "demo-mp3", "watchdog restart", WATCHDOG_RESTART),
]
FEED_BACK = (75, "systemctl start hls-demo-feed@demo-aac")  # a 20 s drop
# How long after a disruption (after the feed is back, for the drop) a station may list no new segment: RestartSec,
# the start backoff (molecule: up to 8 s), the probe, one segment; measured 2-3 s, 14 s after the drop. Generous: CI
# shares 2 cores. Each disruption of a station is at least this long after the previous one ended.
RECOVERY = 40
# A late update outside the disruptions is reported from 1.5 x T + this: the host's own delays on 2 shared cores.
CADENCE_TOLERANCE = T


@dataclass
class Station:
    """One rendition's media playlist of a station: the main one (index.m3u8) or a ladder's (<name>/index.m3u8)."""

    slug: str
    uri: str = "index.m3u8"  # relative to the multivariant playlist, and to /hls/<slug>/
    snapshots: list[Snapshot] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # fetches that got no playlist
    facts: dict[str, SegmentFacts] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each probed segment
    known: set[str] = field(default_factory=set)  # segment names seen (and probed, or left alone) so far

    @property
    def label(self) -> str:
        return self.slug if self.uri == "index.m3u8" else f"{self.slug}/{self.uri.partition('/')[0]}"

    @property
    def directory(self) -> str:
        return f"/run/hls/{self.label}"


@dataclass
class Multivariant:
    """A station's multivariant playlist, and what each rendition measured in the rounds that fetched it."""

    slug: str
    snapshots: list[Snapshot] = field(default_factory=list)
    measured: list[dict[str, RenditionFacts]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def fetch(path: str) -> Snapshot | str:
    """A playlist (/hls/<path>) through nginx as a player gets it (gzip accepted), or why there was none."""
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/hls/{path}", headers={"Accept-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body, headers = response.read(), {name.lower(): value for name, value in response.headers.items()}
    except (urllib.error.URLError, TimeoutError) as error:
        return f"{path}: {error}"
    fetched = time.time()
    text = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
    return Snapshot(text.decode(), fetched, headers)


def probe(host, wanted: dict[str, list[str]]) -> dict[str, dict[str, tuple[SegmentFacts, int]]]:
    """First and last audio PTS, timed ID3 PTS and size of each named segment of each rendition directory (under
    /run/hls), read in the host with ffprobe (one command for all)."""
    commands = [f"echo {shlex.quote(f'== {label} {name}')}; ffprobe -v error -show_entries "
                f"packet=codec_type,pts:format=size -of csv=p=0 {shlex.quote(f'/run/hls/{label}/{name}')}"
                for label, names in wanted.items() for name in names]
    found: dict[str, dict[str, tuple[SegmentFacts, int]]] = {label: {} for label in wanted}
    if not commands:
        return found
    segment, audio, id3, size = ("", ""), [], [], 0
    for line in [*host.run("; ".join(commands)).stdout.splitlines(), "== "]:
        # A packet is "<codec_type>,<pts>" (one with side data ends in "," and a blank line), the size a number.
        kind, _, pts = line.strip().partition(",")
        pts = pts.strip(",")
        if line.startswith("== "):
            if audio:
                facts = SegmentFacts(audio[0] % PTS_WRAP, audio[-1] % PTS_WRAP, tuple(id3))
                found[segment[0]][segment[1]] = facts, size
            label, _, name = line[3:].partition(" ")
            segment, audio, id3, size = (label, name), [], [], 0
        elif kind == "audio" and pts.isdigit():
            audio.append(int(pts))
        elif kind == "data" and pts.isdigit():
            id3.append(int(pts) % PTS_WRAP)
        elif kind.isdigit() and not pts:
            size = int(kind)
    return found


def codecs(host, station: Station) -> str | None:
    """The CODECS value of what ffprobe finds in the rendition's newest probed segment."""
    newest = max(station.facts, key=lambda name: station.snapshots[-1].text.find(name))
    line = host.run(f"ffprobe -v error -select_streams a:0 -show_entries stream=codec_name,profile -of csv=p=0 "
                    f"{shlex.quote(f'{station.directory}/{newest}')}").stdout.strip().splitlines()
    name, _, profile = (line[0] if line else "").partition(",")
    return codecs_of(name, profile)


def served(host, directory: str):
    """The callback of segment-availability: which of these segments the host still has (nginx serves
    /hls/<slug>/[<rendition>/]<name> from that directory; a file test needs no request under nginx's rate limit)."""
    def still_there(names: list[str]) -> set[str]:
        tests = "; ".join(f"test -e {shlex.quote(name)} && echo {shlex.quote(name)}" for name in names)
        return set(host.run(f"cd {shlex.quote(directory)} && {{ {tests}; true; }}").stdout.split())
    return still_there


def served_here(path: str) -> bool:
    """Whether nginx serves /hls/<path> (the ladder and the multivariant playlist are the lead's newer files)."""
    return isinstance(fetch(path), Snapshot)


def measured(round_: dict[str, tuple[Snapshot, Snapshot]], stations: dict[str, Station]) -> dict[str, RenditionFacts]:
    """What each rendition measured in a round: its playlist, unchanged from before the multivariant playlist's
    fetch to after it (else the two may list other windows), and the size of every segment it lists."""
    facts = {}
    for label, (before, after) in round_.items():
        station = stations[label]
        version = parse(after)
        if before.text == after.text and all(segment.uri in station.sizes for segment in version.segments):
            peak, average = bit_rates(version, station.sizes)
            facts[station.uri] = RenditionFacts(peak, average, None)
    return facts


def poll_through_disruptions(host) -> tuple[dict[str, Station], dict[str, Multivariant],
                                           dict[str, list[tuple[float, str]]]]:
    stations = {station.label: station for slug in SLUGS
                for station in (Station(slug), Station(slug, f"{LADDER}/index.m3u8"))
                if station.uri == "index.m3u8" or served_here(f"{slug}/{station.uri}")}
    masters = {slug: Multivariant(slug) for slug in SLUGS if served_here(f"{slug}/{MASTER}")}
    print("collected:", sorted(stations), "multivariant:", sorted(masters))
    done: dict[str, list[tuple[float, str]]] = {slug: [] for slug in SLUGS}  # when each disruption was done
    pending = sorted([*DISRUPTIONS, (FEED_BACK[0], "demo-aac", "feed back", FEED_BACK[1])])
    start = time.time()

    def fetch_into(station: Station) -> Snapshot | None:
        got = fetch(f"{station.slug}/{station.uri}")
        if isinstance(got, str):
            station.failures.append(got)
            return None
        station.snapshots.append(got)
        return got

    try:
        while (elapsed := time.time() - start) < WINDOW:
            while pending and pending[0][0] <= elapsed:
                _, slug, what, command = pending.pop(0)
                host.check_output(command)
                done[slug].append((time.time(), what))
            before = {label: fetch_into(station) for label, station in stations.items()}
            for slug, master in masters.items():
                # Each rendition again after the multivariant playlist: a round measures only the renditions
                # whose playlist stayed the same around it.
                got = fetch(f"{slug}/{MASTER}")
                if isinstance(got, str):
                    master.failures.append(got)
                    continue
                after = {label: (earlier, fetch_into(station)) for label, station in stations.items()
                         if station.slug == slug and (earlier := before[label]) is not None}
                master.snapshots.append(got)
                master.measured.append(measured({label: (one, two) for label, (one, two) in after.items()
                                                 if two is not None}, stations))
            wanted: dict[str, list[str]] = {}
            for station in stations.values():
                if not station.snapshots:
                    continue
                names = [segment.uri for segment in parse(station.snapshots[-1]).segments]
                new = [name for name in names if name not in station.known]
                # The first fetch may list a long window: its newest two are enough to compare with what follows.
                wanted[station.label] = new if len(station.snapshots) > 1 else new[-2:]
                station.known.update(names)
            for label, probed in probe(host, wanted).items():
                for name, (facts, size) in probed.items():
                    stations[label].facts[name], stations[label].sizes[name] = facts, size
            time.sleep(max(0.0, start + (int(elapsed / POLL) + 1) * POLL - time.time()))
    finally:
        host.run(FEED_BACK[1])
    return stations, masters, done


def excused(done: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """While a disruption lasts and its station recovers: from each one (the drop: until the feed is back) on."""
    spans, dropped = [], None
    for at, what in done:
        if what == "upstream drop":
            dropped = at
        elif what == "feed back" and dropped is not None:
            spans.append((dropped, at + RECOVERY))
        else:
            spans.append((at, at + RECOVERY))
    return spans


def test_playlists_conform_across_kill_restart_upstream_drop_and_watchdog(host):
    for slug in SLUGS:
        station_ready(host, slug)
    # A multivariant playlist follows its renditions' first probe: a few segments more (none for a station whose
    # main rendition has no CODECS the writer knows, MP3).
    deadline = time.monotonic() + 5 * T + 10
    while time.monotonic() < deadline and host.run(" && ".join(
            f"test -e /run/hls/_playlists/{slug}.{MASTER}" for slug in SLUGS)).rc:
        time.sleep(1)
    stations, masters, done = poll_through_disruptions(host)
    report = []

    def add(label: str, violations) -> None:
        # Per rule: how often, and its first two cases (a playlist without PDT has one per segment).
        for code in dict.fromkeys(violation.rule.code for violation in violations):
            cases = [violation for violation in violations if violation.rule.code == code]
            report.extend([f"{label}: {len(cases)} x {cases[0].rule.reference} [{code}]",
                           *(f"    {violation}" for violation in cases[:2])])

    for label, station in stations.items():
        assert not station.failures, station.failures
        add(label, check(station.snapshots, facts=station.facts, target_duration=T, excused=excused(done[station.slug]),
                         cadence_tolerance=CADENCE_TOLERANCE, fetch=served(host, station.directory)))
    for slug, master in masters.items():
        assert not master.failures and master.snapshots, (slug, master.failures)
        found = {station.uri: codecs(host, station) for station in stations.values() if station.slug == slug}
        rounds = [{uri: dataclasses.replace(facts, codecs=found[uri]) for uri, facts in measured_.items()}
                  for measured_ in master.measured]
        # The first minute's rounds lack the sizes of segments listed before the first fetch (only its newest two
        # are probed); the rest outside a disruption measure.
        if (count := sum(bool(measured_) for measured_ in rounds)) < MEASURED_ROUNDS:
            report.append(f"{slug}/{MASTER}: only {count} of {len(rounds)} rounds measured its renditions")
        add(f"{slug}/{MASTER}", check_multivariant(master.snapshots, rounds))
    assert not report, "\n".join(report)

    for station in stations.values():
        label = station.label
        versions: list[Version] = [parse(snapshot) for snapshot in station.snapshots]
        before = {segment.uri for segment in versions[0].segments}
        entries = timeline(versions)
        marked = [index for index, entry in enumerate(entries)
                  if entry.segment.discontinuity and entry.segment.uri not in before]
        disruptions = [(at, what) for at, what in done[station.slug] if what != "feed back"]
        # Each disruption shows as one EXT-X-DISCONTINUITY, first listed after it and before the next one.
        assert len(marked) == len(disruptions), (label, [entries[i].segment.uri for i in marked], disruptions)
        for index, (at, what), following in zip(marked, disruptions, [*disruptions[1:], (float("inf"), "")],
                                                strict=True):
            entry, previous = entries[index], entries[index - 1]
            assert at < entry.first_seen < following[0], (label, what, entry)
            # Across it the timestamps strictly increase (the checker compares them too: here they must be known).
            after, last = station.facts[entry.segment.uri], station.facts[previous.segment.uri]
            assert 0 < (after.first_pts - last.last_pts) % PTS_WRAP < PTS_WRAP // 2, (label, what, last, after)
            print(f"{label} {what}: first new segment listed {entry.first_seen - at:.1f} s later, "
                  f"gap {((after.first_pts - last.last_pts) % PTS_WRAP) / PTS_HZ:.2f} s")
    for slug in SLUGS:
        station_ready(host, slug, min_segments=1)
