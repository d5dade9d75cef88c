"""hls-nowplaying: publish each running station's ICY StreamTitle as /run/hls/<slug>/now-playing.json.

One process for all stations (hls-nowplaying.service), one thread per running station: a station runs
while systemd keeps its /run/hls/<slug> directory. Each thread holds one metadata connection to the
upstream. When a title changes, the backend's trigger_metadata_fetch(station_id) is called at most once
for that change and at most once per --trigger-interval seconds per station (changes in between are
folded into one call). Backend failures are logged and never touch the stream, which FFmpeg makes alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from dotenv import dotenv_values

from radio_hls.common import logs
from radio_hls.common.clock import iso
from radio_hls.common.contract import NOW_PLAYING_NAME
from radio_hls.common.files import read_json_object, write_atomically
from radio_hls.common.graphql import BackendError, execute
from radio_hls.nowplaying.icy import NowPlaying, open_stream, split_title, stream_titles
from radio_hls.stations.station import InvalidStation, redact_url, station_env_file, validate_slug, validate_stream_url

TRIGGER_MUTATION = ("mutation TriggerMetadataFetch($station_id: Int!) "
                    "{ trigger_metadata_fetch(station_id: $station_id) { success message } }")
TOKEN_KEY = "HLS_NOW_PLAYING_GRAPHQL_TOKEN"

log = logging.getLogger("hls-nowplaying")

Trigger = Callable[[int], None]


@dataclass(frozen=True)
class Source:
    """What a watcher needs from a station's env file; a change of any of it restarts the watcher."""

    slug: str
    stream_url: str
    station_id: int | None


@dataclass
class Config:
    stations_dir: Path
    output_root: Path
    endpoint: str = ""
    token: str = ""
    trigger_interval: float = 30.0
    read_timeout: float = 15.0
    retry_seconds: float = 10.0
    scan_seconds: float = 5.0


def read_source(env_file: Path) -> Source | None:
    values = dotenv_values(env_file, interpolate=False)
    try:
        slug = validate_slug(values.get("HLS_STATION_SLUG"))
        url = validate_stream_url(values.get("HLS_STREAM_URL"))
    except InvalidStation as error:
        log.error("%s: %s", env_file, error)
        return None
    raw_id = values.get("HLS_STATION_ID") or ""
    return Source(slug, url, int(raw_id) if raw_id.isascii() and raw_id.isdigit() else None)


def running_sources(config: Config) -> dict[str, Source]:
    """Stations whose unit runs (systemd keeps their output directory) and that have an env file."""
    sources: dict[str, Source] = {}
    if not config.output_root.is_dir():
        return sources
    for directory in config.output_root.iterdir():
        env_file = station_env_file(config.stations_dir, directory.name)
        if not directory.is_dir() or not env_file.is_file():
            continue
        try:
            source = read_source(env_file)
        except OSError as error:
            log.error("cannot read %s: %s", env_file, error)
            continue
        if source is not None and source.slug == directory.name:
            sources[source.slug] = source
    return sources


def read_published(path: Path) -> str | None:
    """The title already published (by an earlier run of this program), so a restart triggers nothing."""
    title = read_json_object(path).get("title")
    return title if isinstance(title, str) else None


def publish(path: Path, slug: str, playing: NowPlaying, now: float) -> None:
    # changed_at: when the change reached this host, to the millisecond: where hls-playlists puts the title into
    # the stream (timed ID3, EXT-X-DATERANGE).
    document = {"station": slug, "title": playing.title or None, "artist": playing.artist, "song": playing.song,
                "updated_at": iso(now), "changed_at": round(now, 3)}
    # Never recreate the directory: systemd removes it when the station stops, and it must stay gone.
    write_atomically(path, json.dumps(document, ensure_ascii=False) + "\n", mode=0o644, make_parents=False)


@dataclass
class TriggerLimiter:
    """At most one call per title change, and at most one per `interval` seconds; later changes wait."""

    interval: float
    last_call: float | None = None
    pending: bool = False

    def changed(self) -> None:
        self.pending = True

    def due(self, now: float) -> bool:
        """Whether to call now; a True answer counts as the call."""
        if not self.pending or (self.last_call is not None and now - self.last_call < self.interval):
            return False
        self.pending, self.last_call = False, now
        return True


def backend_trigger(config: Config) -> Trigger:
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}

    def trigger(station_id: int) -> None:
        try:
            data = execute(config.endpoint, TRIGGER_MUTATION, {"station_id": station_id}, headers=headers,
                           timeout=config.read_timeout)
        except BackendError as error:
            log.warning("trigger_metadata_fetch(%d) failed: %s", station_id, error)
            return
        result = data.get("trigger_metadata_fetch") or {}
        if result.get("success") is not True:
            log.warning("trigger_metadata_fetch(%d) was refused: %s", station_id, result.get("message"))

    return trigger


@dataclass
class Watcher:
    """Follows one station's titles until stopped."""

    source: Source
    output_dir: Path
    config: Config
    trigger: Trigger | None
    clock: Callable[[], float] = time.time
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.path = self.output_dir / NOW_PLAYING_NAME
        self.limiter = TriggerLimiter(self.config.trigger_interval)
        self.title = read_published(self.path)

    def seen(self, raw_title: str) -> None:
        """Handle one StreamTitle as read from the stream."""
        playing = split_title(raw_title)
        now = self.clock()
        if playing.title != self.title:
            try:
                publish(self.path, self.source.slug, playing, now)
            except OSError as error:  # the station stopped and systemd removed its directory
                log.info("%s: cannot publish: %s", self.source.slug, error)
                return
            log.info("%s: now playing %r", self.source.slug, playing.title)
            self.title = playing.title
            self.limiter.changed()
        self.maybe_trigger(now)

    def maybe_trigger(self, now: float) -> None:
        if self.trigger is not None and self.source.station_id is not None and self.limiter.due(now):
            self.trigger(self.source.station_id)

    def follow_once(self) -> None:
        response, metaint = open_stream(self.source.stream_url, self.config.read_timeout)
        with response:
            for title in stream_titles(response, metaint):
                if self.stop.is_set():
                    return
                if title is None:
                    self.maybe_trigger(self.clock())  # a call deferred by the rate limit may be due now
                else:
                    self.seen(title)

    def run(self) -> None:
        last_error = ""
        while not self.stop.is_set():
            try:
                self.follow_once()
            except Exception as error:  # noqa: BLE001 (anything an upstream can cause: the thread must live on)
                message = f"{error.__class__.__name__}: {error}"
                if message != last_error:  # one line per new problem, not one per retry
                    log.warning("%s: %s: %s", self.source.slug, redact_url(self.source.stream_url), message)
                    last_error = message
            self.stop.wait(self.config.retry_seconds)
            self.maybe_trigger(self.clock())


class Supervisor:
    """Keeps one watcher thread per running station."""

    def __init__(self, config: Config, trigger: Trigger | None, only: str | None = None) -> None:
        self.config = config
        self.trigger = trigger
        self.only = only
        self.watchers: dict[str, tuple[Watcher, threading.Thread]] = {}

    def reconcile(self, wanted: dict[str, Source]) -> None:
        for slug, (watcher, thread) in list(self.watchers.items()):
            if wanted.get(slug) != watcher.source or not thread.is_alive():
                watcher.stop.set()
                del self.watchers[slug]
        for slug, source in wanted.items():
            if slug not in self.watchers:
                watcher = Watcher(source, self.config.output_root / slug, self.config, self.trigger)
                thread = threading.Thread(target=watcher.run, name=f"watch-{slug}", daemon=True)
                thread.start()
                self.watchers[slug] = (watcher, thread)

    def wanted(self) -> dict[str, Source]:
        running = running_sources(self.config)
        return {slug: source for slug, source in running.items() if self.only in (None, slug)}

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.reconcile(self.wanted())
            stop.wait(self.config.scan_seconds)
        self.reconcile({})


def read_token(stream: TextIO) -> str:
    """The backend key from an env-file document on `stream` (hls-nowplaying.service hands it the root-only
    sync.env on standard input), never from the environment or the command line; empty without one."""
    return (dotenv_values(stream=stream, interpolate=False).get(TOKEN_KEY) or "").strip()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations-dir", type=Path, default=env.get("HLS_STATIONS_DIR"),
                        help="the stations' env files (default: $HLS_STATIONS_DIR, from nowplaying.env)")
    parser.add_argument("--output-root", type=Path, default=env.get("HLS_OUTPUT_ROOT"),
                        help="the stations' output directories (default: $HLS_OUTPUT_ROOT, from nowplaying.env)")
    parser.add_argument("--endpoint", default=env.get("GRAPHQL_ENDPOINT", ""),
                        help="backend GraphQL endpoint; empty: never call trigger_metadata_fetch")
    parser.add_argument("--token-from-stdin", action="store_true",
                        help=f"read {TOKEN_KEY} for trigger_metadata_fetch from an env file on standard input")
    parser.add_argument("--trigger-interval", type=float,
                        default=float(env.get("HLS_NOW_PLAYING_TRIGGER_INTERVAL", "30")),
                        help="seconds between two trigger_metadata_fetch calls for one station")
    parser.add_argument("--read-timeout", type=float, default=float(env.get("HLS_READ_TIMEOUT_SECONDS", "15")))
    parser.add_argument("--only", metavar="SLUG", help="follow this station only (to measure or debug)")
    args = parser.parse_args(argv)
    for flag, value in (("--stations-dir", args.stations_dir), ("--output-root", args.output_root)):
        if value is None:
            parser.error(f"{flag} or its variable in nowplaying.env is required")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup()
    config = Config(stations_dir=args.stations_dir, output_root=args.output_root, endpoint=args.endpoint.strip(),
                    token=read_token(sys.stdin) if args.token_from_stdin else "",
                    trigger_interval=args.trigger_interval, read_timeout=args.read_timeout)
    trigger = backend_trigger(config) if config.endpoint else None
    supervisor = Supervisor(config, trigger, only=args.only)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    log.info("following the stations in %s (%s)", config.output_root,
             f"trigger_metadata_fetch on {config.endpoint}" if trigger else "no backend")
    supervisor.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
