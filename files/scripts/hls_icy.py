"""ICY (SHOUTcast/Icecast) in-band metadata: ask for it, find it in the byte stream, read StreamTitle.

A client that sends `Icy-MetaData: 1` gets `icy-metaint: N` back and then, after every N bytes of audio,
one length byte L and L*16 bytes of metadata such as `StreamTitle='Artist - Song';StreamUrl='';`,
padded with NULs. L = 0 means "unchanged". Servers only do this for MP3 and AAC streams.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from hls_station import basic_authorization

USER_AGENT = "radio-hls/1.0"
READ_CHUNK = 8192
# `Key='value';` pairs; a value may itself hold quotes and semicolons ("Guns N' Roses; live"), so a value
# ends only at `';` followed by another key or by the end of the block.
FIELD = re.compile(r"([A-Za-z]+)='(.*?)';(?=[A-Za-z]+='|\s*$)", re.DOTALL)
TITLE_SEPARATOR = " - "
METAINT = re.compile(r"[0-9]{1,9}")


class IcyError(RuntimeError):
    """The upstream does not send usable ICY metadata."""


@dataclass(frozen=True)
class NowPlaying:
    title: str
    artist: str | None
    song: str | None


def decode(raw: bytes) -> str:
    """Metadata is UTF-8 on most servers, Latin-1 on old ones; never fail on it."""
    text = raw.rstrip(b"\0")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        return text.decode("latin-1")


def parse_fields(block: bytes) -> dict[str, str]:
    """The key/value pairs of one metadata block."""
    return {key: value for key, value in FIELD.findall(decode(block))}


def split_title(title: str) -> NowPlaying:
    """`Artist - Song` becomes artist and song; anything else stays a bare title."""
    clean = " ".join(title.split())
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
    """Connect asking for metadata; (the response, its icy-metaint). Follows redirects, http and https."""
    bare_url, authorization = basic_authorization(url)
    headers = {"Icy-MetaData": "1", "User-Agent": USER_AGENT}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(bare_url, headers=headers)
    response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (the URL was validated: http/https)
    raw = response.headers.get("icy-metaint")
    if raw is None or not METAINT.fullmatch(raw.strip()) or int(raw) <= 0:
        response.close()
        raise IcyError("the upstream sends no ICY metadata (no icy-metaint header)")
    return response, int(raw)
