"""Live-ish stations on disk and simulated HLS listeners, for the edge benchmark (benchmarks/edge.py).

A station here is only its files, as an origin serves them: every target duration, on the clock, a new segment
`<slot>.ts` of a real station's size and then its playlist rewritten (atomically) to list the newest few.
A listener is what a player does: it polls the playlist every target duration and fetches each segment it has
not fetched yet (the newest one when it starts), over one keep-alive connection, with its session id (?s=)
on every request. Plain asyncio streams (standard library), so one process holds a thousand listeners.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

LISTED = 5  # segments a playlist lists
TS_PACKET = b"\x47" + bytes(187)


def segment_bytes(seconds: float, kbit_per_s: int) -> bytes:
    """A segment of `seconds` at `kbit_per_s`, in whole transport stream packets."""
    packets = round(seconds * kbit_per_s * 1000 / 8 / len(TS_PACKET))
    return TS_PACKET * packets


def playlist_text(newest: int, seconds: float) -> str:
    first = max(0, newest - LISTED + 1)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{round(seconds)}", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for slot in range(first, newest + 1):
        lines += [f"#EXTINF:{seconds:.3f},", f"{slot}.ts"]
    return "\n".join(lines) + "\n"


def segment_names(playlist: str) -> list[str]:
    """The segment lines of a media playlist, without any query string (an edge adds the listener's s=)."""
    return [line.partition("?")[0] for line in playlist.splitlines() if line and not line.startswith("#")]


class Stations:
    """`slugs` under root/hls/<slug>/, a segment and a playlist each every `seconds` on the clock, in a thread."""

    def __init__(self, root: Path, slugs: Sequence[str], seconds: float, kbit_per_s: int) -> None:
        self.directories = [root / "hls" / slug for slug in slugs]
        self.seconds = seconds
        self.segment = segment_bytes(seconds, kbit_per_s)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        for directory in self.directories:
            directory.mkdir(parents=True)
        slot = self.slot()
        for earlier in range(slot - LISTED + 1, slot):
            self.publish(earlier)
        self.publish(slot)

    def slot(self) -> int:
        return int(time.time() // self.seconds)

    def publish(self, slot: int) -> None:
        for directory in self.directories:
            (directory / f"{slot}.ts").write_bytes(self.segment)
            temporary = directory / ".index.m3u8.tmp"
            temporary.write_text(playlist_text(slot, self.seconds))
            os.replace(temporary, directory / "index.m3u8")

    def _run(self) -> None:
        published = self.slot()
        while not self.stopped.wait(max(0.0, (published + 1) * self.seconds - time.time())):
            if (slot := self.slot()) > published:
                self.publish(slot)
                published = slot

    def __enter__(self) -> Stations:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()


@dataclass
class Counts:
    """What the listeners asked for and got."""

    playlists: int = 0
    segments: int = 0
    errors: int = 0  # an answer other than 200, or a connection that failed
    bytes: int = 0

    def copy(self) -> Counts:
        return Counts(**{item.name: getattr(self, item.name) for item in fields(self)})

    def __sub__(self, other: Counts) -> Counts:
        return Counts(**{item.name: getattr(self, item.name) - getattr(other, item.name) for item in fields(self)})

    @property
    def requests(self) -> int:
        return self.playlists + self.segments


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> tuple[int, bytes]:
    """One GET on a keep-alive connection: the status and the body (Content-Length or chunked)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head.split(" ", 2)[1])
    headers = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
    if headers.get("transfer-encoding", "").strip() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return status, body
    return status, await reader.readexactly(int(headers.get("content-length", "0")))


@dataclass(frozen=True)
class Window:
    """A measurement: what the listeners did, the origin's requests, and the seconds it lasted."""

    listeners: Counts
    origin: int
    seconds: float


@dataclass
class Listeners:
    """`count` listeners spread over `slugs` on 127.0.0.1:`port`, each started at its own moment in the first
    target duration, as a crowd arrives."""

    port: int
    slugs: Sequence[str]
    count: int
    seconds: float
    counts: Counts = field(default_factory=Counts)

    async def listener(self, number: int) -> None:
        slug, session = self.slugs[number % len(self.slugs)], f"bench-{number}"
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.seconds * number / self.count)
        fetched: set[str] = set()
        due = loop.time()
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.counts.errors += 1
                await asyncio.sleep(self.seconds)
                continue
            try:
                while True:
                    status, body = await get(reader, writer, f"/hls/{slug}/index.m3u8?s={session}")
                    self.counts.playlists += 1
                    self.counts.bytes += len(body)
                    if status != 200:
                        self.counts.errors += 1
                    listed = segment_names(body.decode()) if status == 200 else []
                    if not fetched:  # a player that joins starts at the newest segment
                        fetched.update(listed[:-1])
                    for name in [name for name in listed if name not in fetched]:
                        status, body = await get(reader, writer, f"/hls/{slug}/{name}?s={session}")
                        self.counts.segments += 1
                        self.counts.bytes += len(body)
                        if status != 200:
                            self.counts.errors += 1
                        fetched.add(name)
                    # As a player: the next poll a target duration after this one was due, or now when late
                    # (a busy machine), never a burst to catch up.
                    due = max(due + self.seconds, loop.time())
                    await asyncio.sleep(max(0.0, due - loop.time()))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self.counts.errors += 1
            finally:
                writer.close()

    async def measure(self, warm_up: float, window: float, origin_requests: Callable[[], int]) -> Window:
        """Start every listener, wait until all have started plus `warm_up`, and return what they and the origin
        did in the next `window` seconds (as long as it really lasted); then stop them."""
        tasks = [asyncio.create_task(self.listener(number)) for number in range(self.count)]
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(self.seconds + warm_up)
            before, origin_before, started = self.counts.copy(), origin_requests(), loop.time()
            await asyncio.sleep(window)
            return Window(self.counts - before, origin_requests() - origin_before, loop.time() - started)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
