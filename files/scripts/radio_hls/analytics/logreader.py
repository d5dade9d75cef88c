"""Read what is new in a log since the last run, across logrotate, from durable positions.

A position is a file's identity (device, inode, and a hash of its first bytes, which tells a file truncated
or rewritten in place, or a new file on a reused inode, from the one that was read) and the offset just after
the last complete line read. Each run looks at the live log and its newest rotated file (`<log>.1`, and
`<log>.2` while logrotate compresses it) and reads, oldest first:

- the rest of the rotated file. logrotate renamed it (nginx then reopens on USR1, and may write to it until
  it has), so it is followed by inode for as long as it is there, and read before the new live file;
- for a file that was truncated (copytruncate): the rest of its copy (found by its first bytes, the same
  offsets), then the file again from its start;
- the live log from its offset; a file never seen before from its start. On the very first run the live log
  is read from its start and older rotated files are left alone;
- when a file read before is gone (the reader did not run across two rotations, and logrotate compressed it
  to `<log>.N.gz`): its rest from the compressed copy (found by its first bytes), then the compressed files
  rotated after it, whole, then the plain files as above. Compressed files are only opened in that case.

A partial last line (nginx writing it right now) is left for the next run.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

HEAD_BYTES = 1024
BLOCK_BYTES = 4 << 20
# `.2` is the file logrotate is compressing to `.2.gz` right now (delaycompress): it is followed until it is gone.
ROTATED_SUFFIXES = (".1", ".2")
COMPRESSED_NAME = r"\.(\d+)\.gz"  # after the log's name: logrotate's `compress` without `dateext`


@dataclass(frozen=True)
class Position:
    dev: int
    ino: int
    offset: int
    head_len: int = 0
    head: str = ""  # sha256 of the first head_len bytes

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Position:
        return cls(int(value["dev"]), int(value["ino"]), int(value["offset"]), int(value.get("head_len", 0)),
                   str(value.get("head", "")))


def head_hash(handle: BinaryIO, length: int) -> str:
    handle.seek(0)
    return hashlib.sha256(handle.read(length)).hexdigest()


def starts_like(handle: BinaryIO, position: Position) -> bool:
    """Whether the file begins with the bytes whose hash the position keeps."""
    return head_hash(handle, position.head_len) == position.head


@dataclass
class _Open:
    path: Path
    handle: BinaryIO
    size: int  # for a compressed file: its text's size (mod 2**32, from the gzip trailer)
    identity: tuple[int, int]


def gzip_text_size(path: Path) -> int:
    """The size of a gzip file's text, modulo 2**32, from its trailer: no need to decompress it."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        size: int = struct.unpack("<I", handle.read(4))[0]
        return size


class LogReader:
    """Iterate over the new complete lines of `path` in blocks of bytes (the parser decodes only the fields it
    needs); then read `positions`."""

    def __init__(self, path: Path | str, positions: Sequence[Position] | None,
                 rotated_suffixes: Sequence[str] = ROTATED_SUFFIXES, block_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.known = {position.identity: position for position in positions or ()}
        self.first_run = positions is None
        self.rotated_suffixes = rotated_suffixes
        self.block_bytes = block_bytes or BLOCK_BYTES
        self.warnings: list[str] = []
        self._positions: dict[tuple[int, int], Position] = {}
        self._compressed_away: set[tuple[int, int]] = set()  # files found again in a compressed copy

    def positions(self) -> list[Position]:
        """Where the next run starts: one position per file seen, up to the last line handed out."""
        return list(self._positions.values())

    def _open_all(self) -> list[_Open]:
        """The live log and its rotated files, oldest first, each once.

        The live log is opened first: a rotation between two opens then shows one file twice (kept once)
        rather than hiding the file that was live.
        """
        found: list[_Open] = []
        for path in [self.path, *(Path(f"{self.path}{suffix}") for suffix in self.rotated_suffixes)]:
            try:
                handle = open(path, "rb")  # noqa: SIM115 (closed in blocks())
            except FileNotFoundError:
                continue
            status = os.fstat(handle.fileno())
            identity = (status.st_dev, status.st_ino)
            if any(entry.identity == identity for entry in found):
                handle.close()
                continue
            found.append(_Open(path, handle, status.st_size, identity))
        found.reverse()
        return found

    def _compressed(self, plain: list[_Open], intact: set[tuple[int, int]]) -> list[tuple[_Open, int]]:
        """Compressed rotated files with unread text, oldest first, with where to start in each.

        Looked for only when a file with a saved position is no longer among the plain ones: not `intact`
        (its inode, holding what was read) and not elsewhere by its first bytes (a copy; or its inode was reused).
        Newest first: a file read before (known by identity, or by the first bytes of the gone file it was
        compressed from) ends the search; the files rotated after it were never read and are read whole.
        Older ones are history.
        """
        gone = [position for identity, position in self.known.items()
                if position.offset and identity not in intact
                and not any(starts_like(entry.handle, position) for entry in plain)]
        if self.first_run or not gone or Path(f"{self.path}.2").exists():
            return []  # (a plain .2: logrotate is compressing it right now; the next run finds it done)
        pattern = re.compile(re.escape(self.path.name) + COMPRESSED_NAME)
        numbered = sorted((int(match.group(1)), path) for path in self.path.parent.iterdir()
                          if (match := pattern.fullmatch(path.name)))
        newer: list[tuple[_Open, int]] = []
        for _, path in numbered:
            try:
                status = path.stat()
                entry = _Open(path, gzip.open(path, "rb"), gzip_text_size(path),  # type: ignore[arg-type]
                              (status.st_dev, status.st_ino))
            except OSError as error:  # rotated out meanwhile, or not a gzip file
                self.warnings.append(f"{path}: {error}: skipped")
                continue
            origin = next((position for position in gone if starts_like(entry.handle, position)), None)
            if origin is None:
                newer.append((entry, 0))
                continue
            self._compressed_away.add(origin.identity)
            if origin.offset % 2**32 != entry.size:
                newer.append((entry, origin.offset))
            else:
                entry.handle.close()  # read to its end before it was compressed: the usual case
            break
        else:
            for entry, _ in newer:
                entry.handle.close()
            if numbered:
                self.warnings.append(f"a rotated {self.path.name} read before is not among the compressed ones: "
                                     "its unread rest, if any, is lost")
            return []
        newer.reverse()
        return newer

    def _start(self, entry: _Open, is_live: bool, rewritten: set[tuple[int, int]],
               present: set[tuple[int, int]]) -> int:
        """The offset to read `entry` from."""
        known = self.known.get(entry.identity)
        if known is not None and entry.identity not in rewritten:
            return known.offset
        if known is not None:
            if entry.identity not in self._compressed_away:  # else: a new file on the inode of one compressed
                self.warnings.append(f"{entry.path} was truncated or replaced in place: reading it from the start")
            return 0
        for origin in self.known.values():
            if (origin.offset > 0 and origin.head_len > 0 and entry.size >= origin.offset
                    and starts_like(entry.handle, origin)):
                # A copy of a file that was read (copytruncate): only its unread rest is new.
                if origin.identity in rewritten or origin.identity not in present:
                    return origin.offset
                return entry.size
        if self.first_run and not is_live:
            return entry.size
        return 0

    def __iter__(self) -> Iterator[bytes]:
        files = self._open_all()
        compressed: list[tuple[_Open, int]] = []
        try:
            present = {entry.identity for entry in files}
            rewritten = {entry.identity for entry in files
                         if (known := self.known.get(entry.identity)) is not None
                         and (entry.size < known.offset or not starts_like(entry.handle, known))}
            compressed = self._compressed(files, present - rewritten)
            plan = [*compressed, *((entry, self._start(entry, entry.path == self.path, rewritten, present))
                                   for entry in files)]
            # Every file gets its position up front: a run stopped midway keeps those of files not reached yet.
            for entry, start in plan:
                self._remember(entry, start)
            for entry, start in plan:
                yield from self._read(entry, start)
        finally:
            for entry in [*files, *(entry for entry, _ in compressed)]:
                entry.handle.close()

    def _read(self, entry: _Open, offset: int) -> Iterator[bytes]:
        handle = entry.handle
        handle.seek(offset)
        pending = b""
        while True:
            try:
                block = handle.read(self.block_bytes)
            except (EOFError, zlib.error, gzip.BadGzipFile) as error:
                # A damaged compressed file: keep the lines read from it and forget it, so it is not retried.
                self.warnings.append(f"{entry.path}: {error}: its rest is skipped")
                del self._positions[entry.identity]
                break
            if not block:
                break
            data = pending + block if pending else block
            end = data.rfind(b"\n") + 1
            if end == 0:
                pending = data
                continue
            pending = data[end:]
            offset += end
            self._remember(entry, offset)
            yield data[:end]

    def _remember(self, entry: _Open, offset: int) -> None:
        head_len = min(HEAD_BYTES, offset)
        previous = self._positions.get(entry.identity)
        if previous is not None and previous.head_len == head_len:
            head = previous.head
        else:
            here = entry.handle.tell()
            head = head_hash(entry.handle, head_len)
            entry.handle.seek(here)
        self._positions[entry.identity] = Position(entry.identity[0], entry.identity[1], offset, head_len, head)
