"""Tests of radio_hls/analytics/logparse.py: fields, hostile values, classification, aggregation, events."""

from __future__ import annotations

import random

import pytest
from loglines import T0, UA, line, nginx_escape

from radio_hls.analytics.logparse import (
    PLAYLIST,
    SEGMENT,
    Aggregator,
    Networks,
    Requests,
    clean_session_id,
    client_ip,
    unescape,
)

NO_CLOUDFLARE = Networks()


def feed(*lines: str | bytes, window: int = 10) -> Aggregator:
    aggregator = Aggregator(window_seconds=window)
    aggregator.feed(b"".join(line.encode() if isinstance(line, str) else line for line in lines))
    return aggregator


def only_event(aggregator: Aggregator, cloudflare: Networks = NO_CLOUDFLARE) -> dict:
    [aggregate] = aggregator.by_session.values()
    return Requests(cloudflare).event(aggregate)


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

CLOUDFLARE = Networks(["173.245.48.0/20", "2400:cb00::/32"])
NOBODY = Networks()


@pytest.mark.parametrize(("remote", "peer", "cf", "cloudflare", "expected"), [
    ("198.51.100.1", "198.51.100.1", "", CLOUDFLARE, "198.51.100.1"),
    # A client that connects itself: CF-Connecting-IP is whatever it made up.
    ("198.51.100.1", "198.51.100.1", "203.0.113.8", CLOUDFLARE, "198.51.100.1"),
    ("198.51.100.1", "198.51.100.1", "203.0.113.8", NOBODY, "198.51.100.1"),
    # Behind a trusted proxy that is not Cloudflare: nginx's realip resolved remote_addr (the proxy appended the
    # real address after what the client wrote); a CF-Connecting-IP the client sent through it is not believed.
    ("198.51.100.7", "10.0.0.1", "203.0.113.8", CLOUDFLARE, "198.51.100.7"),
    # Through Cloudflare: its CF-Connecting-IP, whether or not its ranges are also realip's trusted proxies.
    ("173.245.48.5", "173.245.48.5", "203.0.113.8", CLOUDFLARE, "203.0.113.8"),
    ("203.0.113.8", "173.245.48.5", "203.0.113.8", CLOUDFLARE, "203.0.113.8"),
    ("173.245.48.5", "173.245.48.5", "also bad", CLOUDFLARE, "173.245.48.5"),
    ("2001:db8::1", "2400:cb00::7", "2001:DB8:0:0::5", CLOUDFLARE, "2001:db8::5"),
    # Cloudflare's ranges not configured: nobody's CF-Connecting-IP is believed.
    ("173.245.48.5", "173.245.48.5", "203.0.113.8", NOBODY, "173.245.48.5"),
    ("unix:", "unix:", "", CLOUDFLARE, None),
])
def test_client_ip(remote: str, peer: str, cf: str, cloudflare: Networks, expected: str | None) -> None:
    assert client_ip(remote, peer, cf, cloudflare) == expected


def test_a_client_behind_a_trusted_proxy_forges_neither_header() -> None:
    """nginx (set_real_ip_from 10.0.0.0/8, real_ip_recursive) logged remote_addr 198.51.100.7 for a client that
    wrote its own X-Forwarded-For and CF-Connecting-IP; the proxy 10.0.0.1 appended the address it saw."""
    text = line(remote="198.51.100.7", peer="10.0.0.1", forwarded_for="6.6.6.6, 198.51.100.7", cf_ip="6.6.6.7")
    for cloudflare in (NOBODY, CLOUDFLARE):
        assert only_event(feed(text), cloudflare)["ip_address"] == "198.51.100.7"


def test_networks_parse_comma_or_space_lists() -> None:
    networks = Networks.parse("10.0.0.0/8, 192.0.2.1 2400:cb00::/32")
    assert "10.1.2.3" in networks and "192.0.2.1" in networks and "2400:cb00::1" in networks
    assert "192.0.2.2" not in networks and "garbage" not in networks
    assert "10.1.2.3" not in Networks.parse("")


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
    assert event["user_agent"] == 'Evil"UA{"x":1}\\'
    assert event["referer"] == 'https://x.example/"'


# What nginx 1.22 (escape=json) wrote on the molecule host for
#   curl -H $'User-Agent: a\x01b\x7fc\xc2\x85d\xe9' -H $'Referer: http://x/\x02\x1b[31m' \
#       '...?s=abc&ref=%00%01x%7f%C2%85%0A'
# C0 as \u00NN, DEL and the C1 character (UTF-8 C2 85) raw, the byte E9 that is no UTF-8 raw as well.
NGINX_LINE = (b"2026-11-30T03:58:54+00:00\t1796011134.115\tdemo-aac\tabc\t%00%01x%7f%C2%85%0A\t127.0.0.1\t"
              b"127.0.0.1\t\t\tGET\t/hls/demo-aac/index.m3u8\t200\t146\t0.000\t"
              b"a\\u0001b\x7fc\xc2\x85d\xe9\thttp://x/\\u0002\\u001B[31m\n")


def test_control_characters_are_removed_from_ref_user_agent_and_referer() -> None:
    """NUL, which PostgreSQL refuses (and with it the whole batch), and every other C0, DEL or C1 character,
    whether nginx escaped it, wrote it raw or the client percent-encoded it in ref=."""
    event = only_event(feed(NGINX_LINE))
    assert event["user_agent"] == "abcd\ufffd"
    assert event["referer"] == "x"
    assert only_event(feed(NGINX_LINE.replace(b"%00%01x%7f%C2%85%0A", b"")))["referer"] == "http://x/[31m"


@pytest.mark.parametrize("control", [chr(code) for code in (*range(0x20), *range(0x7F, 0xA0))])
def test_every_control_character_goes(control: str) -> None:
    from urllib.parse import quote

    event = only_event(feed(line(ua=f"A{control}B", referer=f"R{control}S", ref=quote(f"x{control}y"))))
    assert (event["user_agent"], event["referer"]) == ("AB", "xy")
    assert only_event(feed(line(ref="", referer=f"R{control}S")))["referer"] == "RS"


def test_a_value_of_control_characters_only_is_none() -> None:
    event = only_event(feed(line(ua="\x00\x1b", ref="%00%7F", referer="\x85")))
    assert event["user_agent"] is None and event["referer"] is None


def test_printable_text_is_kept() -> None:
    kept = "Mozilla/5.0 (Linux; Android 14) ünï€😀 \u00a0\u2028 ~!@#$%^&*()"
    assert only_event(feed(line(ua=kept)))["user_agent"] == kept


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


def test_invalid_utf8_is_replaced_field_by_field_as_in_the_whole_line() -> None:
    raw = line(ua="Player-XY", slug="radio-joy").encode().replace(b"XY", b"\xff\xfe")
    # A sequence cut short by the end of its field: one U+FFFD, as decoding the whole line gives.
    raw = raw.replace(b"\tradio-joy\t", b"\tradio-joy\xe2\x82\t")
    assert "\tradio-joy\ufffd\t" in raw.decode("utf-8", "replace")
    event = only_event(feed(raw))
    assert (event["station_slug"], event["user_agent"]) == ("radio-joy\ufffd", "Player-\ufffd\ufffd")


def test_numbers_in_other_digits_are_read_as_text_reads_them() -> None:
    """int() and float() of text take any script's digits, of bytes only ASCII: such a line still counts."""
    arabic = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    text = line(msec=T0 + 4567, size=1234, seconds=0.25)
    fields = text.split("\t")
    for position in (1, 12, 13):  # msec, body_bytes_sent, request_time
        fields[position] = fields[position].translate(arabic)
    aggregator = feed("\t".join(fields))
    assert aggregator.counts["events"] == 1 and aggregator.counts["malformed"] == 0
    [aggregate] = aggregator.by_session.values()
    assert aggregate[:4] == [1, 1234, 0.25, T0 + 4567]
    assert feed(text.replace(f"\t{(T0 + 4567) // 1000}.567\t", "\t\u0661x.567\t")).counts["malformed"] == 1


def test_a_last_line_without_its_newline_is_read() -> None:
    aggregator = feed(line(kind="playlist"), line(kind="segment").rstrip("\n"))
    assert aggregator.counts["events"] == 2


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
