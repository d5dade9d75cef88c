"""hls-metrics: a snapshot in the Prometheus text exposition format (version 0.0.4).

Printed to stdout by `hls-metrics`; hls-status writes the same text to the file nginx serves at
/metrics (and to node_exporter's textfile directory when one is configured).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from radio_hls.common.contract import BadSetting
from radio_hls.operations.health import StationHealth, evaluate, host_health
from radio_hls.operations.snapshot import Config, Snapshot, SnapshotError, collect, read_settings


@dataclass
class Family:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((labels, float(value)))


def single(name: str, kind: str, help: str, value: float | None) -> Family:
    """A family of one unlabelled sample (none when the value is unknown)."""
    family = Family(name, kind, help)
    family.add(value)
    return family


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render_families(families: Sequence[Family]) -> str:
    out = []
    for family in families:
        out.append(f"# HELP {family.name} {family.help}")
        out.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            label_text = ",".join(f'{key}="{escape(text)}"' for key, text in labels.items())
            out.append(f"{family.name}{{{label_text}}} {number(value)}" if labels else f"{family.name} {number(value)}")
    return "\n".join(out) + "\n"


def families(snapshot: Snapshot, health: Sequence[StationHealth]) -> list[Family]:
    healthy = {result.slug: result.healthy for result in health}
    up = Family("hls_station_up", "gauge", "1 when the station's hls@ unit is active.")
    enabled = Family("hls_station_enabled", "gauge", "1 when the station's hls@ unit is enabled (it should run).")
    ok = Family("hls_station_healthy", "gauge", "1 when the station passes the health check (hls-health).")
    age = Family("hls_station_playlist_age_seconds", "gauge", "Seconds since the station's playlist was written.")
    segments = Family("hls_station_segments", "gauge", "Segments listed in the station's playlist.")
    newest = Family("hls_station_newest_segment_bytes", "gauge", "Size of the newest listed segment.")
    restarts = Family("hls_station_restarts_total", "counter", "Automatic restarts of the unit (systemd NRestarts).")
    uptime = Family("hls_station_uptime_seconds", "gauge", "Seconds since the unit last became active.")
    info = Family("hls_station_info", "gauge",
                  "Upstream codec and copy or transcode, as chosen at the station's last start (value 1).")
    listeners = Family("hls_station_listeners", "gauge", "Current listeners, from the listener analytics.")
    title_changed = Family("hls_station_title_changed_timestamp_seconds", "gauge",
                           "Unix time the station's now-playing title last changed (absent without a title).")
    for station in snapshot.stations:
        slug = station.slug
        up.add(station.active_state == "active", station=slug)
        enabled.add(station.enabled, station=slug)
        ok.add(healthy.get(slug, False), station=slug)
        age.add(station.playlist_age, station=slug)
        segments.add(len(station.segments), station=slug)
        newest.add(station.newest_segment_bytes, station=slug)
        restarts.add(station.restarts, station=slug)
        uptime.add(station.uptime, station=slug)
        if station.mode is not None:
            info.add(1, station=slug, upstream_codec=station.upstream_codec or "unknown", mode=station.mode)
        listeners.add(station.listeners, station=slug)
        title_changed.add(station.title_changed_at, station=slug)
    last_ok = Family("hls_job_last_run_ok", "gauge", "1 when the job's last run succeeded (systemd Result).")
    last_success = Family("hls_job_last_success_timestamp_seconds", "gauge",
                          "Unix time of the job's last successful run.")
    failures = Family("hls_job_failures_total", "counter", "Failed runs of the job.")
    for job in snapshot.jobs:
        last_ok.add(job.last_run_ok, job_name=job.name)
        last_success.add(job.last_success, job_name=job.name)
        failures.add(job.failures_total, job_name=job.name)
    analytics = snapshot.analytics
    totals = [
        single("hls_analytics_updated_timestamp_seconds", "gauge",
               "Unix time the analytics last wrote the listener numbers.", analytics.updated_at),
        single("hls_analytics_spool_batches", "gauge", "Event batches spooled, waiting for the backend.",
               analytics.spool_batches),
        single("hls_analytics_spool_bytes", "gauge", "Size of the analytics spool.", analytics.spool_bytes),
        single("hls_analytics_dropped_events_total", "counter", "Events dropped because the spool was full.",
               analytics.dropped_events_total),
        single("hls_analytics_dead_letter_batches", "gauge",
               "Event batches the backend refused for good, kept in the dead-letter directory (bounded).",
               analytics.dead_letter_batches),
        single("hls_analytics_dead_letter_bytes", "gauge", "Size of the dead-letter directory.",
               analytics.dead_letter_bytes),
        single("hls_analytics_dead_letter_events_total", "counter",
               "Events in batches the backend refused for good (it accepted other batches).",
               analytics.dead_letter_events_total),
        single("hls_analytics_resent_batches_total", "counter",
               "Batches sent again after an attempt whose answer was lost (timeout, connection dropped after "
               "sending, gateway timeout): the backend may have received each of them twice.",
               analytics.resent_batches_total),
        # GET /health's verdict as a metric, so that an alert fires on what load balancers see (the other half
        # of /health, hls-status vouching for the current 10 s, is the timestamp below going stale).
        single("hls_host_serving", "gauge",
               "1 while this host serves by this run's verdict (GET /health answers 200 while fresh).",
               host_health(list(health)).serving),
        single("hls_status_generated_timestamp_seconds", "gauge",
               "Unix time these metrics were collected (alert when it falls behind).",
               round(snapshot.generated_at, 3)),
    ]
    # An edge has listeners only: no hls_station_up or _healthy of stations its origins run (alerts on them would fire).
    stations = [listeners] if snapshot.edge else [up, enabled, ok, age, segments, newest, restarts, uptime, info,
                                                  listeners, title_changed]
    return [*stations, last_ok, last_success, failures, *totals]


def render(snapshot: Snapshot, health: Sequence[StationHealth]) -> str:
    return render_families(families(snapshot, health))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the settings file the role writes (status.env)")
    args = parser.parse_args(argv)
    try:
        config = Config.from_env(read_settings(args.config))
        snapshot = collect(config)
    except (BadSetting, SnapshotError) as error:
        print(f"hls-metrics: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(render(snapshot, evaluate(snapshot, config.max_playlist_age)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
