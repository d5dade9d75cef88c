"""What every station and background job looks like right now: the facts hls-status, hls-health and hlsctl share.

Read-only: systemd (one `systemctl show` for the stations, hls-sync and hls-analytics), the station list
(/etc/hls/stations/*.env), the output directories (/run/hls/<slug>: playlist, segments, the launcher's
.launch.json, now-playing.json), the analytics' listeners file (listener numbers, spool, dead letters, counters) and
the sync's status file. Stream URLs are never read into a snapshot: they may carry credentials, and snapshots
end up on web pages.

On an edge (HLS_EDGE=true, role hls_edge) no station runs: the stations are those its listeners ask for, from the
listeners file alone, and the only job is the analytics.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from radio_hls.common import clock
from radio_hls.common.contract import (
    ENV_SUFFIX,
    LAUNCH_INFO_NAME,
    NOW_PLAYING_NAME,
    BadSetting,
    playlist_path,
    setting,
)
from radio_hls.common.files import read_json
from radio_hls.stations.station import station_env_file, unit_name

UNIT_PROPERTIES = ("Id", "LoadState", "UnitFileState", "ActiveState", "SubState", "Result", "NRestarts",
                   "ActiveEnterTimestampMonotonic")
# The background jobs whose last run /metrics reports (job name, unit).
JOB_UNITS = (("sync", "hls-sync.service"), ("analytics", "hls-analytics.service"))
EDGE_JOB_UNITS = JOB_UNITS[1:]
DEFAULT_MAX_PLAYLIST_AGE = 60.0

Systemctl = Callable[[Sequence[str]], str]


@dataclass(frozen=True)
class Config:
    """status.env: where the stations, their output, their logs and the jobs' files are (the role passes every
    path), and the playlist age a healthy station stays under."""

    stations_dir: Path
    output_root: Path
    log_dir: Path
    listeners_file: Path
    sync_status_file: Path
    max_playlist_age: float = DEFAULT_MAX_PLAYLIST_AGE
    edge: bool = False  # a cache edge: no station runs here, listeners arrive

    @classmethod
    def from_env(cls, values: Mapping[str, str | None]) -> Config:
        """BadSetting for a path that is not set, or an HLS_EDGE that is neither true nor false."""
        edge = (values.get("HLS_EDGE") or "false").strip().lower()
        if edge not in ("true", "false"):
            raise BadSetting(f"HLS_EDGE must be true or false, not {edge!r}")
        return cls(
            stations_dir=Path(setting(values, "HLS_STATIONS_DIR")),
            output_root=Path(setting(values, "HLS_OUTPUT_ROOT")),
            log_dir=Path(setting(values, "HLS_LOG_DIR")),
            listeners_file=Path(setting(values, "HLS_LISTENERS_FILE")),
            sync_status_file=Path(setting(values, "HLS_SYNC_STATUS_FILE")),
            max_playlist_age=float(values.get("HLS_HEALTH_MAX_PLAYLIST_AGE") or DEFAULT_MAX_PLAYLIST_AGE),
            edge=edge == "true",
        )


def read_settings(path: Path) -> Mapping[str, str | None]:
    """The settings file the unit or wrapper names (status.env); BadSetting when it cannot be read."""
    try:
        with path.open(encoding="utf-8") as handle:
            return dotenv_values(stream=handle, interpolate=False)
    except OSError as error:
        raise BadSetting(f"cannot read the settings file {path}: {error.strerror}") from None


@dataclass
class Station:
    slug: str
    title: str = ""
    station_id: int | None = None
    enabled: bool = False
    active_state: str = "inactive"
    sub_state: str = "dead"
    restarts: int = 0
    uptime: float | None = None  # seconds since the unit last became active
    playlist_age: float | None = None  # seconds since the playlist was written; None: no playlist
    segments: list[str] = field(default_factory=list)  # as listed in the playlist
    newest_segment_bytes: int | None = None
    upstream_codec: str | None = None
    mode: str | None = None  # copy | transcode, as the launcher chose at the last start
    listeners: int = 0
    now_playing: dict[str, Any] | None = None
    title_changed_at: float | None = None  # Unix time of the last title change (now-playing.json's changed_at)

    @property
    def state(self) -> str:
        if self.sub_state in ("", self.active_state):
            return self.active_state
        return f"{self.active_state} ({self.sub_state})"


@dataclass(frozen=True)
class Job:
    """A background job's health: its unit's last result, and what it records itself (None: unknown)."""

    name: str
    last_run_ok: bool | None = None
    last_success: float | None = None  # Unix time
    failures_total: int | None = None


@dataclass(frozen=True)
class Analytics:
    """What the listener analytics report in their listeners file besides the numbers (None: no file)."""

    updated_at: float | None = None
    spool_batches: int | None = None
    spool_bytes: int | None = None
    dropped_events_total: int | None = None
    dead_letter_batches: int | None = None  # refused for good, kept (bounded) in the dead-letter directory
    dead_letter_bytes: int | None = None
    dead_letter_events_total: int | None = None  # refused for good, ever
    resent_batches_total: int | None = None  # sent again after an attempt whose answer was lost, ever


@dataclass
class Snapshot:
    generated_at: float
    stations: list[Station]
    jobs: list[Job]
    analytics: Analytics
    edge: bool = False  # the stations are the ones listeners ask for here, none runs here


def run_systemctl(args: Sequence[str]) -> str:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False).stdout


def count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class SnapshotError(RuntimeError):
    """The station list cannot be read: no snapshot rather than one that shows no stations."""


def station_slugs(stations_dir: Path) -> list[str]:
    """The stations of the list (their env files); none when the directory does not exist (yet)."""
    try:
        with os.scandir(stations_dir) as entries:
            return sorted(entry.name[: -len(ENV_SUFFIX)] for entry in entries
                          if entry.name.endswith(ENV_SUFFIX) and entry.is_file())
    except FileNotFoundError:
        return []
    except OSError as error:
        raise SnapshotError(f"cannot read the station list {stations_dir}: {error.strerror} "
                            f"(run as root or as a member of the hls group)") from None


def parse_show(output: str) -> dict[str, dict[str, str]]:
    """`systemctl show` output for several units, keyed by unit Id."""
    units: dict[str, dict[str, str]] = {}
    for block in output.split("\n\n"):
        properties = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if properties.get("Id"):
            units[properties["Id"]] = properties
    return units


def apply_unit(station: Station, unit: Mapping[str, str], monotonic_now: float) -> None:
    station.enabled = unit.get("UnitFileState") in ("enabled", "enabled-runtime")
    station.active_state = unit.get("ActiveState") or "inactive"
    station.sub_state = unit.get("SubState") or ""
    restarts = unit.get("NRestarts", "")
    station.restarts = int(restarts) if restarts.isascii() and restarts.isdigit() else 0
    entered = unit.get("ActiveEnterTimestampMonotonic", "")
    if station.active_state == "active" and entered.isascii() and entered.isdigit() and int(entered) > 0:
        station.uptime = max(0.0, monotonic_now - int(entered) / 1e6)


def playlist_segments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def apply_output(station: Station, output_root: Path, now: float) -> None:
    directory = output_root / station.slug
    playlist = playlist_path(output_root, station.slug)
    try:
        station.playlist_age = max(0.0, now - playlist.stat().st_mtime)
        station.segments = playlist_segments(playlist.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        station.playlist_age, station.segments = None, []
    if station.segments:
        try:
            station.newest_segment_bytes = (directory / Path(station.segments[-1]).name).stat().st_size
        except OSError:
            station.newest_segment_bytes = None
    launch = read_json(directory / LAUNCH_INFO_NAME)
    if isinstance(launch, dict):
        codec, mode = launch.get("upstream_codec"), launch.get("mode")
        station.upstream_codec = codec if isinstance(codec, str) else None
        station.mode = mode if mode in ("copy", "transcode") else None
    playing = read_json(directory / NOW_PLAYING_NAME)
    if isinstance(playing, dict) and isinstance(playing.get("title"), str):
        station.now_playing = {key: playing.get(key) for key in ("title", "artist", "song", "updated_at")}
        changed = playing.get("changed_at")
        station.title_changed_at = float(changed) if isinstance(changed, (int, float)) \
            and not isinstance(changed, bool) else None


def read_identity(station: Station, env_file: Path) -> None:
    """The display title and backend id; the stream URL is deliberately not kept."""
    try:
        values = dotenv_values(env_file, interpolate=False)
    except OSError:
        return
    station.title = values.get("HLS_STATION_TITLE") or ""
    raw_id = values.get("HLS_STATION_ID") or ""
    station.station_id = int(raw_id) if raw_id.isascii() and raw_id.isdigit() else None


def read_listeners(path: Path) -> tuple[dict[str, int], Analytics]:
    """Listener numbers per slug, and the spool, dead letters and counters, from the analytics' file; nothing
    while it does not exist (or a number is missing: written by an older version)."""
    document = read_json(path)
    if not isinstance(document, dict):
        return {}, Analytics()
    stations = document.get("stations")
    numbers = {slug: n for slug, value in stations.items() if (n := count(value)) is not None} \
        if isinstance(stations, dict) else {}
    spool, dead = (part if isinstance(part := document.get(key), dict) else {} for key in ("spool", "dead_letter"))
    return numbers, Analytics(updated_at=clock.parse(document.get("updated_at")),
                              spool_batches=count(spool.get("batches")), spool_bytes=count(spool.get("bytes")),
                              dropped_events_total=count(document.get("dropped_events_total")),
                              dead_letter_batches=count(dead.get("batches")),
                              dead_letter_bytes=count(dead.get("bytes")),
                              dead_letter_events_total=count(document.get("dead_letter_events_total")),
                              resent_batches_total=count(document.get("resent_batches_total")))


def read_job(name: str, unit: Mapping[str, str], status_file: Path | None = None) -> Job:
    """The unit's last result (a oneshot keeps it until its next run), plus the job's own status file."""
    last_run_ok = unit.get("Result") == "success" if unit.get("LoadState") == "loaded" else None
    document = read_json(status_file) if status_file is not None else None
    if not isinstance(document, dict):
        return Job(name, last_run_ok)
    return Job(name, last_run_ok, last_success=clock.parse(document.get("last_success_at")),
               failures_total=count(document.get("failures_total")))


def collect(config: Config, systemctl: Systemctl = run_systemctl, now: float | None = None,
            monotonic_now: float | None = None) -> Snapshot:
    now = time.time() if now is None else now
    monotonic_now = time.monotonic() if monotonic_now is None else monotonic_now
    slugs = [] if config.edge else station_slugs(config.stations_dir)
    job_units = EDGE_JOB_UNITS if config.edge else JOB_UNITS
    units = parse_show(systemctl(["show", "--property=" + ",".join(UNIT_PROPERTIES),
                                  *map(unit_name, slugs), *(unit for _, unit in job_units)]))
    listeners, analytics = read_listeners(config.listeners_file)
    # An edge's stations: those with listeners here now (the analytics list no station without).
    stations = [Station(slug, listeners=number) for slug, number in sorted(listeners.items())] if config.edge else []
    for slug in slugs:
        station = Station(slug)
        read_identity(station, station_env_file(config.stations_dir, slug))
        apply_unit(station, units.get(unit_name(slug), {}), monotonic_now)
        apply_output(station, config.output_root, now)
        station.listeners = listeners.get(slug, 0)
        stations.append(station)
    status_files = {"sync": config.sync_status_file}
    jobs = [read_job(name, units.get(unit, {}), status_files.get(name)) for name, unit in job_units]
    return Snapshot(generated_at=now, stations=stations, jobs=jobs, analytics=analytics, edge=config.edge)
