"""ICY (SHOUTcast/Icecast) in-band metadata: ask for it, find it in the byte stream, read StreamTitle.

A client that sends `Icy-MetaData: 1` gets `icy-metaint: N` back and then, after every N bytes of audio,
one length byte L and L*16 bytes of metadata such as `StreamTitle='Artist - Song';StreamUrl='';`,
padded with NULs. L = 0 means "unchanged". Servers only do this for MP3 and AAC streams.
"""

from __future__ import annotations

import bisect
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from radio_hls.common.contract import USER_AGENT
from radio_hls.stations.upstream import open_upstream

READ_CHUNK = 8192
# The kernel wakes a watcher only once this many bytes wait on its socket (SO_RCVLOWAT), not on every packet an
# upstream sends: Icecast writes about 1.2 KB at a time, so a thousand watcher threads woke 13,000 times a second
# and took half a core (docs/benchmarks.md, "Now playing"). A title is read at most this much audio late: 0.5 s
# at 128 kbit/s, 2 s at 32 kbit/s, well inside the read timeout for any radio bitrate.
WAKE_BYTES = READ_CHUNK
# A block holds `Key='value';` pairs; a value may itself hold quotes and semicolons ("Guns N' Roses; live"), so
# a value ends only at `';` followed by another key or by the end of the block. Both patterns are linear: a key
# is only looked for where a run of letters starts (the look-behind), and an end looks ahead by one key at most.
KEY = re.compile(r"(?<![A-Za-z])([A-Za-z]+)='")
VALUE_END = re.compile(r"';(?=[A-Za-z]+='|\s*$)")
TITLE_SEPARATOR = " - "
METAINT = re.compile(r"[0-9]{1,9}")
# Terminal escape sequences (CSI like ESC [ 3 1 m, OSC like ESC ] 0 ; title BEL, and two-character ones) go whole,
# so no "[31m" is left behind; then every other control character (C0, DEL, C1), line and paragraph separators
# and the bidirectional overrides that reorder what a terminal shows become spaces.
ESCAPE_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -~]?"
                             r"|\x9b[0-?]*[ -/]*[@-~]?")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class IcyError(RuntimeError):
    """The upstream does not send usable ICY metadata."""


@dataclass(frozen=True)
class NowPlaying:
    title: str
    artist: str | None
    song: str | None


def decode(raw: bytes) -> str:
    """Metadata is UTF-8 on most servers, Windows-1252 or Latin-1 on old ones; never fail on it."""
    text = raw.rstrip(b"\0")
    for encoding in ("utf-8", "cp1252"):
        try:
            return text.decode(encoding)
        except UnicodeDecodeError:
            pass
    return text.decode("latin-1")


def parse_fields(block: bytes) -> dict[str, str]:
    """The key/value pairs of one metadata block, in linear time.

    A field is the first `Key='` after the previous field, and its value runs to the first possible end after it
    (VALUE_END). One regular expression for the whole field looked for an end from every `Key='`: a block of
    repeated `a='` cost 64 ms. Here each possible end is found once, and a key with no end after it stops the
    parsing (no later key could have one either).
    """
    text = decode(block)
    ends = [end.start() for end in VALUE_END.finditer(text)]
    fields: dict[str, str] = {}
    position = 0
    while key := KEY.search(text, position):
        end_index = bisect.bisect_left(ends, key.end())
        if end_index == len(ends):
            break
        fields[key.group(1)] = text[key.end():ends[end_index]]
        position = ends[end_index] + len("';")
    return fields


def printable(text: str) -> str:
    """The text without terminal escape sequences and control characters: a title reaches now-playing.json and
    `hlsctl status` on an operator's terminal."""
    return CONTROL.sub(" ", ESCAPE_SEQUENCE.sub("", text))


def split_title(title: str) -> NowPlaying:
    """`Artist - Song` becomes artist and song; anything else stays a bare title."""
    clean = " ".join(printable(title).split())
    artist, separator, song = clean.partition(TITLE_SEPARATOR)
    if separator and artist.strip() and song.strip():
        return NowPlaying(title=clean, artist=artist.strip(), song=song.strip())
    return NowPlaying(title=clean, artist=None, song=None)


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    parts, missing = [], size
    while missing:
        chunk = stream.read(min(missing, READ_CHUNK))
        if not chunk:
            raise EOFError("the upstream closed the stream")
        parts.append(chunk)
        missing -= len(chunk)
    return b"".join(parts)


def skip(stream: BinaryIO, size: int) -> None:
    while size:
        chunk = stream.read(min(size, READ_CHUNK))
        if not chunk:
            raise EOFError("the upstream closed the stream")
        size -= len(chunk)


def metadata_blocks(stream: BinaryIO, metaint: int) -> Iterator[bytes]:
    """Every metadata block of an ICY stream, in order (b"" for "unchanged"); EOFError when the stream ends.

    Servers send a non-empty block only when the metadata changes, so the empty ones are the reader's clock.
    """
    while True:
        skip(stream, metaint)
        length = read_exactly(stream, 1)[0] * 16
        yield read_exactly(stream, length) if length else b""


def stream_titles(stream: BinaryIO, metaint: int) -> Iterator[str | None]:
    """The StreamTitle of each block that has one, None for every other block (a tick every metaint bytes)."""
    for block in metadata_blocks(stream, metaint):
        yield parse_fields(block).get("StreamTitle") if block else None


def open_stream(url: str, timeout: float) -> tuple[BinaryIO, int]:
    """Connect asking for metadata; (the response, its icy-metaint). Follows http and https redirects, with the
    URL's credentials only on hops to their own origin (upstream.open_upstream)."""
    response = open_upstream(url, {"Icy-MetaData": "1", "User-Agent": USER_AGENT}, timeout)
    raw = response.headers.get("icy-metaint")
    if raw is None or not METAINT.fullmatch(raw.strip()) or int(raw) <= 0:
        response.close()
        raise IcyError("the upstream sends no ICY metadata (no icy-metaint header)")
    wake_on_full_reads(response.fileno())
    return response, int(raw)


def wake_on_full_reads(fileno: int) -> None:
    """Set WAKE_BYTES as the low-water mark of the response's socket (a duplicate descriptor of the same socket:
    the option belongs to the socket, and closing the duplicate leaves the response's own open)."""
    with socket.socket(fileno=os.dup(fileno)) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, WAKE_BYTES)
