"""RFC 8216 and Apple's HLS authoring rules hold at all times, across a kill -9, a restart, an upstream drop and a
watchdog restart: both demo stations' playlists are polled through nginx about every second, every new segment's
timestamps read with ffprobe in the host, and every version checked by tests/conformance/checker.py (its rules:
docs/conformance.md)."""

from __future__ import annotations

import gzip
import os
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from conformance.checker import PTS_HZ, PTS_WRAP, SegmentFacts, Snapshot, Version, check, parse, timeline
from conftest import STATIONS, station_ready
from test_trust_serving import WATCHDOG_RESTART

PORT = os.environ.get("HLS_MOLECULE_HTTP_PORT", "18080")  # nginx, published on the controller's loopback
SLUGS = [station["slug"] for station in STATIONS]
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
    slug: str
    snapshots: list[Snapshot] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # fetches that got no playlist
    facts: dict[str, SegmentFacts] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)  # segment names seen (and probed, or left alone) so far


def fetch(slug: str) -> Snapshot | str:
    """The playlist through nginx as a player gets it (gzip accepted), or why there was none."""
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/hls/{slug}/index.m3u8",
                                     headers={"Accept-Encoding": "gzip"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body, headers = response.read(), {name.lower(): value for name, value in response.headers.items()}
    except (urllib.error.URLError, TimeoutError) as error:
        return f"{slug}: {error}"
    fetched = time.time()
    text = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
    return Snapshot(text.decode(), fetched, headers)


def probe(host, wanted: dict[str, list[str]]) -> dict[str, dict[str, SegmentFacts]]:
    """First and last audio PTS of each named segment of each station, read in the host with ffprobe (one command
    for all)."""
    commands = [f"echo {shlex.quote(f'== {slug} {name}')}; ffprobe -v error -select_streams a:0 "
                f"-show_entries packet=pts -of csv=p=0 {shlex.quote(f'/run/hls/{slug}/{name}')}"
                for slug, names in wanted.items() for name in names]
    found: dict[str, dict[str, SegmentFacts]] = {slug: {} for slug in wanted}
    if not commands:
        return found
    segment, values = ("", ""), []
    for line in [*host.run("; ".join(commands)).stdout.splitlines(), "== "]:
        if line.startswith("== "):
            if values:
                found[segment[0]][segment[1]] = SegmentFacts(values[0] % PTS_WRAP, values[-1] % PTS_WRAP)
            slug, _, name = line[3:].partition(" ")
            segment, values = (slug, name), []
        elif (pts := line.split(",")[0].strip()).isdigit():  # a packet with side data ends "<pts>," and a blank line
            values.append(int(pts))
    return found


def served(host, slug: str):
    """The callback of segment-availability: which of these segments the host still has (nginx serves
    /hls/<slug>/<name> from that directory; a file test needs no request under nginx's rate limit)."""
    def still_there(names: list[str]) -> set[str]:
        tests = "; ".join(f"test -e {shlex.quote(name)} && echo {shlex.quote(name)}" for name in names)
        return set(host.run(f"cd /run/hls/{shlex.quote(slug)} && {{ {tests}; true; }}").stdout.split())
    return still_there


def poll_through_disruptions(host) -> tuple[dict[str, Station], dict[str, list[tuple[float, str]]]]:
    stations = {slug: Station(slug) for slug in SLUGS}
    done: dict[str, list[tuple[float, str]]] = {slug: [] for slug in SLUGS}  # when each disruption was done
    pending = sorted([*DISRUPTIONS, (FEED_BACK[0], "demo-aac", "feed back", FEED_BACK[1])])
    start = time.time()
    try:
        while (elapsed := time.time() - start) < WINDOW:
            while pending and pending[0][0] <= elapsed:
                _, slug, what, command = pending.pop(0)
                host.check_output(command)
                done[slug].append((time.time(), what))
            wanted: dict[str, list[str]] = {}
            for station in stations.values():
                got = fetch(station.slug)
                if isinstance(got, str):
                    station.failures.append(got)
                    continue
                station.snapshots.append(got)
                names = [segment.uri for segment in parse(got).segments]
                new = [name for name in names if name not in station.known]
                # The first fetch may list a long window: its newest two are enough to compare with what follows.
                wanted[station.slug] = new if len(station.snapshots) > 1 else new[-2:]
                station.known.update(names)
            for slug, facts in probe(host, wanted).items():
                stations[slug].facts.update(facts)
            time.sleep(max(0.0, start + (int(elapsed / POLL) + 1) * POLL - time.time()))
    finally:
        host.run(FEED_BACK[1])
    return stations, done


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
    stations, done = poll_through_disruptions(host)
    report = []
    for slug, station in stations.items():
        assert not station.failures, station.failures
        violations = check(station.snapshots, facts=station.facts, target_duration=T, excused=excused(done[slug]),
                           cadence_tolerance=CADENCE_TOLERANCE, fetch=served(host, slug))
        # Per rule: how often, and its first two cases (a playlist without PDT has one per segment).
        for code in dict.fromkeys(violation.rule.code for violation in violations):
            cases = [violation for violation in violations if violation.rule.code == code]
            report += [f"{slug}: {len(cases)} x {cases[0].rule.reference} [{code}]"]
            report += [f"    {violation}" for violation in cases[:2]]
    assert not report, "\n".join(report)

    for slug, station in stations.items():
        versions: list[Version] = [parse(snapshot) for snapshot in station.snapshots]
        before = {segment.uri for segment in versions[0].segments}
        entries = timeline(versions)
        marked = [index for index, entry in enumerate(entries)
                  if entry.segment.discontinuity and entry.segment.uri not in before]
        disruptions = [(at, what) for at, what in done[slug] if what != "feed back"]
        # Each disruption shows as one EXT-X-DISCONTINUITY, first listed after it and before the next one.
        assert len(marked) == len(disruptions), (slug, [entries[i].segment.uri for i in marked], disruptions)
        for index, (at, what), following in zip(marked, disruptions, [*disruptions[1:], (float("inf"), "")],
                                                strict=True):
            entry, previous = entries[index], entries[index - 1]
            assert at < entry.first_seen < following[0], (slug, what, entry)
            # Across it the timestamps strictly increase (the checker compares them too: here they must be known).
            after, last = station.facts[entry.segment.uri], station.facts[previous.segment.uri]
            assert 0 < (after.first_pts - last.last_pts) % PTS_WRAP < PTS_WRAP // 2, (slug, what, last, after)
            print(f"{slug} {what}: first new segment listed {entry.first_seen - at:.1f} s later, "
                  f"gap {((after.first_pts - last.last_pts) % PTS_WRAP) / PTS_HZ:.2f} s")
    for slug in SLUGS:
        station_ready(host, slug, min_segments=1)
