"""Tests of radio_hls/analytics/sessions.py: joining requests without s=, keyed hashes, timeouts, live listeners."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from loglines import T0, line, listening

from radio_hls.analytics.logparse import PLAYLIST, SEGMENT, Aggregator, Networks
from radio_hls.analytics.sessions import DAY_MS, Sessions
from radio_hls.common.contract import SLUG_PATTERN

MINUTE = 60_000
REPO = Path(__file__).resolve().parents[2]


def events_of(sessions: Sessions, *lines: str, cloudflare: Networks | None = None) -> list[dict[str, Any]]:
    aggregator = Aggregator(window_seconds=10)
    aggregator.feed("".join(lines))
    return sessions.assign(aggregator, cloudflare or Networks())


def counts(events: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for event in events:
        key = (event["anonymous_session_id"], event["event_type"])
        totals[key] = totals.get(key, 0) + event["request_count"]
    return totals


def test_segments_without_s_join_the_session_of_their_client() -> None:
    """Players drop the query string when they resolve segment URLs: ffmpeg, hls.js, ExoPlayer."""
    sessions = Sessions()
    lines = []
    for step in range(5):
        lines.append(line(s="sess-1", kind="playlist", msec=T0 + step * 2000))
        lines.append(line(s="", kind="segment", msec=T0 + step * 2000 + 50))
    lines.append(line(s="", kind="segment", msec=T0 + 100, ua="AnotherPlayer"))
    events = events_of(sessions, *lines)
    totals = counts(events)
    assert totals[("sess-1", PLAYLIST)] == 5
    assert totals[("sess-1", SEGMENT)] == 5
    [stranger] = [key for key in totals if key[0] != "sess-1"]
    assert totals[stranger] == 1


def test_a_join_holds_across_runs_within_the_timeout_only() -> None:
    sessions = Sessions(timeout_minutes=5)
    events_of(sessions, line(s="sess-1", kind="playlist", msec=T0))
    state = json.loads(json.dumps(sessions.state()))
    later = Sessions(state, timeout_minutes=5)
    [joined] = events_of(later, line(s="", msec=T0 + 4 * MINUTE))
    assert joined["anonymous_session_id"] == "sess-1"
    [alone] = events_of(later, line(s="", msec=T0 + 10 * MINUTE))
    assert alone["anonymous_session_id"] != "sess-1"


def test_the_join_follows_the_client_address_and_agent() -> None:
    sessions = Sessions()
    events_of(sessions, line(s="sess-1", kind="playlist", remote="198.51.100.1"),
              line(s="sess-2", kind="playlist", remote="198.51.100.2"))
    events = events_of(sessions, line(s="", remote="198.51.100.2", msec=T0 + 1000),
                       line(s="", remote="198.51.100.1", msec=T0 + 1000, slug="other"))
    assert {(e["station_slug"], e["anonymous_session_id"]) for e in events} == {("radio-joy", "sess-2"),
                                                                                 ("other", "sess-1")}


def test_hashed_sessions_are_stable_and_split_after_a_gap() -> None:
    sessions = Sessions(timeout_minutes=5)
    first = events_of(sessions, *listening("", seconds=20))
    ids = {event["anonymous_session_id"] for event in first}
    assert len(ids) == 1
    [session_id] = ids
    assert len(session_id) == 36 and session_id.count("-") == 4  # shaped like the apps' UUIDs
    resumed = Sessions(json.loads(json.dumps(sessions.state())), timeout_minutes=5)
    assert {e["anonymous_session_id"] for e in events_of(resumed, line(s="", msec=T0 + 4 * MINUTE))} == ids
    after_gap = events_of(resumed, line(s="", msec=T0 + 10 * MINUTE))
    assert after_gap[0]["anonymous_session_id"] != session_id


def test_hashed_sessions_differ_by_agent_and_address() -> None:
    sessions = Sessions()
    events = events_of(sessions, line(s=""), line(s="", ua="Other"), line(s="", remote="198.51.100.9"))
    assert len({event["anonymous_session_id"] for event in events}) == 3


def test_the_key_rotates_daily_and_no_raw_address_is_kept() -> None:
    sessions = Sessions()
    [today] = events_of(sessions, line(s="", msec=T0))
    [tomorrow] = events_of(sessions, line(s="", msec=T0 + DAY_MS))
    assert today["anonymous_session_id"] != tomorrow["anonymous_session_id"]
    state = json.dumps(sessions.state())
    assert "203.0.113.7" not in state and "ExoPlayer" not in state
    sessions.prune(T0 + 2 * DAY_MS)
    assert list(sessions.keys) == [str((T0 + DAY_MS) // DAY_MS)]


def test_another_day_key_gives_other_ids() -> None:
    first, second = Sessions(), Sessions()
    assert events_of(first, line(s=""))[0]["anonymous_session_id"] != \
        events_of(second, line(s=""))[0]["anonymous_session_id"]


def test_live_listeners_are_sessions_seen_in_the_last_60_seconds() -> None:
    sessions = Sessions()
    events_of(sessions, line(s="a", msec=T0), line(s="b", msec=T0 + 30_000), line(s="c", slug="other", msec=T0),
              line(s="d", msec=T0 - 61_000))
    assert sessions.listeners(T0 + 1000) == {"other": 1, "radio-joy": 2}
    assert sessions.listeners(T0 + 61_000) == {"radio-joy": 1}
    resumed = Sessions(json.loads(json.dumps(sessions.state())))
    resumed.prune(T0 + 61_000)
    assert resumed.live == {"radio-joy": {"b": T0 + 30_000}}
    assert resumed.listeners(T0 + 95_000) == {}


def test_cloudflare_addresses_are_used_for_the_join() -> None:
    cloudflare = Networks(["173.245.48.0/20"])
    sessions = Sessions()
    events_of(sessions, line(s="sess-1", kind="playlist", remote="173.245.48.1", cf_ip="203.0.113.50"),
              cloudflare=cloudflare)
    [joined] = events_of(sessions, line(s="", remote="173.245.48.2", cf_ip="203.0.113.50", msec=T0 + 1),
                         cloudflare=cloudflare)
    assert joined["anonymous_session_id"] == "sess-1"
    assert joined["ip_address"] == "203.0.113.50"


# --- listeners that share an address and a user agent (carrier NAT, one app) -------------------------------

NAT = "198.51.100.77"
FIVE = [f"listener-{number}" for number in range(1, 6)]


def five_behind_one_address(segments_carry_s: bool) -> list[str]:
    """Five players of one app on one station behind one address, interleaved, 42 s each: 21 playlist and 21
    segment requests apiece, 105 segment requests in all. nginx appends each listener's s= to the segment URIs
    of the playlist it serves it; a player of an older origin's playlist sends its segments without s=."""
    lines = []
    for step in range(21):
        for number, session in enumerate(FIVE):
            msec = T0 + step * 2000 + number * 37
            lines.append(line(s=session, kind="playlist", msec=msec, remote=NAT))
            lines.append(line(s=session if segments_carry_s else "", kind="segment", msec=msec + 20, remote=NAT))
    return lines


def test_five_listeners_behind_one_address_each_get_exactly_their_own_requests() -> None:
    sessions = Sessions()
    totals = counts(events_of(sessions, *five_behind_one_address(segments_carry_s=True)))
    assert totals == {(session, kind): 21 for session in FIVE for kind in (PLAYLIST, SEGMENT)}
    assert sessions.listeners(T0 + 45_000) == {"radio-joy": 5}


def test_five_listeners_across_runs_each_get_exactly_their_own_requests() -> None:
    """The same, read by several runs (the state carries the sessions from one run to the next)."""
    lines = five_behind_one_address(segments_carry_s=True)
    totals: dict[tuple[str, str], int] = {}
    state: dict[str, Any] = {}
    for start in range(0, len(lines), 37):
        sessions = Sessions(json.loads(json.dumps(state)))
        for key, value in counts(events_of(sessions, *lines[start:start + 37])).items():
            totals[key] = totals.get(key, 0) + value
        state = sessions.state()
    assert totals == {(session, kind): 21 for session in FIVE for kind in (PLAYLIST, SEGMENT)}


def test_requests_without_s_are_not_given_to_one_of_several_sessions_of_their_address() -> None:
    """Before nginx put s= on segment URIs, these 105 segment requests went to whichever session had been seen
    last: 2 sessions got them all, 3 got none. Nothing tells five listeners of one app behind one address
    apart, so no s= session gets a request it did not make; they share one session of their own."""
    sessions = Sessions()
    totals = counts(events_of(sessions, *five_behind_one_address(segments_carry_s=False)))
    assert {key: value for key, value in totals.items() if key[0] in FIVE} == {
        (session, PLAYLIST): 21 for session in FIVE}
    [others] = [key for key in totals if key[0] not in FIVE]
    assert others[1] == SEGMENT and totals[others] == 105
    assert sessions.ambiguous > 0


def test_a_request_without_s_joins_the_one_session_of_its_address_on_its_station() -> None:
    sessions = Sessions()
    events_of(sessions, line(s="on-joy", kind="playlist", remote=NAT),
              line(s="on-other", kind="playlist", slug="other", remote=NAT))
    events = events_of(sessions, line(s="", remote=NAT, msec=T0 + 1000),
                       line(s="", slug="other", remote=NAT, msec=T0 + 1000))
    assert {(e["station_slug"], e["anonymous_session_id"]) for e in events} == {("radio-joy", "on-joy"),
                                                                                 ("other", "on-other")}


def test_joins_saved_by_an_older_version_are_dropped() -> None:
    sessions = Sessions({"joins": {"somekey": ["sess-1", T0]}})
    assert sessions.joins == {}
    [event] = events_of(sessions, line(s="", msec=T0 + 1000))
    assert event["anonymous_session_id"] != "sess-1"


# --- the ladder: a listener of any rendition, or of the multivariant playlist, is one listener of the station -----

def slug_of_uri(uri: str) -> str:
    """$hls_slug as the origins' and edges' `map $uri $hls_slug` (templates/macros/nginx.j2) gives it, with the
    contract's slug pattern filled in."""
    template = (REPO / "templates/macros/nginx.j2").read_text(encoding="utf-8")
    pattern = re.search(r'map \$uri \$hls_slug \{\s*default "";\s*"~(.+)" \$slug;', template)
    assert pattern is not None
    found = re.match(pattern.group(1).replace("{{ __hls_common_slug_pattern }}", SLUG_PATTERN).replace("?<", "?P<"),
                     uri)
    return found.group("slug") if found else ""


LADDER_URIS = ["/hls/radio-joy/master.m3u8", "/hls/radio-joy/index.m3u8", "/hls/radio-joy/low/index.m3u8",
               "/hls/radio-joy/low/1795514400000-3.ts", "/hls/radio-joy/1795514400000-3.ts",
               "/hls/radio-joy/mid/index.m3u8", "/hls/radio-joy/mid/1795514400000-4.ts"]


def test_nginx_logs_every_rendition_under_its_station() -> None:
    assert {slug_of_uri(uri) for uri in LADDER_URIS} == {"radio-joy"}
    assert slug_of_uri("/status.json") == ""


def test_a_listener_who_switches_renditions_is_one_listener() -> None:
    # The player reads the multivariant playlist, starts on the main rendition, then moves down the ladder and
    # back: one session, with s= (nginx carries it onto the rendition and segment URIs) or without.
    for s in ("sess-1", ""):
        sessions = Sessions()
        lines = [line(s=s or "sess-0", kind="playlist", uri=LADDER_URIS[0], msec=T0)]
        lines += [line(s=s, slug=slug_of_uri(uri), uri=uri, msec=T0 + 1000 * step)
                  for step, uri in enumerate(LADDER_URIS[1:], start=1)]
        events = events_of(sessions, *lines)
        assert {event["station_slug"] for event in events} == {"radio-joy"}
        assert sessions.listeners(T0 + 10_000) == {"radio-joy": 1}
        assert sum(event["request_count"] for event in events if event["event_type"] == SEGMENT) == 3
        assert sum(event["request_count"] for event in events if event["event_type"] == PLAYLIST) == 4
