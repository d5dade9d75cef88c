"""hls-sync: make the running hls@<slug> units match the station list.

The list comes from the backend's GraphQL API, or, when no endpoint is configured, from a file that Ansible
renders from the inventory in the same JSON shape, so both go through the same code below. An origin of a network
(HLS_ORIGINS) runs only the stations placed on it (stations/placement.py) and stops the others, as it stops a station
that left the list.

Fail static: if the list cannot be had, nothing is touched and the program exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from radio_hls.common import clock, contract, logs
from radio_hls.common.contract import BadSetting, setting
from radio_hls.common.files import read_json_object, set_owner_group, write_atomically
from radio_hls.common.graphql import BackendError, execute
from radio_hls.stations.placement import Placement, placement_from_env
from radio_hls.stations.station import (
    UNIT_PREFIX,
    InvalidStation,
    IPNetwork,
    Station,
    parse_networks,
    shown,
    slug_of_unit,
    station_env,
    station_env_file,
    station_from_record,
    unit_name,
    validate_slug,
)

STATIONS_QUERY = "query GetHLSStations { stations { id title slug stream_url generate_hls_stream disabled } }"
# Deployment-wide settings copied into every station's env file: changing one restarts every station.
STATION_SETTINGS = (
    "HLS_SEGMENT_SECONDS",
    "HLS_AAC_BITRATE",
    "HLS_AAC_CODER",
    "HLS_CODEC",
    "HLS_READ_TIMEOUT_SECONDS",
    "HLS_RESTART_MAX_SECONDS",
    "HLS_VARIANTS",
)
ENV_FILE_MODE = 0o640
# systemctl takes many units per call; chunks keep the command line well under ARG_MAX.
SYSTEMCTL_CHUNK = 200
# Stations whose start systemd works on at once. Each hls@ unit's sandbox is a mount namespace, which the kernel sets
# up for one unit at a time: 200 at once took 50 ms each, a thousand at once about a second each, and the host ground
# to a halt (docs/benchmarks.md, "Many stations on one host"). So stations start in steps of this many, each step
# waiting until its units run.
STARTS_AT_ONCE = 25

log = logging.getLogger("hls-sync")

Systemctl = Callable[[Sequence[str]], str]


class SyncRefused(RuntimeError):
    """The station list looks wrong enough that acting on it could take the network off the air."""


@dataclass
class Plan:
    start: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    enable: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.start or self.restart or self.enable or self.remove)


@dataclass(frozen=True)
class Config:
    endpoint: str
    token: str
    stations_file: Path
    stations_dir: Path
    stations_group: str | None
    allow_empty: bool
    max_stations: int
    timeout: float
    settings: dict[str, str]
    # hls_upstream_allowed_networks: internal addresses a station URL may name (the demo's local Icecast).
    allowed_networks: tuple[IPNetwork, ...] = ()
    # Which of the listed stations run on this origin; None: a host on its own runs them all.
    placement: Placement | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """sync.env's settings; BadSetting for a missing path or a value the sync cannot use."""
        return cls(
            endpoint=environ.get("GRAPHQL_ENDPOINT", "").strip(),
            token=environ.get("GRAPHQL_TOKEN", "").strip(),
            stations_file=Path(setting(environ, "HLS_STATIONS_FILE")),
            stations_dir=Path(setting(environ, "HLS_STATIONS_DIR")),
            stations_group=environ.get("HLS_STATIONS_GROUP") or None,
            allow_empty=environ.get("HLS_SYNC_ALLOW_EMPTY", "false").lower() in ("1", "true", "yes"),
            max_stations=int(environ.get("HLS_SYNC_MAX_STATIONS", "1000")),
            timeout=float(environ.get("GRAPHQL_TIMEOUT_SECONDS", "20")),
            settings={key: environ[key] for key in STATION_SETTINGS if key in environ},
            allowed_networks=allowed_networks(environ.get("HLS_UPSTREAM_ALLOWED_NETWORKS", "")),
            placement=placement_from_env(environ),
        )


def allowed_networks(text: str) -> tuple[IPNetwork, ...]:
    try:
        return parse_networks(text)
    except ValueError as error:
        raise BadSetting(f"HLS_UPSTREAM_ALLOWED_NETWORKS: {error}") from None


def fetch_records(config: Config, session: requests.Session | None = None) -> list[Any]:
    """The raw station records, from the backend or from the inventory's file."""
    if config.endpoint:
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        data = execute(config.endpoint, STATIONS_QUERY, headers=headers, timeout=config.timeout, session=session)
        source = config.endpoint
    else:
        try:
            data = json.loads(config.stations_file.read_text(encoding="utf-8"))["data"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise BackendError(f"cannot read station list {config.stations_file}: {error}") from None
        source = str(config.stations_file)
    records = data.get("stations") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise BackendError(f"{source}: `stations` is missing or not a list")
    return records


@dataclass
class Selection:
    """What the station list asks for: the stations to run, the valid slugs of refused records (a deployed one
    keeps running on its last good settings) and one line per refused record, ready for the journal."""

    stations: list[Station] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def refuse(self, record: Mapping[str, Any], problem: str) -> None:
        self.problems.append(f"skipping station: {problem}")
        try:
            self.refused.add(validate_slug(record.get("slug")))
        except InvalidStation:
            pass


def wants_stream(record: Mapping[str, Any]) -> bool:
    """Whether a record asks for a stream. A flag that is not plainly true or false (null, missing, "true", 1) is
    unreadable: the record is refused like any invalid one, so a running station is never stopped by it."""
    generate, disabled = record.get("generate_hls_stream"), record.get("disabled")
    for name, value in (("generate_hls_stream", generate), ("disabled", disabled)):
        if not isinstance(value, bool):
            raise InvalidStation(f"{record_label(record)}: {name} is "
                                 f"{'missing' if name not in record else shown(value)}, not true or false")
    return generate is True and disabled is False


def record_label(record: Mapping[str, Any]) -> str:
    """The record's slug for a log line: as it is when valid, quoted and shortened when not."""
    slug = record.get("slug")
    try:
        return validate_slug(slug)
    except InvalidStation:
        return f"slug {shown(slug)}"


def precedence(station: Station) -> tuple[bool, int, str, str]:
    """Of records sharing a slug, the smallest key wins: the lowest id (records without one last), then the URL
    and title, so the backend's order never decides and reordering it never restarts a station."""
    return (station.station_id is None, station.station_id or 0, station.stream_url, station.title)


def select_stations(records: Iterable[Any], allowed_networks: Sequence[IPNetwork] = ()) -> Selection:
    """The stations to run and the records refused, with why; logs nothing (the sync logs every run, the watch
    only what changed)."""
    selection = Selection()
    chosen: dict[str, Station] = {}
    for record in records:
        if not isinstance(record, dict):
            selection.problems.append(f"skipping station record that is not an object: {shown(record)}")
            continue
        try:
            if not wants_stream(record):
                continue
            station = station_from_record(record, allowed_networks)
        except InvalidStation as error:
            selection.refuse(record, str(error))
            continue
        kept = chosen.setdefault(station.slug, station)
        if kept is not station:
            winner, loser = sorted((kept, station), key=precedence)
            chosen[station.slug] = winner
            selection.problems.append(
                f"skipping station: slug {station.slug!r} is used by more than one record; the one with the lowest "
                f"id is kept (id {winner.station_id}), not id {loser.station_id}")
    selection.stations = list(chosen.values())
    return selection


def read_current(stations_dir: Path) -> dict[str, str]:
    current = {}
    for path in stations_dir.glob(f"*{contract.ENV_SUFFIX}"):
        try:
            current[path.stem] = path.read_text(encoding="utf-8")
        except OSError as error:
            log.warning("cannot read %s: %s", path, error)
            current[path.stem] = ""
    return current


def make_plan(
    desired: Mapping[str, str],
    current: Mapping[str, str],
    enabled: set[str],
    running_units: set[str],
    keep: frozenset[str] | set[str] = frozenset(),
) -> Plan:
    """Decide what to do; pure, so the rules can be tested without a systemd."""
    plan = Plan()
    for slug, content in sorted(desired.items()):
        if slug not in current:
            plan.start.append(slug)
        elif current[slug] != content:
            plan.restart.append(slug)
        elif slug not in enabled:
            plan.enable.append(slug)
    known = set(current) | enabled | running_units
    plan.remove = sorted(slug for slug in known if slug not in desired and slug not in keep)
    return plan


def run_systemctl(args: Sequence[str]) -> str:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    # is-enabled answers non-zero for disabled units; reset-failed for units that are not loaded.
    if result.returncode != 0 and args[0] not in ("is-enabled", "reset-failed"):
        raise RuntimeError(f"systemctl {' '.join(args[:2])} ... failed: {result.stderr.strip()}")
    return result.stdout


def units(slugs: Iterable[str]) -> list[str]:
    return [unit_name(slug) for slug in slugs]


def in_chunks(systemctl: Systemctl, verb: Sequence[str], slugs: Sequence[str]) -> None:
    for index in range(0, len(slugs), SYSTEMCTL_CHUNK):
        systemctl([*verb, *units(slugs[index : index + SYSTEMCTL_CHUNK])])


def start_in_steps(systemctl: Systemctl, slugs: Sequence[str]) -> None:
    """Start the stations STARTS_AT_ONCE at a time. A step that systemd refuses in part is logged, and the next one
    goes on: its units that did start run, and Restart=always retries the others."""
    for index in range(0, len(slugs), STARTS_AT_ONCE):
        try:
            systemctl(["start", *units(slugs[index : index + STARTS_AT_ONCE])])
        except RuntimeError as error:
            log.warning("%s", error)


def systemd_state(systemctl: Systemctl, slugs: Sequence[str]) -> tuple[set[str], set[str]]:
    """(enabled slugs among `slugs`, slugs of every loaded hls@ instance)."""
    enabled: set[str] = set()
    for index in range(0, len(slugs), SYSTEMCTL_CHUNK):
        chunk = slugs[index : index + SYSTEMCTL_CHUNK]
        answers = systemctl(["is-enabled", *units(chunk)]).split()
        enabled.update(slug for slug, answer in zip(chunk, answers, strict=False) if answer == "enabled")
    listing = systemctl(["list-units", "--all", "--plain", "--no-legend", "--type=service", f"{UNIT_PREFIX}*"])
    names = (line.split()[0] for line in listing.splitlines() if line.split())
    loaded = {slug for slug in map(slug_of_unit, names) if slug is not None}
    return enabled, loaded


def apply_plan(plan: Plan, desired: Mapping[str, str], config: Config, systemctl: Systemctl) -> None:
    changed = set(plan.start + plan.restart)
    for slug in desired:
        path = station_env_file(config.stations_dir, slug)
        if slug in changed:
            write_atomically(path, desired[slug], mode=ENV_FILE_MODE, group=config.stations_group)
        else:
            # The units read their file as the hls user: keep it readable even if someone changed it.
            set_owner_group(path, ENV_FILE_MODE, config.stations_group)
    if plan.start or plan.enable:
        in_chunks(systemctl, ["enable"], plan.start + plan.enable)
        start_in_steps(systemctl, plan.start)
    if plan.restart:
        in_chunks(systemctl, ["enable"], plan.restart)
        in_chunks(systemctl, ["restart", "--no-block"], plan.restart)
    if plan.remove:
        in_chunks(systemctl, ["disable", "--now"], plan.remove)
        # A removed unit that had failed would otherwise stay listed, and be "removed" again every run.
        in_chunks(systemctl, ["reset-failed"], plan.remove)
        for slug in plan.remove:
            station_env_file(config.stations_dir, slug).unlink(missing_ok=True)


@dataclass(frozen=True)
class Desired:
    env_files: dict[str, str]  # slug -> the env file its station should have, for the stations placed here
    refused: set[str]  # valid slugs of refused records
    problems: list[str]  # one journal line per refused record
    listed: int  # the stations the list asks for, on whichever origins


def desired_state(config: Config, session: requests.Session | None = None) -> Desired:
    """What the station list asks of this host, as env files, plus what it asks for that is refused."""
    selection = select_stations(fetch_records(config, session), config.allowed_networks)
    placement = config.placement
    env_files = {station.slug: station_env(station, config.settings) for station in selection.stations
                 if placement is None or placement.runs_here(station.slug)}
    return Desired(env_files, selection.refused, selection.problems, len(selection.stations))


def sync(config: Config, systemctl: Systemctl | None = None) -> Plan:
    systemctl = systemctl or run_systemctl
    wanted = desired_state(config)
    for problem in wanted.problems:
        log.error("%s", problem)
    desired, refused = wanted.env_files, wanted.refused
    current = read_current(config.stations_dir)
    if len(desired) > config.max_stations:
        raise SyncRefused(
            f"the station list wants {len(desired)} stations{' on this origin' if config.placement else ''}, more "
            f"than HLS_SYNC_MAX_STATIONS={config.max_stations}; refusing to start them (raise the limit if the host "
            "can carry them)"
        )
    # Deployed stations whose records are refused keep running: only the others would be stopped. An origin that
    # none of the listed stations is placed on stops its own: only an empty list is suspect.
    would_stop = set(current) - refused
    if not wanted.listed and would_stop and not config.allow_empty:
        raise SyncRefused(
            f"the station list is empty while {len(would_stop)} station(s) are deployed; refusing to stop them "
            "(set HLS_SYNC_ALLOW_EMPTY=true to allow it)"
        )
    enabled, loaded = systemd_state(systemctl, sorted(set(desired) | set(current)))
    plan = make_plan(desired, current, enabled, loaded, keep=refused & set(current))
    apply_plan(plan, desired, config, systemctl)
    for verb, slugs in (("started", plan.start), ("restarted", plan.restart), ("enabled", plan.enable),
                        ("stopped and removed", plan.remove)):
        if slugs:
            log.info("%s %d station(s): %s", verb, len(slugs), ", ".join(slugs))
    if config.placement is not None:
        log.info("placed here (%s): %d of %d station(s), each on %d origin(s) of %d unless pinned",
                 config.placement.here, len(desired), wanted.listed, config.placement.replicas,
                 len(config.placement.origins))
    log.info("in sync: %d station(s) wanted, %d refused, %d changed", len(desired), len(refused),
             len(plan.start) + len(plan.restart) + len(plan.enable) + len(plan.remove))
    return plan


def record_outcome(path: Path, success: bool, now: float) -> None:
    """Keep the last success time and the failure count where hls-status reads them (for /metrics)."""
    previous = read_json_object(path)
    failures = previous.get("failures_total")
    failures = failures if isinstance(failures, int) and not isinstance(failures, bool) else 0
    stamp = clock.iso(now)
    document = {
        "last_run_at": stamp,
        "last_run_ok": success,
        "last_success_at": stamp if success else previous.get("last_success_at"),
        "failures_total": failures + (0 if success else 1),
    }
    try:
        write_atomically(path, json.dumps(document) + "\n", mode=0o644)
    except OSError as error:
        log.warning("cannot record the outcome in %s: %s", path, error)


def run(config: Config) -> bool:
    try:
        sync(config)
    except (BackendError, SyncRefused) as error:
        log.error("no change made: %s", error)
        return False
    except (RuntimeError, OSError) as error:
        log.error("sync failed part way: %s", error)
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logs.setup()
    try:
        config = Config.from_env(os.environ)
    except BadSetting as error:
        log.error("no change made: %s", error)
        return 1
    success = run(config)
    status_file = os.environ.get("HLS_SYNC_STATUS_FILE")
    if status_file:
        record_outcome(Path(status_file), success, time.time())
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
