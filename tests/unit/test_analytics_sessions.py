"""Tests of files/scripts/hls_sessions.py: joining requests without s=, keyed hashes, timeouts, live listeners."""

from __future__ import annotations

import json
from typing import Any

from loglines import T0, line, listening

from hls_logparse import PLAYLIST, SEGMENT, Aggregator, TrustedProxies
from hls_sessions import DAY_MS, Sessions

MINUTE = 60_000


def events_of(sessions: Sessions, *lines: str, proxies: TrustedProxies | None = None) -> list[dict[str, Any]]:
    aggregator = Aggregator(window_seconds=10)
    aggregator.feed("".join(lines))
    return sessions.assign(aggregator, proxies or TrustedProxies())


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


def test_trusted_proxy_addresses_are_used_for_the_join() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    sessions = Sessions()
    events_of(sessions, line(s="sess-1", kind="playlist", remote="10.0.0.1", cf_ip="203.0.113.50"), proxies=proxies)
    [joined] = events_of(sessions, line(s="", remote="10.0.0.2", cf_ip="203.0.113.50", msec=T0 + 1), proxies=proxies)
    assert joined["anonymous_session_id"] == "sess-1"
    assert joined["ip_address"] == "203.0.113.50"
