"""Tests of radio_hls/nowplaying/icy.py's parsing of hostile metadata blocks and titles (what an upstream sends is
outside input: it reaches now-playing.json, the journal and `hlsctl status` on an operator's terminal)."""

from __future__ import annotations

import random
import re

import pytest

from radio_hls.nowplaying.icy import decode, parse_fields, printable, split_title

# The grammar as one regular expression, as hls_icy had it: right on short blocks, quadratic on long hostile ones
# (64 ms for one 4 KiB block of repeated a='), so it is only the reference of what a block means.
REFERENCE = re.compile(r"([A-Za-z]+)='(.*?)';(?=[A-Za-z]+='|\s*$)", re.DOTALL)
# The largest block ICY can carry: a length byte of 255, in 16-byte units.
LARGEST_BLOCK = 255 * 16


def reference_fields(block: bytes) -> dict[str, str]:
    return {key: value for key, value in REFERENCE.findall(decode(block))}


def test_parse_fields_means_what_the_grammar_means() -> None:
    # Short blocks of the characters that matter to the grammar, in every order a seeded generator finds.
    generator = random.Random(20240610)
    alphabet = ["a", "B", "=", "'", ";", " ", "\n", "é", "\0", "1"]
    for _ in range(20000):
        block = "".join(generator.choice(alphabet) for _ in range(generator.randint(0, 16))).encode()
        assert parse_fields(block) == reference_fields(block), block


@pytest.mark.parametrize(("unit", "expected"), [
    # No value ever ends: nothing to read (the regular expression looked for an end from every a=').
    ("a='", {}),
    ("a=';", {"a": ";a="}),  # a=' ;a=' ;a=' ...: every field is a with the value ;a=
    ("';", {}),
    ("='", {}),
    ("a", {}),
])
def test_hostile_blocks_of_the_largest_size(unit: str, expected: dict[str, str]) -> None:
    block = (unit * (LARGEST_BLOCK // len(unit)))[:LARGEST_BLOCK].encode()
    assert parse_fields(block) == expected


def test_a_title_after_hostile_padding() -> None:
    padding = "x='" * 1000
    block = f"StreamTitle='Artist - Song';{padding}StreamUrl='';".encode()
    fields = parse_fields(block)
    assert fields["StreamTitle"] == "Artist - Song"
    assert fields == reference_fields(block)


def test_hostile_blocks_ten_times_larger_still_parse() -> None:
    # Ten largest blocks' worth of each pattern (an upstream cannot send this much in one block, a test can).
    for unit in ("a='", "a=';", "';a='", "a='a';"):
        block = (unit * (10 * LARGEST_BLOCK // len(unit))).encode()
        fields = parse_fields(block)
        assert set(fields) <= {"a"}


@pytest.mark.parametrize(("raw", "expected"), [
    ("\x1b[31mRed\x1b[0m - Song", "Red - Song"),
    ("\x1b]0;pwned\x07Artist - Song", "Artist - Song"),
    ("\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\ - Song", "link - Song"),
    ("\x1b[2J\x1b[HClear - Screen", "Clear - Screen"),
    ("\x9b31mC1 CSI - Song", "C1 CSI - Song"),
    ("Artist\x85Next\x00Line - Song", "Artist Next Line - Song"),
    ("Line\nBreak\r - Tab\tSong", "Line Break - Tab Song"),
    ("Bidi \u202egnoS - Artist\u202c", "Bidi gnoS - Artist"),
    ("Sep\u2028arator - Song", "Sep arator - Song"),
    ("\x1b", ""),
    ("Sigur Rós - Hoppípolla 👩‍🎤", "Sigur Rós - Hoppípolla 👩‍🎤"),  # the zero-width joiner of an emoji stays
])
def test_titles_lose_escape_sequences_and_control_characters(raw: str, expected: str) -> None:
    playing = split_title(raw)
    assert playing.title == expected
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", playing.title + (playing.artist or "") + (playing.song or ""))


def test_printable_keeps_ordinary_text() -> None:
    title = "Guns N' Roses - Sweet Child [Live; 1988] (50%)"
    assert printable(title) == title


@pytest.mark.parametrize(("raw", "expected"), [
    ("Café".encode(), "Café"),
    (b"Don\x92t Stop", "Don\u2019t Stop"),  # Windows-1252, as old Shoutcast servers send it
    (b"Caf\xe9\x81", "Caf\xe9\x81"),  # no Windows-1252 character for 0x81: Latin-1 (the C1 goes in printable)
    (b"Title\0\0\0", "Title"),
])
def test_decode(raw: bytes, expected: str) -> None:
    assert decode(raw) == expected
