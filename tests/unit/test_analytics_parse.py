"""Tests of files/scripts/hls_logparse.py: fields, hostile values, classification, aggregation, events."""

from __future__ import annotations

import random

import pytest
from loglines import T0, UA, line, nginx_escape

from hls_logparse import (
    PLAYLIST,
    SEGMENT,
    Aggregator,
    TrustedProxies,
    build_event,
    clean_session_id,
    client_ip,
    unescape,
)

NO_PROXIES = TrustedProxies()


def feed(*lines: str, window: int = 10) -> Aggregator:
    aggregator = Aggregator(window_seconds=window)
    aggregator.feed("".join(lines))
    return aggregator


def only_event(aggregator: Aggregator) -> dict:
    [(key, aggregate)] = aggregator.by_session.items()
    session_id, slug, kind, _window = key
    return build_event(session_id, slug, kind, aggregate, NO_PROXIES)


# --- unescaping and session ids ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ['"quoted"', "back\\slash", "tab\tnew\nline\r", "\x00\x01\x1f", "ünï€😀",
                                   "\u2028line separator", "\x7f", "", "a" * 5000])
def test_unescape_undoes_nginx_escaping(value: str) -> None:
    assert unescape(nginx_escape(value)) == value


def test_unescape_random_strings_round_trip() -> None:
    rng = random.Random(7)
    alphabet = [chr(code) for code in range(0, 0x80)] + ["é", "€", "\u2028", "😀"]
    for _ in range(500):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert unescape(nginx_escape(value)) == value


def test_unescape_keeps_a_field_nginx_could_not_have_written() -> None:
    assert unescape("broken\\") == "broken\\"
    assert unescape("\\x41") == "\\x41"


def test_unescape_replaces_lone_surrogates() -> None:
    assert unescape("a\\ud800b") == "a?b"


@pytest.mark.parametrize(("raw", "expected"), [
    ("5b0c3f9e-1111-4222-8333-944455556666", "5b0c3f9e-1111-4222-8333-944455556666"),
    ("abc%2Ddef", "abc-def"),
    ("device:1.2_x~", "device:1.2_x~"),
    ("a" * 128, "a" * 128),
    ("a" * 129, None),
    ("x" * 100_000, None),
    ("has space", None),
    ("%22evil%0A", None),
    (nginx_escape('"evil\\'), None),
    ("é", None),
])
def test_clean_session_id(raw: str, expected: str | None) -> None:
    assert clean_session_id(raw) == expected


# --- client address ---------------------------------------------------------------------------------------

CDN = TrustedProxies(["173.245.48.0/20", "2400:cb00::/32"])


@pytest.mark.parametrize(("remote", "peer", "forwarded", "cf", "proxies", "expected"), [
    ("198.51.100.1", "198.51.100.1", "", "", CDN, "198.51.100.1"),
    # Not through a trusted proxy: the headers are whatever the client made up.
    ("198.51.100.1", "198.51.100.1", "203.0.113.9", "203.0.113.8", CDN, "198.51.100.1"),
    ("198.51.100.1", "198.51.100.1", "203.0.113.9", "203.0.113.8", NO_PROXIES, "198.51.100.1"),
    # Through the CDN: CF-Connecting-IP first, then the first X-Forwarded-For address.
    ("173.245.48.5", "173.245.48.5", "203.0.113.9, 173.245.48.5", "203.0.113.8", CDN, "203.0.113.8"),
    ("173.245.48.5", "173.245.48.5", "203.0.113.9, 10.0.0.1", "", CDN, "203.0.113.9"),
    ("173.245.48.5", "173.245.48.5", "not-an-ip, 10.0.0.1", "also bad", CDN, "173.245.48.5"),
    ("2001:db8::1", "2400:cb00::7", "", "2001:DB8:0:0::5", CDN, "2001:db8::5"),
    # nginx's realip module already replaced remote_addr; the peer is the proxy.
    ("203.0.113.9", "173.245.48.5", "203.0.113.9", "", CDN, "203.0.113.9"),
    ("unix:", "unix:", "", "", CDN, None),
])
def test_client_ip(remote: str, peer: str, forwarded: str, cf: str, proxies: TrustedProxies,
                   expected: str | None) -> None:
    assert client_ip(remote, peer, forwarded, cf, proxies) == expected


def test_trusted_proxies_parse_comma_or_space_lists() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8, 192.0.2.1 2400:cb00::/32")
    assert "10.1.2.3" in proxies and "192.0.2.1" in proxies and "2400:cb00::1" in proxies
    assert "192.0.2.2" not in proxies and "garbage" not in proxies
    assert "10.1.2.3" not in TrustedProxies.parse("")


# --- classification and counting --------------------------------------------------------------------------

def test_lines_are_classified_and_counted() -> None:
    aggregator = feed(
        line(kind="playlist"),
        line(kind="segment"),
        line(slug="", uri="/healthz"),                               # health check
        line(slug="", uri="/wp-login.php", status=404),              # bot
        line(slug="no-such", kind="playlist", status=404),           # unknown station
        line(uri="/hls/radio-joy/", status=404),                     # directory
        line(kind="playlist", method="OPTIONS", status=204),         # CORS preflight
        line(kind="segment", method="HEAD"),
        line(kind="segment", status=499),
        line(kind="segment", status=304),
        "only\tthree\tfields\n",
        line(kind="segment").replace(f"{T0 // 1000}.000", "not-a-time"),
        "\n",
    )
    assert aggregator.counts == {"events": 3, "not_hls": 2, "not_media": 1, "method": 2, "status": 2,
                                 "malformed": 2, "invalid_session_id": 0}
    assert aggregator.lines() == 12


def test_requests_of_a_session_are_aggregated_per_type_and_window() -> None:
    aggregator = feed(
        line(kind="playlist", msec=T0, size=300),
        line(kind="playlist", msec=T0 + 2000, size=310),
        line(kind="segment", msec=T0 + 100, size=32000, seconds=0.25),
        line(kind="segment", msec=T0 + 2100, size=33000, seconds=0.5),
        line(kind="segment", msec=T0 + 10_100, size=34000),  # the next 10 s window
        line(kind="segment", msec=T0 + 150, s="other-session"),
        line(kind="segment", msec=T0 + 150, slug="other-station"),
    )
    window = T0 // 10_000
    assert {key: aggregate[:4] for key, aggregate in aggregator.by_session.items()} == {
        ("sess-1", "radio-joy", PLAYLIST, window): [2, 610, 0.002, T0 + 2000],
        ("sess-1", "radio-joy", SEGMENT, window): [2, 65000, 0.75, T0 + 2100],
        ("sess-1", "radio-joy", SEGMENT, window + 1): [1, 34000, 0.001, T0 + 10_100],
        ("other-session", "radio-joy", SEGMENT, window): [1, 1000, 0.001, T0 + 150],
        ("sess-1", "other-station", SEGMENT, window): [1, 1000, 0.001, T0 + 150],
    }
    assert aggregator.anonymous == {}


def test_requests_without_a_valid_s_are_kept_by_client() -> None:
    aggregator = feed(line(s="", kind="segment"), line(s="", kind="segment", msec=T0 + 1),
                      line(s="bad value", kind="segment"), line(s="", kind="segment", ua="Other"))
    assert aggregator.by_session == {}
    assert sorted(aggregate[0] for aggregate in aggregator.anonymous.values()) == [1, 3]
    assert aggregator.counts["invalid_session_id"] == 1
    assert aggregator.counts["events"] == 4


# --- hostile lines ----------------------------------------------------------------------------------------

def test_hostile_values_stay_in_their_field() -> None:
    hostile_ua = 'Evil"\tUA\n{"x":1}\\'
    text = line(kind="segment", ua=hostile_ua, referer="https://x.example/\"\n", ref="")
    assert text.count("\n") == 1 and text.count("\t") == 15
    event = only_event(feed(text))
    assert event["user_agent"] == hostile_ua
    assert event["referer"] == 'https://x.example/"\n'


def test_a_huge_s_is_refused_without_being_kept() -> None:
    huge = "A" * 1_000_000
    aggregator = feed(line(s=huge, kind="playlist"))
    assert aggregator.counts["invalid_session_id"] == 1
    [key] = aggregator.anonymous
    assert huge not in key
    assert aggregator._session_ids == {}


def test_a_session_id_with_quotes_and_newlines_is_refused() -> None:
    aggregator = feed(line(s='x"\n\t', kind="playlist"), line(s="%22%0A", kind="playlist"))
    assert aggregator.by_session == {}
    assert aggregator.counts["invalid_session_id"] == 2


def test_long_user_agent_and_referer_are_cut() -> None:
    event = only_event(feed(line(ua="U" * 5000, ref="R" * 5000)))
    assert event["user_agent"] == "U" * 512
    assert event["referer"] == "R" * 512


def test_invalid_utf8_has_been_replaced_before_parsing() -> None:
    raw = line(ua="Player-XY").encode().replace(b"XY", b"\xff\xfe")
    event = only_event(feed(raw.decode("utf-8", "replace")))
    assert event["user_agent"] == "Player-\ufffd\ufffd"


# --- events -----------------------------------------------------------------------------------------------

def test_event_has_every_field_the_backend_takes() -> None:
    aggregator = feed(line(kind="segment", msec=T0 + 123, size=1000, seconds=0.5, status=200),
                      line(kind="segment", msec=T0 + 4567, size=2000, seconds=0.25, status=206,
                           ref="radio%20crestin", referer="https://ignored.example/"))
    assert only_event(aggregator) == {
        "anonymous_session_id": "sess-1",
        "station_slug": "radio-joy",
        "ip_address": "203.0.113.7",
        "user_agent": UA,
        "timestamp": "2026-11-24T10:00:04.567+00:00",
        "event_type": SEGMENT,
        "bytes_transferred": 3000,
        "request_duration": 0.75,
        "status_code": 206,
        "request_count": 2,
        "referer": "radio crestin",
    }


def test_event_referer_falls_back_to_the_header_and_empty_is_none() -> None:
    assert only_event(feed(line(ref="", referer="https://app.example/")))["referer"] == "https://app.example/"
    event = only_event(feed(line(ref="", referer="", ua="")))
    assert event["referer"] is None and event["user_agent"] is None


def test_event_bytes_fit_a_graphql_int() -> None:
    assert only_event(feed(line(size=2**31), line(size=2**31)))["bytes_transferred"] == 2**31 - 1
