"""Read what is new in a log since the last run, across logrotate, from durable positions.

A position is a file's identity (device, inode, and a hash of its first bytes, which tells a file truncated
or rewritten in place, or a new file on a reused inode, from the one that was read) and the offset just after
the last complete line read. Each run looks at the live log and its newest rotated file (`<log>.1`) and reads,
oldest first:

- the rest of the rotated file. logrotate renamed it (nginx then reopens on USR1, and may write to it until
  it has), so it is followed by inode for as long as it is there, and read before the new live file;
- for a file that was truncated (copytruncate): the rest of its copy (found by its first bytes, the same
  offsets), then the file again from its start;
- the live log from its offset; a file never seen before from its start. On the very first run the live log
  is read from its start and older rotated files are left alone.

A partial last line (nginx writing it right now) is left for the next run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

HEAD_BYTES = 1024
BLOCK_BYTES = 4 << 20
ROTATED_SUFFIXES = (".1",)


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
    size: int
    identity: tuple[int, int]


class LogReader:
    """Iterate over the new complete lines of `path` as decoded text blocks; then read `positions`."""

    def __init__(self, path: Path | str, positions: Sequence[Position] | None,
                 rotated_suffixes: Sequence[str] = ROTATED_SUFFIXES, block_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.known = {position.identity: position for position in positions or ()}
        self.first_run = positions is None
        self.rotated_suffixes = rotated_suffixes
        self.block_bytes = block_bytes or BLOCK_BYTES
        self.warnings: list[str] = []
        self._positions: dict[tuple[int, int], Position] = {}

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

    def _start(self, entry: _Open, is_live: bool, rewritten: set[tuple[int, int]], present: set) -> int:
        """The offset to read `entry` from."""
        known = self.known.get(entry.identity)
        if known is not None and entry.identity not in rewritten:
            return known.offset
        if known is not None:
            self.warnings.append(f"{entry.path} was truncated or replaced in place: reading it from the start")
            return 0
        for origin in self.known.values():
            if origin.offset > 0 and origin.head_len > 0 and entry.size >= origin.offset and starts_like(entry.handle, origin):
                # A copy of a file that was read (copytruncate): only its unread rest is new.
                if origin.identity in rewritten or origin.identity not in present:
                    return origin.offset
                return entry.size
        if self.first_run and not is_live:
            return entry.size
        return 0

    def __iter__(self) -> Iterator[str]:
        files = self._open_all()
        try:
            present = {entry.identity for entry in files}
            rewritten = {entry.identity for entry in files
                         if (known := self.known.get(entry.identity)) is not None
                         and (entry.size < known.offset or not starts_like(entry.handle, known))}
            plan = [(entry, self._start(entry, entry.path == self.path, rewritten, present)) for entry in files]
            for entry, start in plan:
                yield from self._read(entry, start)
        finally:
            for entry in files:
                entry.handle.close()

    def _read(self, entry: _Open, offset: int) -> Iterator[str]:
        handle = entry.handle
        handle.seek(offset)
        self._remember(entry, offset)
        pending = b""
        while True:
            block = handle.read(self.block_bytes)
            if not block:
                break
            data = pending + block if pending else block
            end = data.rfind(b"\n") + 1
            if end == 0:
                pending = data
                continue
            pending = data[end:]
            offset += end
            text = data[:end].decode("utf-8", "replace")
            self._remember(entry, offset)
            yield text

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
