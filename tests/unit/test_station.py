"""Tests of radio_hls/stations/station.py: what may become a unit name, a path, an FFmpeg input or an env line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dotenv import dotenv_values

from radio_hls.stations import station as hls_station
from radio_hls.stations.station import (
    InvalidStation,
    Station,
    check_target,
    clean_title,
    one_line,
    parse_networks,
    quote_env_value,
    redact_url,
    render_env,
    shown,
    station_env,
    station_from_record,
    validate_slug,
    validate_stream_url,
)

STATION_KEYS = ["HLS_STATION_SLUG", "HLS_STATION_ID", "HLS_STATION_TITLE", "HLS_STREAM_URL"]


# --- slugs -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("slug", ["a", "0", "radio-joy", "a1-b2", "a-", "a" * 63, "9" + "-" * 62])
def test_slug_accepted(slug: str) -> None:
    assert validate_slug(slug) == slug


@pytest.mark.parametrize("slug", [
    "../etc", "a/b", "a b", "-rf", "Upper", "rădio", "a" * 64, "a" * 200, "", None, "ok\n", "\nok",
    "a.b", ".", "..", "a_b", "a\x00b", "ａ", "١", 5, ["a"], b"radio",
])
def test_slug_refused(slug: object) -> None:
    with pytest.raises(InvalidStation, match="does not match"):
        validate_slug(slug)


def test_invalid_station_is_a_value_error() -> None:
    assert issubclass(InvalidStation, ValueError)


# --- stream URLs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://joy.example/stream.mp3",
    "https://joy.example:8443/live?x=1&y=2#f",
    "http://user:pa%40ss@joy.example/s",
    "http://203.0.113.7:8000/",
    "http://[2001:db8::1]:8000/s",
    "http://joy.example",
    "http://a_b.joy-fm.example./s",
    "https://joy.example/" + "a" * (2048 - len("https://joy.example/")),
    "https://" + "a." * 126 + "b/",
])
def test_url_accepted(url: str) -> None:
    assert validate_stream_url(url) == url


@pytest.mark.parametrize(("url", "reason"), [
    ("file:///etc/passwd", "scheme 'file'"),
    ("concat:a|b", "scheme 'concat'"),
    ("subfile:,start,0,end,0,:http://x/", "scheme 'subfile'"),
    ("pipe:0", "scheme 'pipe'"),
    ("ftp://x", "scheme 'ftp'"),
    ("rtmp://x/live", "scheme 'rtmp'"),
    ("//joy.example/s", "scheme '(none)'"),
    ("joy.example/s", "scheme '(none)'"),
    ("http://", "no host"),
    ("http:///path", "no host"),
    ("https://:8000/s", "no host"),
    ("http://joy.example/a b", "white space"),
    (" http://joy.example/", "white space"),
    ("http://joy.example/\nX=1", "control"),
    ("http://joy.example/\r", "control"),
    ("http://joy.example/\t", "control"),
    ("http://joy.example/\x00", "control"),
    ("http://joy.example/\x1b[31m", "control"),
    ("http://joy.example/\x7f", "control"),
    ("https://" + "a" * (2049 - len("https://")), "longer than 2048"),
    ("", "missing"),
    (None, "missing"),
    (42, "missing"),
])
def test_url_refused(url: object, reason: str) -> None:
    with pytest.raises(InvalidStation, match=re.escape(reason)):
        validate_stream_url(url)


@pytest.mark.parametrize("url", [
    pytest.param("http://[::1/s", id="unclosed-ipv6-bracket"),
    pytest.param("http://[joy.example]/s", id="bracketed-non-ip"),
    pytest.param("http://user:pw@joy.example:abc/s", id="non-numeric-port"),
    pytest.param("http://user:pw@joy.example:99999/s", id="port-out-of-range"),
])
def test_unparsable_url_is_an_invalid_station(url: str) -> None:
    with pytest.raises(InvalidStation):
        validate_stream_url(url)


@pytest.mark.parametrize(("url", "expected"), [
    # FFmpeg's protocol names are case-sensitive: it cannot open HTTP://, the station would restart forever.
    pytest.param("HTTP://JOY.EXAMPLE/", "http://joy.example/", id="upper-case-scheme-and-host"),
    pytest.param("Https://Joy.Example:8443/Live?Q=A#F", "https://joy.example:8443/Live?Q=A#F", id="path-kept"),
    pytest.param("http://User:PaSS@JOY.example/s", "http://User:PaSS@joy.example/s", id="credentials-kept"),
    # FFmpeg reads an empty port as port 0.
    pytest.param("http://joy.example:/s", "http://joy.example/s", id="empty-port"),
    pytest.param("http://joy.example:0080/s", "http://joy.example:80/s", id="leading-zeros"),
    pytest.param("http://[2001:DB8:0:0::1]:8000/s", "http://[2001:db8::1]:8000/s", id="ipv6-short-form"),
    pytest.param("http://[2001:db8::1]:/s", "http://[2001:db8::1]/s", id="ipv6-empty-port"),
    # FFmpeg would send "GET ?x HTTP/1.1".
    pytest.param("http://joy.example?x=1", "http://joy.example/?x=1", id="query-without-path"),
    pytest.param("http://joy.example#f", "http://joy.example/#f", id="fragment-without-path"),
    pytest.param("http://joy.example/?", "http://joy.example/?", id="empty-query-kept"),
])
def test_url_normalised_to_what_ffmpeg_opens(url: str, expected: str) -> None:
    assert validate_stream_url(url) == expected
    assert validate_stream_url(expected) == expected  # normal already: the env file never changes again


@pytest.mark.parametrize(("url", "reason"), [
    pytest.param("http://joy.example:0/s", "port 0", id="port-0"),
    pytest.param("http://[v1.fe]/s", "is not an IPv6 address", id="ipvfuture"),
    pytest.param("http://[fe80::1%25eth0]/s", "IPv6 zone", id="ipv6-zone"),
    pytest.param("http://[2001:db8::1]x/s", "between the IPv6 address and the port", id="after-bracket"),
    pytest.param("http://joy%2eexample/s", "not a host name FFmpeg can resolve", id="percent-escape"),
    pytest.param("http://rădio.example/s", "not a host name FFmpeg can resolve", id="non-ascii"),
    pytest.param("http://joy..example/s", "not a host name FFmpeg can resolve", id="empty-label"),
    pytest.param("http://-joy.example/s", "not a host name FFmpeg can resolve", id="leading-hyphen"),
    pytest.param("http://joy-.example/s", "not a host name FFmpeg can resolve", id="trailing-hyphen"),
    pytest.param("http://joy!.example/s", "not a host name FFmpeg can resolve", id="punctuation"),
    pytest.param("http://" + "a" * 64 + ".example/", "not a host name FFmpeg can resolve", id="label-64"),
    pytest.param("http://" + "a." * 127 + "b/", "not a host name FFmpeg can resolve", id="host-255"),
    # getaddrinfo() reads all of these as 127.0.0.1 (inet_aton), whatever they look like.
    pytest.param("http://127.1/s", "not a dotted-quad IPv4", id="short-ipv4"),
    pytest.param("http://2130706433/s", "not a dotted-quad IPv4", id="decimal-ipv4"),
    pytest.param("http://0x7f.0.0.1/s", "not a dotted-quad IPv4", id="hex-ipv4"),
    pytest.param("http://0177.0.0.1/s", "not a dotted-quad IPv4", id="octal-ipv4"),
    pytest.param("http://1.2.3.4./s", "not a dotted-quad IPv4", id="ipv4-trailing-dot"),
    pytest.param("http://256.1.1.1/s", "not a dotted-quad IPv4", id="ipv4-out-of-range"),
])
def test_url_ffmpeg_cannot_open_is_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidStation, match=re.escape(reason)):
        validate_stream_url(url)


def test_refused_host_is_shown_short() -> None:
    with pytest.raises(InvalidStation) as caught:
        validate_stream_url("http://" + "a" * 300 + "!/")
    assert len(str(caught.value)) < 250
    assert "(301 characters)" in str(caught.value)


# --- internal targets --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "kind"), [
    ("http://127.0.0.1:8000/s", "loopback"),
    ("http://127.8.9.10/s", "loopback"),
    ("http://0.0.0.0:8000/s", "unspecified"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.1.2.3/s", "private"),
    ("http://172.16.0.1/s", "private"),
    ("http://172.31.255.255/s", "private"),
    ("http://192.168.1.1/s", "private"),
    ("http://100.100.100.200/s", "shared (carrier NAT)"),
    ("http://[::1]:8000/s", "loopback"),
    ("http://[::]/s", "unspecified"),
    ("http://[fe80::1]/s", "link-local"),
    ("http://[fd00:ec2::254]/s", "private (unique local)"),
    ("http://[::ffff:169.254.169.254]/s", "link-local"),
    ("http://localhost:8000/s", "loopback"),
    ("http://LOCALHOST./s", "loopback"),
    ("http://radio.localhost/s", "loopback"),
    ("http://ip6-localhost/s", "loopback"),
    ("http://localhost.localdomain/s", "loopback"),
])
def test_internal_target_refused(url: str, kind: str) -> None:
    with pytest.raises(InvalidStation, match=re.escape(f"an internal address ({kind}); list its network in "
                                                       "hls_upstream_allowed_networks")):
        check_target(validate_stream_url(url))


@pytest.mark.parametrize("url", [
    "http://172.32.0.1/s", "http://11.0.0.1/s", "http://8.8.8.8/s", "http://203.0.113.7:8000/",
    "http://[2001:db8::1]/s", "http://joy.example/s", "http://localhost.example/s", "http://mylocalhost/s",
])
def test_public_target_accepted(url: str) -> None:
    check_target(validate_stream_url(url))


@pytest.mark.parametrize(("allowed", "url", "accepted"), [
    ("127.0.0.1/32", "http://127.0.0.1:8000/s", True),
    ("127.0.0.1/32", "http://localhost:8000/s", True),
    ("127.0.0.1/32", "http://[::ffff:127.0.0.1]:8000/s", True),
    ("127.0.0.1/32", "http://127.0.0.2:8000/s", False),
    ("127.0.0.1/32", "http://[::1]:8000/s", False),
    ("::1/128", "http://localhost:8000/s", True),
    ("10.0.0.0/8, 192.168.7.0/24", "http://10.1.2.3/s", True),
    ("10.0.0.0/8 192.168.7.0/24", "http://192.168.7.9/s", True),
    ("10.0.0.0/8 192.168.7.0/24", "http://192.168.8.9/s", False),
    ("10.0.0.0/8", "http://169.254.169.254/s", False),
    ("fd00::/8", "http://[fd00:ec2::254]/s", True),
    ("0.0.0.0/0", "http://[fd00:ec2::254]/s", False),  # an IPv4 network never holds an IPv6 address
    ("", "http://127.0.0.1/s", False),
])
def test_allowed_networks(allowed: str, url: str, accepted: bool) -> None:
    networks = parse_networks(allowed)
    if accepted:
        check_target(validate_stream_url(url), networks)
    else:
        with pytest.raises(InvalidStation, match="internal address"):
            check_target(validate_stream_url(url), networks)


def test_parse_networks() -> None:
    assert [str(n) for n in parse_networks(" 127.0.0.1, 10.1.2.3/8\tfd00::/8 ")] == [
        "127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP network"):
        parse_networks("127.0.0.1/32 10.0.0.0/33")


# --- what outside values look like in a log line -----------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("radio-joy", "'radio-joy'"),
    ("a\nERROR forged line", "'a\\nERROR forged line'"),
    ("\x1b[31mred", "'\\x1b[31mred'"),
    ("line\u2028sep", "'line\\u2028sep'"),
    ("s" * 78, "'" + "s" * 78 + "'"),
    ("s" * 81, "'" + "s" * 79 + "... (81 characters)"),
    ("\x1b" * 40, "'" + "\\x1b" * 19 + "\\x1... (40 characters)"),
    (None, "None"),
    (["x"] * 40, ("[" + "'x', " * 16)[:80] + "... (200 characters)"),
])
def test_shown(value: object, expected: str) -> None:
    assert shown(value) == expected


def test_one_line_escapes_and_truncates() -> None:
    assert one_line("Unauthorized\nERROR forged\r\x1b[2J") == "Unauthorized\\nERROR forged\\r\\x1b[2J"
    assert one_line("é ü ✓") == "é ü ✓"
    assert one_line("x" * 600) == "x" * 500 + "... (600 characters)"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://user:secret@joy.example/s?q=1", "http://***@joy.example/s?***"),
    ("https://user:secret@joy.example:8443/live", "https://***@joy.example:8443/live"),
    ("http://onlyuser@joy.example/s", "http://***@joy.example/s"),
    ("http://:secret@joy.example/s", "http://***@joy.example/s"),
    ("http://joy.example:8000/s", "http://joy.example:8000/s"),
    # Stream tokens travel in the query string (and sometimes the fragment): logs keep neither.
    ("http://joy.example:8000/s?token=secret&user=x", "http://joy.example:8000/s?***"),
    ("http://joy.example/s#secret", "http://joy.example/s#***"),
    ("http://user:secret@[2001:db8::1]:8000/s?secret", "http://***@[2001:db8::1]:8000/s?***"),
    ("http://joy.example?secret", "http://joy.example?***"),
    ("http://[::1/s?secret", "(a URL that cannot be parsed)"),
])
def test_redact_url_hides_credentials_and_tokens(url: str, expected: str) -> None:
    redacted = redact_url(url)
    assert redacted == expected
    assert "secret" not in redacted and "user" not in redacted


@pytest.mark.parametrize(("first", "second", "same"), [
    ("http://joy.example/a", "http://joy.example:80/b?x", True),
    ("https://joy.example/a", "https://JOY.example:443/b", True),
    ("http://u:p@joy.example/a", "http://joy.example/b", True),
    # Strict where a looser reading would let credentials travel: the trailing dot's host is another host.
    ("http://joy.example./a", "http://joy.example/b", False),
    ("http://joy.example/a", "https://joy.example/a", False),
    ("http://joy.example/a", "http://joy.example:8000/a", False),
    ("http://joy.example/a", "http://cdn.joy.example/a", False),
    ("http://127.0.0.1/a", "http://localhost/a", False),
])
def test_origin(first: str, second: str, same: bool) -> None:
    assert (hls_station.origin(first) == hls_station.origin(second)) == same


@pytest.mark.parametrize("url", ["http://joy.example:bad/a", "http://joy.example:99999/a"])
def test_origin_of_a_port_that_cannot_be_read_is_an_error_not_the_default_port(url: str) -> None:
    with pytest.raises(ValueError, match="[Pp]ort"):
        hls_station.origin(url)


# --- records -----------------------------------------------------------------------------------------------

def test_station_from_record() -> None:
    record = {"id": 7, "slug": "radio-joy", "stream_url": "http://joy.example/s", "title": "  Joy\x1b\n FM  ",
              "generate_hls_stream": True, "disabled": False}
    assert station_from_record(record) == Station("radio-joy", "http://joy.example/s", "Joy   FM", 7)


@pytest.mark.parametrize(("record", "message"), [
    ({"slug": "radio-joy", "stream_url": "file:///etc/passwd"}, "radio-joy: stream_url scheme 'file'"),
    ({"slug": "radio-joy", "stream_url": "http://x/", "id": "7"}, "radio-joy: id '7' is not an integer"),
    ({"slug": "radio-joy", "stream_url": "http://x/", "id": True}, "radio-joy: id True is not an integer"),
    ({"slug": "../x", "stream_url": "http://x/"}, "does not match"),
    (["radio-joy"], "is a list, not an object"),
    ({"slug": "radio-joy", "stream_url": "http://x/", "variants": "low:48k"}, "radio-joy: variants is not a list"),
    ({"slug": "radio-joy", "stream_url": "http://x/", "variants": [{"name": "low"}]},
     "radio-joy: a rendition has no bitrate"),
    ({"slug": "radio-joy", "stream_url": "http://x/", "variants": [{"name": "master", "bitrate": "48k"}]},
     "radio-joy: rendition name 'master' does not match"),
    ({"slug": "radio-joy", "stream_url": "http://x/", "variants": [{"name": "low", "bitrate": "48k",
                                                                    "sample_rate": 44000}]},
     "radio-joy: low: sample rate '44000' is not one"),
    # A value with a separator in it stays one (refused) rendition.
    ({"slug": "radio-joy", "stream_url": "http://x/", "variants": [{"name": "low", "bitrate": "48k,mid:64k"}]},
     "radio-joy: 'low:48k,mid:64k:2:44100' is not name:bitrate"),
    ({"slug": "radio-joy", "stream_url": "http://x/", "variants": [{"name": "low", "bitrate": "48k"},
                                                                    {"name": "low", "bitrate": "64k"}]},
     "radio-joy: rendition name 'low' is used more than once"),
])
def test_station_from_record_refuses(record: object, message: str) -> None:
    with pytest.raises(InvalidStation) as caught:
        station_from_record(record)
    assert message in str(caught.value)


@pytest.mark.parametrize(("title", "expected"), [
    (None, ""), (12, ""), ("T" * 250, "T" * 200), ("\tA\x00B\x7f ", "A B"),
])
def test_clean_title(title: object, expected: str) -> None:
    assert clean_title(title) == expected


# --- env files ---------------------------------------------------------------------------------------------

HOSTILE_TITLES = [
    'Radio "Joy"',
    "it's",
    "back\\slash",
    "\\n is not a newline",
    'a\\"b',
    '\\"',
    "$HOME ${HOME} $(reboot) `id`",
    "a=b",
    "X=1",
    '" X=1',
    '"\nX=1',
    "#not a comment",
    "title # with comment",
    "   padded   ",
    "ünïcödé \u2028 line sep \u0085 nel",
    "",
]
HOSTILE_URLS = [
    'http://joy.example/s?a=1&b="2"',
    "http://joy.example/$HOME/${PATH}?x=`id`",
    "http://joy.example/#frag",
    "http://joy.example/a=b?X=1",
    "http://joy.example/'\"'",
]


def parse_env(tmp_path: Path, content: str) -> dict[str, str | None]:
    path = tmp_path / "station.env"
    path.write_text(content, encoding="utf-8")
    return dotenv_values(path, interpolate=False)


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_env_round_trip_hostile_title(tmp_path: Path, title: str) -> None:
    station = Station("radio-joy", "http://joy.example/s", clean_title(title), 7)
    values = parse_env(tmp_path, station_env(station, {"HLS_CODEC": "copy"}))
    assert values == {
        "HLS_STATION_SLUG": "radio-joy",
        "HLS_STATION_ID": "7",
        "HLS_STATION_TITLE": clean_title(title),
        "HLS_STREAM_URL": "http://joy.example/s",
        "HLS_CODEC": "copy",
    }


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_env_round_trip_hostile_url(tmp_path: Path, url: str) -> None:
    station = Station("radio-joy", validate_stream_url(url), "Joy", None)
    values = parse_env(tmp_path, station_env(station, {"HLS_SEGMENT_SECONDS": "6"}))
    assert values == {
        "HLS_STATION_SLUG": "radio-joy",
        "HLS_STATION_ID": "",
        "HLS_STATION_TITLE": "Joy",
        "HLS_STREAM_URL": url,
        "HLS_SEGMENT_SECONDS": "6",
    }


@pytest.mark.parametrize(("title", "url"), [
    pytest.param("Joy\\", "http://joy.example/s", id="title-ends-in-backslash"),
    pytest.param("Joy\\\\", "http://joy.example/s", id="title-ends-in-two-backslashes"),
    pytest.param("Joy", "http://joy.example/s\\", id="url-ends-in-backslash"),
])
def test_env_round_trip_trailing_backslash(tmp_path: Path, title: str, url: str) -> None:
    # python-dotenv cannot read a value ending in a backslash back: URLs with one are refused and
    # titles lose theirs, so the next variable can never be swallowed.
    if "\\" in url:
        with pytest.raises(InvalidStation, match="backslash"):
            validate_stream_url(url)
        return
    station = Station("radio-joy", validate_stream_url(url), clean_title(title), 1)
    values = parse_env(tmp_path, station_env(station, {"HLS_CODEC": "auto"}))
    assert values == {"HLS_STATION_SLUG": "radio-joy", "HLS_STATION_ID": "1",
                      "HLS_STATION_TITLE": title.replace("\\", "/"), "HLS_STREAM_URL": url, "HLS_CODEC": "auto"}


def test_quote_env_value_refuses_backslashes() -> None:
    with pytest.raises(ValueError, match="backslashes"):
        quote_env_value("a\\")


def test_render_env_shape() -> None:
    text = render_env({"A": 'x"y', "B": "c'd", "N": 3})  # type: ignore[dict-item]
    assert text == ('# Written by hls-sync: edit the station in the backend or inventory, not here.\n'
                    'A="x\\"y"\nB="c\'d"\nN="3"\n')


def test_a_station_with_its_own_renditions_overrides_the_deployments() -> None:
    record = {"slug": "radio-joy", "stream_url": "http://joy.example/s",
              "variants": [{"name": "low", "bitrate": "48k", "channels": 1}, {"name": "mid", "bitrate": "64k"}]}
    station = station_from_record(record)
    assert station.variants == "low:48k:1:44100,mid:64k:2:44100"
    text = station_env(station, {"HLS_CODEC": "copy", "HLS_VARIANTS": "hi:96k:2:44100"})
    assert 'HLS_VARIANTS="low:48k:1:44100,mid:64k:2:44100"' in text.splitlines() and text.count("HLS_VARIANTS") == 1
    # An empty list: no ladder for this station, whatever the deployment's.
    empty = station_from_record({**record, "variants": []})
    assert 'HLS_VARIANTS=""' in station_env(empty, {"HLS_VARIANTS": "hi:96k:2:44100"}).splitlines()
    # Without its own: the deployment's.
    plain = station_from_record({"slug": "radio-joy", "stream_url": "http://joy.example/s"})
    assert 'HLS_VARIANTS="hi:96k:2:44100"' in station_env(plain, {"HLS_VARIANTS": "hi:96k:2:44100"}).splitlines()


def test_station_env_key_order() -> None:
    # The station's own keys first, then the deployment-wide settings, each once.
    text = station_env(Station("radio-joy", "http://joy.example/s"), {"HLS_CODEC": "copy", "HLS_AAC_BITRATE": "96k"})
    keys = [line.split("=", 1)[0] for line in text.splitlines()[1:]]
    assert keys == STATION_KEYS + ["HLS_CODEC", "HLS_AAC_BITRATE"]


@pytest.mark.parametrize("value", ["a\nB=1", "a\rb", "a\x00", "\x1b[2J", "tab\there", "del\x7f"])
def test_control_characters_in_env_value_raise(value: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        quote_env_value(value)
    with pytest.raises(ValueError, match="control characters"):
        station_env(Station("radio-joy", "http://joy.example/s"), {"HLS_CODEC": value})


@pytest.mark.parametrize(("url", "bare", "userinfo"), [
    ("http://joy.example/s", "http://joy.example/s", None),
    ("http://user:p%40ss@joy.example:8000/s?x=1", "http://joy.example:8000/s?x=1", "user:p@ss"),
    ("https://onlyuser@joy.example/s", "https://joy.example/s", "onlyuser:"),
])
def test_split_credentials(url: str, bare: str, userinfo: str | None) -> None:
    assert hls_station.split_credentials(url) == (bare, userinfo)
