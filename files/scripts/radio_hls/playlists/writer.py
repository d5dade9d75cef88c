"""hls-playlists: every station's media playlist, from the segment lists FFmpeg writes. One process per host.

FFmpeg cuts the segments and lists the finished ones (stations/runs.py); this program lists them in
<output root>/_playlists/<slug>.m3u8, which nginx serves as /hls/<slug>/index.m3u8, and deletes segments once they
have been out of the playlist long enough. Owning the playlist is what gives it EXT-X-PROGRAM-DATE-TIME and an
EXT-X-DISCONTINUITY-SEQUENCE that survive restarts, which FFmpeg's hls muxer cannot write.

It costs three stat() calls per station per poll: the run file (.launch.json), the run's segment list and
now-playing.json; a file is read only when it changed. Before a segment is listed, its file gets the station's
titles as timed ID3 (titles.py, timed_id3.py), and the playlist an EXT-X-DATERANGE per title. A station whose
directory systemd removed (stopped) loses its playlist.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from radio_hls.common import logs
from radio_hls.common.contract import (
    LAUNCH_INFO_NAME,
    MASTER,
    NOW_PLAYING_NAME,
    PLAYLISTS_DIR_NAME,
    SLUG_PATTERN,
    STOPPED_MARKER_NAME,
    BadSetting,
    playlist_path,
    setting,
)
from radio_hls.common.files import write_atomically
from radio_hls.playlists.multivariant import Rendition as VariantEntry
from radio_hls.playlists.multivariant import measure, multivariant_text, probe_codecs
from radio_hls.playlists.renditions import Deletions, Rendition, last_title, read_playlist, retire, stamp
from radio_hls.playlists.titles import Tagging, TitleTrack
from radio_hls.stations.runs import MAX_BURST_SECONDS, Listed, Run, read_run

log = logging.getLogger("hls-playlists")

POLL_SECONDS = 0.5
# How often the output root is listed for stations that started or stopped.
DISCOVER_SECONDS = 2.0
SLUG = re.compile(SLUG_PATTERN)
PLAYLIST_SUFFIX = ".m3u8"
MAIN_URI = "index.m3u8"  # a rendition's media playlist, relative to the multivariant playlist (nginx's names)
# Segments whose titles are kept for the renditions that have not listed them yet (they cut at the same times).
TAGGINGS_KEPT = 16
# ffprobe runs at most this many at once (one per run and rendition: many at a host's boot, then rare).
PROBES_AT_ONCE = 2


@dataclass(frozen=True)
class Config:
    output_root: Path
    window_seconds: float
    stop_grace_seconds: float  # a station stopped this long stays stopped: its restart would have come
    # Stations run on other origins too (hls_station_replicas > 1): after a gap a playlist starts again at the slot,
    # so its numbers stay every origin's (renditions.Rendition.list_finished).
    replicated: bool = False

    @classmethod
    def from_env(cls, values: Mapping[str, str | None]) -> Config:
        def whole(name: str, low: int, high: int) -> int:
            value = setting(values, name)
            if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
                raise BadSetting(f"{name}={value!r} is not a whole number from {low} to {high}")
            return int(value)

        replicated = values.get("HLS_REPLICATED") or "false"
        if replicated not in ("true", "false"):
            raise BadSetting(f"HLS_REPLICATED={replicated!r} is neither true nor false")
        return cls(Path(setting(values, "HLS_OUTPUT_ROOT")), whole("HLS_WINDOW_MINUTES", 1, 1440) * 60.0,
                   float(whole("HLS_STOP_GRACE_SECONDS", 1, 86400)), replicated == "true")


class Station:
    """A running station: its main rendition, its ladder's, their titles and its multivariant playlist."""

    def __init__(self, slug: str, directory: Path, config: Config, deletions: Deletions, probes: Executor,
                 now: float) -> None:
        self.slug, self.directory, self.config = slug, directory, config
        self.deletions, self.probes = deletions, probes
        self.run: Run | None = None
        self.run_stamp: tuple[int, int, int] | None = None
        self.main = self._rendition(None)
        self.ladder: dict[str, Rendition] = {}
        self.titles = TitleTrack(directory / NOW_PLAYING_NAME, last_title(self.main.playlist))
        self.taggings: dict[str, Tagging] = {}  # by segment name: the same segment in every rendition
        self.lead = 0.0  # how far the run's timeline is ahead of the clock (its upstream's burst)
        self.codecs: dict[str, tuple[int, str]] = {}  # by rendition label: the run probed, its CODECS
        self.probing: dict[str, tuple[int, Future[str | None]]] = {}  # by rendition label: the run, the probe
        self.master_path = playlist_path(config.output_root, slug, MASTER)
        self.master_text = ""
        current = read_run(directory)
        self._follow_ladder(current, now)
        for rendition in self.renditions():
            rendition.clear_leftovers(current, now)

    def _rendition(self, name: str | None) -> Rendition:
        directory = self.directory if name is None else Run.variant_dir(self.directory, name)
        return Rendition(self.slug if name is None else f"{self.slug}/{name}", directory,
                         playlist_path(self.config.output_root, self.slug, name), self.config.window_seconds,
                         self.deletions, self.config.replicated)

    def renditions(self) -> list[Rendition]:
        return [self.main, *self.ladder.values()]

    def _follow_ladder(self, run: Run | None, now: float) -> None:
        """The ladder of `run`: renditions it has are followed, renditions it dropped retire."""
        names = [variant.name for variant in run.variants] if run else []
        for name in self.ladder.keys() - set(names):
            rendition = self.ladder.pop(name)
            if rendition.playlist is not None:
                keep = rendition.keep_seconds(rendition.playlist.target)
                for segment in rendition.playlist.segments:
                    self.deletions.add(rendition.directory / segment.name, now + keep)
            rendition.retire()
        for name in names:
            if name not in self.ladder:
                self.ladder[name] = self._rendition(name)

    def poll(self, now: float) -> bool:
        """Take in what FFmpeg finished since the last poll; False when the station is gone (stopped)."""
        run_stamp = stamp(self.directory / LAUNCH_INFO_NAME)
        if run_stamp is None and not self.directory.is_dir():
            return False
        stopped = stamp(self.directory / STOPPED_MARKER_NAME)
        if stopped is not None and now - stopped[1] / 1e9 > self.config.stop_grace_seconds:
            return False
        self.titles.poll(self.lead)  # before the segments: a change learned now goes into the next one listed
        if run_stamp != self.run_stamp:
            self.run_stamp = run_stamp
            run = read_run(self.directory)
            if run is not None and (self.run is None or run.run != self.run.run):
                self._begin(run, now)
        changed = self._probed()
        if self.run is not None:
            for rendition in self.renditions():
                added = rendition.poll(self.run, self._tagging, now)
                if added is not None:
                    changed = True
                    self._probe(rendition, self.run, added)
                    if rendition is self.main and rendition.list_stamp is not None:
                        # The list was replaced when its last segment ended: the timeline stood at that end then.
                        end = added.start + added.duration
                        self.lead = min(max(end - rendition.list_stamp[1] / 1e9, 0.0), MAX_BURST_SECONDS)
        if changed:
            self._write_master()
        return True

    def _begin(self, run: Run, now: float) -> None:
        previous = self.run
        if previous is not None:
            for rendition in self.renditions():
                rendition.end_run(previous, self._tagging, now)
        self._follow_ladder(run, now)
        self.run = run
        log.info("%s: run %d (%s, %s s segments%s)", self.slug, run.run, run.mode, run.segment_seconds,
                 "".join(f", {variant.name} {variant.bitrate}" for variant in run.variants))

    def _tagging(self, listed: Listed) -> Tagging:
        """What the segment carries, decided once for all renditions (they list it at different moments)."""
        tagging = self.taggings.get(listed.name)
        if tagging is None:
            tagging = self.taggings[listed.name] = self.titles.segment(listed.start, listed.start + listed.duration)
            while len(self.taggings) > TAGGINGS_KEPT:
                del self.taggings[next(iter(self.taggings))]
        return tagging

    def _probe(self, rendition: Rendition, run: Run, listed: Listed) -> None:
        """Measure a run's codec once per rendition, from its first segment listed, off the polling thread."""
        probed = self.codecs.get(rendition.label)
        if (probed is None or probed[0] != run.run) and rendition.label not in self.probing:
            segment = rendition.directory / listed.published
            self.probing[rendition.label] = run.run, self.probes.submit(probe_codecs, segment)

    def _probed(self) -> bool:
        """Take in the probes that finished; True when a CODECS changed."""
        changed = False
        for label, (run, future) in list(self.probing.items()):
            if not future.done():
                continue
            del self.probing[label]
            codecs = future.result()
            if codecs is None:  # the next segment listed is probed again
                log.warning("%s: no CODECS measured (ffprobe found no AAC of a known profile)", label)
                continue
            changed = changed or self.codecs.get(label, (run, ""))[1] != codecs
            self.codecs[label] = run, codecs
        return changed

    def _write_master(self) -> None:
        """The multivariant playlist, once every rendition's codec is measured and it lists a segment."""
        entries = []
        for name, rendition in [(None, self.main), *self.ladder.items()]:
            probed = self.codecs.get(rendition.label)
            peak, average = measure(rendition.measured())
            if probed is None or not peak:
                return
            entries.append(VariantEntry(MAIN_URI if name is None else f"{name}/{MAIN_URI}", probed[1], peak, average))
        text = multivariant_text(entries)
        if text == self.master_text:
            return
        try:
            write_atomically(self.master_path, text, mode=0o644, durable=False)
            self.master_text = text
        except OSError as error:
            log.error("%s: cannot write %s: %s", self.slug, self.master_path, error.strerror)

    def remove(self) -> None:
        """The station stopped: its playlists go, and its files if systemd left them (on a disk output; the empty
        directory stays, as its parent is root's, and is followed again as a station that has no run yet)."""
        for rendition in self.renditions():
            rendition.retire()
        self.master_path.unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)


class Writer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.playlists_dir = config.output_root / PLAYLISTS_DIR_NAME
        self.stations: dict[str, Station] = {}
        self.deletions = Deletions()
        self.probes = ThreadPoolExecutor(PROBES_AT_ONCE, thread_name_prefix="ffprobe")
        self.next_discovery = 0.0

    def discover(self, now: float) -> None:
        present = {entry.name for entry in os.scandir(self.config.output_root)
                   if SLUG.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)}
        for slug in present - self.stations.keys():
            try:
                self.stations[slug] = Station(slug, self.config.output_root / slug, self.config, self.deletions,
                                              self.probes, now)
            except OSError as error:  # removed between the listing and now: seen again at the next discovery
                log.debug("%s: %s", slug, error)
        for slug in self.stations.keys() - present:
            self.forget(slug)
        for playlist in self.playlists_dir.glob(f"*{PLAYLIST_SUFFIX}"):
            # <slug>.m3u8, <slug>.<rendition>.m3u8, <slug>.master.m3u8 (which reads as no media playlist)
            if playlist.name.split(".")[0] not in present:  # stopped while this program was away
                retire(playlist, read_playlist(playlist))

    def forget(self, slug: str) -> None:
        self.stations.pop(slug).remove()
        log.info("%s: stopped, playlist removed", slug)

    def tick(self, now: float) -> None:
        if now >= self.next_discovery:
            self.discover(now)
            self.next_discovery = now + DISCOVER_SECONDS
        gone = []
        for station in self.stations.values():
            try:
                if not station.poll(now):
                    gone.append(station.slug)
            except OSError as error:
                log.warning("%s: %s", station.slug, error)
        for slug in gone:  # at once, not at the next discovery: a stopped station's playlist must not linger
            self.forget(slug)
        self.deletions.run(now)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            self.tick(time.time())
            stop.wait(max(0.0, POLL_SECONDS - (time.monotonic() - started)))


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(description="Write every station's HLS media playlist (hls-playlists.service). "
                            "Settings from the environment: HLS_OUTPUT_ROOT, HLS_WINDOW_MINUTES, "
                            "HLS_STOP_GRACE_SECONDS.").parse_args(argv)
    logs.setup()
    try:
        config = Config.from_env(os.environ)
    except BadSetting as error:
        log.error("%s", error)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    log.info("writing the playlists of %s: %g minutes each", config.output_root, config.window_seconds / 60)
    Writer(config).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
