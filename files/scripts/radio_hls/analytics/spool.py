"""The spool: batches of events on disk until the backend has acknowledged them.

One gzip-compressed JSON file per batch, named by a sequence number that only grows, so the directory
listing is the sending order. A batch is written to a temporary file, fsynced, renamed into place and the
directory fsynced: after a crash it is either whole or absent. Deleting an acknowledged batch also fsyncs
the directory, so a batch the backend has is never sent again after a power cut.

The spool is bounded: past `max_bytes` the oldest batches are dropped, each with an ERROR line.

Dead letters: a batch the backend refused for good (it accepts others) leaves the spool for a directory of its
own, in the same format plus the backend's reason, so the batches behind it flow. It is bounded as well: past
its `max_bytes` the oldest are removed (their events were already counted as refused).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radio_hls.common.files import write_atomically

SUFFIX = ".json.gz"
log = logging.getLogger("hls-analytics")


@dataclass(frozen=True)
class Batch:
    seq: int
    path: Path
    events: list[dict[str, Any]]
    cursor: dict[str, Any] | None  # the read position after this batch, on the last batch of a slice


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _name(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{SUFFIX}"

    def paths(self) -> list[Path]:
        """The batches, oldest first."""
        return sorted(path for path in self.directory.iterdir()
                      if path.name.endswith(SUFFIX) and path.name[:16].isdigit() and not path.name.startswith("."))

    @staticmethod
    def seq_of(path: Path) -> int:
        return int(path.name[:16])

    def last_seq(self) -> int:
        paths = self.paths()
        return self.seq_of(paths[-1]) if paths else 0

    def write(self, seq: int, events: list[dict[str, Any]], cursor: dict[str, Any] | None = None,
              **extra: Any) -> Path:
        """Write one batch atomically; `extra`: more top-level fields (a dead letter's reason)."""
        path = self._name(seq)
        body = json.dumps({"seq": seq, "events": events, "cursor": cursor, **extra}, separators=(",", ":")).encode()
        write_atomically(path, gzip.compress(body, compresslevel=5, mtime=0), mode=0o600, make_parents=False)
        fsync_directory(self.directory)
        return path

    def read(self, path: Path) -> Batch:
        payload = json.loads(gzip.decompress(path.read_bytes()))
        events = payload.get("events")
        if not isinstance(events, list):
            raise ValueError("no list of events")
        return Batch(self.seq_of(path), path, events, payload.get("cursor"))

    def delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fsync_directory(self.directory)

    def quarantine(self, path: Path, error: Exception) -> None:
        """Move an unreadable batch out of the way (it would block the ones behind it forever)."""
        log.error("spool batch %s is unreadable (%s): moved aside to %s.bad", path.name, error, path.name)
        os.replace(path, path.with_name(path.name + ".bad"))
        fsync_directory(self.directory)

    def size(self) -> tuple[int, int]:
        """(batches, bytes) on disk."""
        paths = self.paths()
        return len(paths), sum(path.stat().st_size for path in paths)

    def _over_limit(self) -> list[Path]:
        """The oldest batches to remove to bring the directory back within its bound."""
        paths = self.paths()
        total = sum(path.stat().st_size for path in paths)
        excess = []
        for path in paths:
            if total <= self.max_bytes:
                break
            excess.append(path)
            total -= path.stat().st_size
        return excess

    def _events_in(self, path: Path) -> int:
        try:
            return len(self.read(path).events)
        except (OSError, ValueError, EOFError) as error:
            log.error("batch %s is unreadable: %s", path, error)
            return 0

    def drop_oldest_over_limit(self) -> int:
        """Drop the oldest batches while the spool is over its bound; the number of events dropped."""
        dropped = 0
        for path in self._over_limit():
            count = self._events_in(path)
            log.error("spool over %d MB: DROPPED batch %s with %d events that the backend never received",
                      self.max_bytes >> 20, path.name, count)
            self.delete(path)
            dropped += count
        return dropped

    def move_to_dead_letters(self, batch: Batch, dead_letters: Spool, reason: str) -> Path:
        """Move a batch the backend refused for good out of the sending order, with the reason, then keep the
        dead letters within their bound (the oldest go first)."""
        kept = dead_letters.write(batch.seq, batch.events, reason=reason)
        self.delete(batch.path)
        for path in dead_letters._over_limit():
            log.warning("dead letters over %d MB: removed the oldest, %s (%d events, already counted as refused)",
                        dead_letters.max_bytes >> 20, path.name, dead_letters._events_in(path))
            dead_letters.delete(path)
        return kept

    def discard_after(self, seq: int) -> list[Path]:
        """Remove batches newer than `seq`: written by a run that died before it committed them."""
        removed = [path for path in self.paths() if self.seq_of(path) > seq]
        for path in removed:
            path.unlink()
        if removed:
            fsync_directory(self.directory)
        return removed
