"""What every player runner shares: start the player on each URL, read its position, report how far it played.

A runner (ffmpeg.py, mpv.py, vlc.py, gstreamer.py, hlsjs.py) plays all the URLs it is given at once, each for a
window of --seconds that begins when that player's own position first moves, and prints JSON lines:
  {"event": "playing", "url": ...}   when a window begins (the player plays);
  one report per URL at the end:     played seconds, stalls, position jumps, whether and why it stopped early.
Played seconds are the advance of the player's position, read every POLL_SECONDS; a reading is never credited with
more than the wall time since the one before (plus the player's resolution), so a timestamp that jumps forward
across an outage does not count as played (it is reported as skipped), and one that jumps back counts nothing
(reported as went_back: the player's timeline went backwards). Usage:
  python3 tests/players/<player>.py [--seconds 100] [--startup 90] URL [URL ...]
The runners use only the standard library (gstreamer.py: Debian's python3-gi, so run them with /usr/bin/python3).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

POLL_SECONDS = 0.5
# A position read may run ahead of the wall clock by this much (a poll and the player's own update period);
# VLC's is coarser (vlc.py). A stall is the position standing still for a second beyond it.
RESOLUTION_SECONDS = 1.0
STALL_BEYOND_RESOLUTION = 1.0
MOVED = 0.01  # seconds of position that count as a move
SPIKE = 10.0  # seconds: a jump forward this large may be a position interface's spurious answer (Account.read)
LOG_LINES = 6
STOP_SECONDS = 10
ASK_SECONDS = 2.0


class Session:
    """One player process playing `urls`. A subclass says how to start it (command) and keeps `positions` (the
    latest position in seconds by URL) and `ended` (why it stopped playing a URL) up to date: from refresh(),
    which the runner calls every poll, or from a thread reading the player's output (LineSession)."""

    name = "player"
    resolution = RESOLUTION_SECONDS

    def __init__(self, urls: Sequence[str], workdir: Path) -> None:
        self.urls = list(urls)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.positions: dict[str, float] = {}
        self.ended: dict[str, str] = {}
        self.process: subprocess.Popen[str] | None = None
        self.log_path = workdir / "player.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self.stdout(log),
                                            stderr=log, text=True, cwd=self.workdir, env=self.environment())

    def stdout(self, log: IO[str]) -> IO[str] | int:
        return log

    def environment(self) -> dict[str, str] | None:
        return None  # the runner's

    def refresh(self) -> None:
        """Ask the player where it is (players that print their position need nothing here)."""

    def exited(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self) -> list[str]:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line.strip() for line in lines if line.strip()][-LOG_LINES:]


class LineSession(Session):
    """A player that prints its progress on stdout: line() reads each line, in a thread of its own."""

    def stdout(self, log: IO[str]) -> IO[str] | int:
        return subprocess.PIPE

    def start(self) -> None:
        super().start()
        assert self.process and self.process.stdout
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for text in stream:
            self.line(text.strip())

    def line(self, text: str) -> None:
        raise NotImplementedError


class SocketSession(Session):
    """A player asked for its position over a Unix socket it listens on (`socket` in its directory)."""

    connection: socket.socket | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "socket"

    def ask(self, request: bytes, answered: Callable[[bytes], bool]) -> bytes | None:
        """Send `request`; what the player wrote back once answered() holds for it, or None when the socket does
        not answer (not listening yet, or gone: the runner sees the exit)."""
        received = b""
        try:
            if self.connection is None:
                self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.connection.settimeout(ASK_SECONDS)
                self.connection.connect(str(self.socket_path))
            self.connection.sendall(request)
            while not answered(received):
                chunk = self.connection.recv(4096)
                if not chunk:
                    raise ConnectionError(f"{self.name} closed its socket")
                received += chunk
        except OSError:
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            return None
        return received


@dataclass
class Account:
    """How far the player has played one URL; times are time.monotonic()."""

    url: str
    window: float
    resolution: float = RESOLUTION_SECONDS
    first: float | None = None  # the first position read: the window begins when the position leaves it
    start: float | None = None
    last_time: float = 0.0
    last_position: float = 0.0
    moved_at: float = 0.0
    played: float = 0.0
    skipped: float = 0.0  # position passed over faster than the wall clock (a gap jumped, a timestamp jump)
    went_back: int = 0  # readings whose position fell by more than a reading's resolution
    stalls: int = 0
    stalled: float = 0.0
    end: float | None = None
    why: str | None = None  # why the player stopped before its window ended
    # The last three positions read: each reading is judged by their median, so one spurious answer of a player's
    # position interface (VLC's get_time once read 86 s ahead at a restart) neither plays nor goes back, while a
    # timeline that really went back does so in every reading that follows.
    recent: list[float] = field(default_factory=list)
    # Before a jump forward by more than SPIKE: (time, position, skipped). A reading back on the timeline extrapolated
    # from there undoes the jump: the position interface lied for a while (VLC's get_time read 117 s ahead for longer
    # than two readings after a restart in a CI run, its audio playing on), the timeline never moved.
    before_jump: tuple[float, float, float] | None = None
    status: int | None = None

    def read(self, now: float, position: float) -> bool:
        """Take a reading; True when it begins the window."""
        self.recent = [*self.recent[-2:], position]
        position = sorted(self.recent)[len(self.recent) // 2]
        if self.start is None:
            if self.first is None:
                self.first = position
            elif abs(position - self.first) >= MOVED:
                self.start = self.last_time = self.moved_at = now
                self.last_position = position
                return True
            return False
        now = min(now, self.start + self.window)
        step = position - self.last_position
        if step > SPIKE:
            self.before_jump = (self.last_time, self.last_position, self.skipped)
        credit = min(max(step, 0.0), now - self.last_time + self.resolution)
        self.played += credit
        self.skipped += max(step, 0.0) - credit
        if step < -self.resolution:
            if self.before_jump is not None and abs(
                    position - (self.before_jump[1] + now - self.before_jump[0])) <= 2 * self.resolution:
                self.skipped = self.before_jump[2]
            else:
                self.went_back += 1
            self.before_jump = None
        if abs(step) >= MOVED:
            self._close_stall(now)
            self.moved_at = now
        self.last_time, self.last_position = now, position
        if now >= self.start + self.window:
            self.finish(now)
        return False

    def over(self, now: float) -> bool:
        return self.start is not None and now >= self.start + self.window

    def _close_stall(self, now: float) -> None:
        if now - self.moved_at >= self.resolution + STALL_BEYOND_RESOLUTION:
            self.stalls += 1
            self.stalled += now - self.moved_at

    def finish(self, now: float, why: str | None = None, status: int | None = None) -> None:
        if self.start is not None:
            self._close_stall(min(now, self.start + self.window))
        self.end, self.why, self.status = now, why, status

    def report(self, player: str, log: list[str]) -> dict[str, Any]:
        return {
            "player": player, "url": self.url, "window": self.window,
            "played": round(min(self.played, self.window), 1), "skipped": round(self.skipped, 1),
            "went_back": self.went_back, "stalls": self.stalls,
            "stalled": round(self.stalled, 1), "early": self.why is not None, "why": self.why,
            "exit": self.status,
            "ended_after": None if self.start is None or self.end is None else round(self.end - self.start, 1),
            "log": log,
        }


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def main(session: type[Session], one_process_per_url: bool = True, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Play HLS URLs with {session.name}; report how far it played.")
    parser.add_argument("--seconds", type=float, default=100.0, help="the window each URL is played for")
    parser.add_argument("--startup", type=float, default=90.0, help="how long a player may take to begin")
    parser.add_argument("urls", nargs="+", metavar="URL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"hls-{session.name}-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # VLC runs as nobody and needs to reach its own directory below
        if one_process_per_url:
            sessions = [session([url], root / str(index)) for index, url in enumerate(args.urls)]
        else:
            sessions = [session(args.urls, root / "0")]
        accounts = {url: Account(url, args.seconds, session.resolution) for url in args.urls}
        began = time.monotonic()
        try:
            for each in sessions:
                each.start()
            while not all(account.end is not None for account in accounts.values()):
                time.sleep(POLL_SECONDS)
                for each in sessions:
                    watch(each, accounts, began, args.startup)
        finally:
            for each in sessions:
                each.stop()
        for each in sessions:
            for url in each.urls:
                emit(accounts[url].report(session.name, each.log_tail()))
    return 0


def watch(session: Session, accounts: dict[str, Account], began: float, startup: float) -> None:
    """One poll of one session: read each URL's position, then end the URLs it stopped playing."""
    session.refresh()
    status = session.exited()
    now = time.monotonic()
    for url in session.urls:
        account = accounts[url]
        if account.end is not None:
            continue
        if url in session.positions and account.read(now, session.positions[url]):
            emit({"event": "playing", "player": session.name, "url": url})
        if account.end is not None:
            continue
        if account.over(now):
            account.finish(now)
        elif url in session.ended:
            account.finish(now, session.ended[url], status)
        elif status is not None:
            account.finish(now, f"the player exited with status {status}", status)
        elif account.start is None and now - began > startup:
            account.finish(now, f"it did not begin to play within {startup:g} s")


if __name__ == "__main__":
    sys.exit("run one of the player runners beside this file (ffmpeg.py, mpv.py, vlc.py, gstreamer.py, hlsjs.py)")
