"""Operating the fleet: /health, /metrics, now playing, hlsctl and the status page in a real browser."""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import (
    BACKEND,
    TOKEN,
    http,
    main_pid,
    playlist,
    run_sync,
    session_log,
    station_ready,
    streaming_ffmpeg_pid,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

SLUGS = ["demo-mp3", "demo-aac"]
STATION_IDS = {"demo-mp3": 1, "demo-aac": 2}
HEALTH = "/opt/hls/venv/bin/hls-health --config /etc/hls/status.env"
LISTENERS = "/run/hls-analytics/listeners.json"
ICECAST_ADMIN = "http://127.0.0.1:8000/admin/metadata"
REPO = Path(__file__).resolve().parents[3]
TRIGGER_INTERVAL = 5  # hls_now_playing_trigger_interval in molecule.yml
# s for a title change to reach a player as timed ID3: hls-nowplaying, the next segment (2 s) cut, tagged and listed,
# the player's next playlist fetch and segment; measured in seconds, generous for 2 shared cores.
IN_STREAM_TITLE_SECONDS = 90
STATUS_INTERVAL = 2  # hls_status_interval in molecule.yml


def metrics(host) -> dict[str, list]:
    """Metric samples by sample name, parsed by prometheus-client."""
    status, headers, body = http(host, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    by_name: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append(sample)
    return by_name


def value(samples: dict[str, list], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    return found[0] if found else None


def health(host, path: str = "/health") -> tuple[int, dict]:
    status, headers, body = http(host, path)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


def all_ready(host) -> None:
    for slug in SLUGS:
        station_ready(host, slug, min_segments=1)


def set_title(host, mount: str, title: str) -> None:
    host.check_output(f"curl -fsS -G -u admin:demo-source --data-urlencode mount=/{mount} "
                      f"--data-urlencode mode=updinfo --data-urlencode song={shlex.quote(title)} {ICECAST_ADMIN}")


def now_playing(host, slug: str) -> dict | None:
    status, _, body = http(host, f"/hls/{slug}/now-playing.json")
    return json.loads(body) if status == 200 else None


def fetches(host, station_id: int) -> int:
    state = json.loads(host.check_output(f"curl -fsS {BACKEND}/admin/state"))
    return sum(1 for entry in state["metadata_fetches"] if entry["station_id"] == station_id)


@pytest.fixture
def fixed_titles(host):
    """The demo's title timer paused, so only the test changes titles; resumed afterwards. The service too: a run
    the timer has just started would otherwise overwrite the test's first title."""
    host.check_output("systemctl stop hls-demo-titles.timer hls-demo-titles.service")
    yield
    host.check_output("systemctl start hls-demo-titles.timer")


@pytest.fixture
def listeners_file(host):
    """The analytics paused and their listeners file written by the test; both put back afterwards."""
    host.check_output("systemctl stop hls-analytics.timer hls-analytics.service")
    host.check_output(f"mkdir -p {os.path.dirname(LISTENERS)} && cp -a {LISTENERS} {LISTENERS}.test-backup || true")

    def write(document: dict) -> None:
        host.check_output(f"printf '%s' {shlex.quote(json.dumps(document))} > {LISTENERS}")

    yield write
    host.check_output(f"if [ -e {LISTENERS}.test-backup ]; then mv {LISTENERS}.test-backup {LISTENERS}; "
                      f"else rm -f {LISTENERS}; fi")
    host.check_output("systemctl start hls-analytics.timer")


# --- the units ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", ["hls-status.timer", "hls-nowplaying.service", "hls-demo-titles.timer"])
def test_operations_units_run(host, unit):
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


def test_status_and_nowplaying_run_unprivileged(host):
    for unit in ("hls-status.service", "hls-nowplaying.service"):
        assert host.check_output(f"systemctl show -p User --value {unit}") == "hls"
    # hls-nowplaying gets the backend key on standard input from root-only sync.env: in no environment,
    # command line or other file (test_hostile checks the files).
    pid = int(host.check_output("systemctl show -p MainPID --value hls-nowplaying.service"))
    for place in ("environ", "cmdline"):
        assert TOKEN not in host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/{place}")
    assert "--token-from-stdin" in host.file(f"/proc/{pid}/cmdline").content_string


def test_nowplaying_may_hold_a_connection_to_each_of_the_most_stations_the_sync_takes(host):
    # One socket per station: systemd's default limit of 1,024 open files timed out a 1,000-station host's watchers.
    most = int(host.check_output("sed -n 's/^HLS_SYNC_MAX_STATIONS=//p' /etc/hls/sync.env"))
    pid = int(host.check_output("systemctl show -p MainPID --value hls-nowplaying.service"))
    limits = host.check_output(f"grep '^Max open files' /proc/{pid}/limits").split()
    assert int(limits[3]) > most + 100, limits  # the soft limit, with room for its own files


# --- health ------------------------------------------------------------------------------------------------------

def test_health_stays_200_and_names_a_stopped_station(host):
    # /health says whether the host serves: one station stopped is for the per-station endpoints and the CLI.
    all_ready(host)
    status, report = wait_for(lambda: (r := health(host))[0] == 200 and r[1]["status"] == "ok" and r,
                              what="/health to answer 200 ok")
    assert report["unhealthy"] == [] and report["stations_healthy"] == len(SLUGS)
    stations = {s["slug"] for s in health(host, "/health/stations")[1]["stations"] if s["healthy"] and s["should_run"]}
    assert stations == set(SLUGS)
    assert host.run(HEALTH).rc == 0

    streaming_ffmpeg_pid(host, "demo-mp3")  # a stop while FFmpeg still opens its upstream exits 1, not 255
    host.check_output("systemctl stop hls@demo-mp3")
    try:
        status, report = wait_for(lambda: (r := health(host))[1]["status"] == "degraded" and r,
                                  what="/health to say degraded")
        assert (status, report["unhealthy"]) == (200, ["demo-mp3"])
        assert health(host, "/health/stations/demo-mp3")[0] == 503
        # A stop on purpose is inactive, never "failed" (FFmpeg's 255 on SIGTERM is a success for systemd). The
        # playlist goes at hls-playlists' next poll after systemd removed the directory, which hls-status's verdict
        # may come before.
        expected = "UNHEALTHY demo-mp3: unit is inactive (dead); no playlist"
        cli = wait_for(lambda: (r := host.run(HEALTH)).stdout.strip() == expected and r, timeout=30,
                       what="hls-health to find the playlist gone")
        assert cli.rc == 1
        machine = json.loads(host.run(f"{HEALTH} --json").stdout)
        assert (machine["status"], machine["host"]) == ("unhealthy", "degraded")
    finally:
        host.check_output("systemctl start hls@demo-mp3")
    station_ready(host, "demo-mp3", min_segments=1)
    wait_for(lambda: health(host)[1]["status"] == "ok", what="/health to say ok again")


def test_health_cli_flags_a_stale_playlist(host):
    all_ready(host)
    cli = host.run(f"{HEALTH} --max-age 0")
    assert cli.rc == 2  # no station healthy: the host serves nothing
    *stations, verdict = cli.stdout.splitlines()
    assert all(line.startswith("UNHEALTHY ") and "s old (limit 0 s)" in line for line in stations)
    assert len(stations) == 2
    assert verdict == "HOST UNHEALTHY: none of the 2 station(s) that should run is healthy"


# --- metrics -------------------------------------------------------------------------------------------------------

def systemd_restarts(host, slug: str) -> int:
    return int(host.check_output(f"systemctl show -p NRestarts --value hls@{slug}.service"))


def test_metrics_parse_and_describe_every_station(host):
    all_ready(host)

    def agrees(m: dict[str, list]) -> bool:
        """Every station's numbers as systemd, nginx and the analytics tell them (retried: each may move on)."""
        listeners = json.loads(host.file(LISTENERS).content_string)["stations"]
        return all(value(m, "hls_station_up", station=s) == 1
                   and value(m, "hls_station_restarts_total", station=s) == systemd_restarts(host, s)
                   and value(m, "hls_station_segments", station=s) == len(getattr(playlist(host, s), "segments", ()))
                   and value(m, "hls_station_listeners", station=s) == listeners.get(s, 0) for s in SLUGS)

    samples = wait_for(lambda: (m := metrics(host)) and agrees(m) and m,
                       what="/metrics to agree with systemd, the playlists and the listeners file")
    for slug in SLUGS:
        assert value(samples, "hls_station_enabled", station=slug) == 1
        assert value(samples, "hls_station_healthy", station=slug) == 1
        assert 0 <= value(samples, "hls_station_playlist_age_seconds", station=slug) < 60
        assert value(samples, "hls_station_newest_segment_bytes", station=slug) > 1000  # 2 s of AAC, not a stub
    assert value(samples, "hls_station_info", station="demo-aac", upstream_codec="aac", mode="copy") == 1
    assert value(samples, "hls_station_info", station="demo-mp3", upstream_codec="mp3", mode="transcode") == 1
    assert value(samples, "hls_status_generated_timestamp_seconds") > 1_700_000_000


@pytest.fixture
def only_manual_syncs(host):
    """The sync timer and watch stopped, so that every sync run is the test's; started again afterwards."""
    host.check_output("systemctl stop hls-sync.timer hls-sync-watch.service")
    yield
    host.check_output("systemctl start hls-sync.timer hls-sync-watch.service")


def sync_run_in_metrics(host, ok: bool) -> tuple[int, dict[str, list]]:
    """Run one sync that must succeed (`ok`) or fail; (host time it started, /metrics collected after it ended)."""
    started = int(host.check_output("date +%s"))
    assert (run_sync(host).rc == 0) == ok
    ended = int(host.check_output("date +%s"))
    samples = wait_for(lambda: (m := metrics(host)) and value(m, "hls_status_generated_timestamp_seconds") > ended + 1
                       and m, what="/metrics collected after the sync")
    assert value(samples, "hls_job_last_run_ok", job_name="sync") == int(ok)
    return started, samples


def test_metrics_follow_a_failed_and_a_good_sync(host, backend, only_manual_syncs):
    started, before = sync_run_in_metrics(host, ok=True)
    failures = value(before, "hls_job_failures_total", job_name="sync")
    last_success = value(before, "hls_job_last_success_timestamp_seconds", job_name="sync")
    assert last_success >= started

    backend(fail="500")
    _, failed = sync_run_in_metrics(host, ok=False)
    assert value(failed, "hls_job_failures_total", job_name="sync") == failures + 1
    assert value(failed, "hls_job_last_success_timestamp_seconds", job_name="sync") == last_success

    backend(fail=None)
    started, good = sync_run_in_metrics(host, ok=True)
    assert value(good, "hls_job_failures_total", job_name="sync") == failures + 1
    assert value(good, "hls_job_last_success_timestamp_seconds", job_name="sync") >= started


def test_metrics_refuse_addresses_outside_the_allow_list(host):
    # molecule.yml: hls_nginx_metrics_allow [127.0.0.1]; a request relayed by the trusted proxy on loopback
    # for another client is that client's, and refused.
    assert http(host, "/metrics", "-o", "/dev/null")[0] == 200
    assert http(host, "/metrics", "-o", "/dev/null", "-H", "X-Forwarded-For: 198.51.100.9")[0] == 403
    assert http(host, "/health", "-o", "/dev/null", "-H", "X-Forwarded-For: 198.51.100.9")[0] in (200, 503)


def test_metrics_count_restarts(host):
    all_ready(host)
    before = value(metrics(host), "hls_station_restarts_total", station="demo-aac")
    old_pid = main_pid(host, "demo-aac")
    host.check_output(f"kill -9 {old_pid}")
    wait_for(lambda: main_pid(host, "demo-aac") not in (0, old_pid), what="a new FFmpeg")
    wait_for(lambda: value(metrics(host), "hls_station_restarts_total", station="demo-aac") == before + 1,
             what="the restart counted")
    station_ready(host, "demo-aac", min_segments=1)


def test_listeners_and_spool_come_from_the_analytics_file(host, listeners_file):
    listeners_file({"updated_at": "2026-01-01T00:00:00Z", "window_seconds": 60,
                    "stations": {"demo-aac": 3, "demo-mp3": 11}, "total": 14,
                    "spool": {"batches": 2, "bytes": 300}, "dropped_events_total": 4})
    samples = wait_for(lambda: (m := metrics(host)) and value(m, "hls_station_listeners", station="demo-mp3") == 11
                       and m, what="the listener numbers in /metrics")
    assert value(samples, "hls_analytics_spool_batches") == 2
    assert value(samples, "hls_analytics_spool_bytes") == 300
    assert value(samples, "hls_analytics_dropped_events_total") == 4
    assert value(samples, "hls_analytics_updated_timestamp_seconds") == 1_767_225_600
    page = json.loads(http(host, "/status.json")[2])
    assert {s["slug"]: s["listeners"] for s in page["stations"]} == {"demo-aac": 3, "demo-mp3": 11}
    table = host.check_output("hlsctl status")
    assert any(line.startswith("demo-mp3 ") and " 11 " in line for line in table.splitlines()), table


# --- now playing -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("slug", SLUGS)
def test_a_title_change_reaches_now_playing_json(host, fixed_titles, slug):
    all_ready(host)
    title = f"Molecule Artist - Song {uuid.uuid4().hex[:8]}"
    set_title(host, slug, title)
    document = wait_for(lambda: (d := now_playing(host, slug)) and d["title"] == title and d,
                        what=f"{slug}'s now-playing.json to show the new title")
    assert (document["artist"], document["song"]) == ("Molecule Artist", title.split(" - ", 1)[1])
    assert document["updated_at"].endswith("+00:00")
    _, headers, _ = http(host, f"/hls/{slug}/now-playing.json")
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["cache-control"] == "no-cache"


def test_each_title_change_triggers_one_metadata_fetch(host, fixed_titles, backend):
    slug, station_id = "demo-mp3", STATION_IDS["demo-mp3"]
    all_ready(host)

    def change(title: str) -> None:
        set_title(host, slug, title)
        wait_for(lambda: (now_playing(host, slug) or {}).get("title") == title, what=repr(title))

    # Settle: after this title and one rate-limit interval, no earlier change has a call pending.
    change(f"Trigger Test - Settle {uuid.uuid4().hex[:8]}")
    host.check_output(f"sleep {TRIGGER_INTERVAL + 2}")
    base = fetches(host, station_id)

    change(f"Trigger Test - One {uuid.uuid4().hex[:8]}")
    wait_for(lambda: fetches(host, station_id) == base + 1, what="one fetch")
    # The same title again is no change; two changes within the rate limit get one (deferred) call.
    set_title(host, slug, now_playing(host, slug)["title"])
    set_title(host, slug, f"Trigger Test - Two {uuid.uuid4().hex[:8]}")
    change(f"Trigger Test - Three {uuid.uuid4().hex[:8]}")
    wait_for(lambda: fetches(host, station_id) == base + 2,
             what="one fetch for the later changes")
    # Nothing more follows: still the same count over two more rate-limit intervals.
    for _ in range(2 * TRIGGER_INTERVAL):
        assert fetches(host, station_id) == base + 2
        host.check_output("sleep 1")


def test_backend_failures_never_touch_the_stream(host, fixed_titles, backend):
    slug = "demo-aac"
    before = station_ready(host, slug)
    pid = main_pid(host, slug)
    backend(fail="500")
    title = f"Backend Down - {uuid.uuid4().hex[:8]}"
    set_title(host, slug, title)
    wait_for(lambda: (now_playing(host, slug) or {}).get("title") == title, what="the title")
    wait_for(lambda: (p := playlist(host, slug)) and p.segments[-1] != before.segments[-1],
             what="the playlist to advance")
    assert main_pid(host, slug) == pid
    assert host.service("hls-nowplaying.service").is_running


def test_a_crash_of_nowplaying_leaves_the_streams_alone(host, fixed_titles):
    all_ready(host)
    before = {slug: (main_pid(host, slug), playlist(host, slug).segments[-1]) for slug in SLUGS}
    crashed = int(host.check_output("systemctl show -p MainPID --value hls-nowplaying.service"))
    host.check_output(f"kill -9 {crashed}")
    main = "systemctl show -p MainPID --value hls-nowplaying.service"
    wait_for(lambda: int(host.check_output(main)) not in (0, crashed), what="systemd to start hls-nowplaying again")
    for slug, (pid, newest) in before.items():
        wait_for(lambda slug=slug, newest=newest: (p := playlist(host, slug)) and p.segments[-1] != newest,
                 what=f"{slug}'s playlist to advance")
        assert main_pid(host, slug) == pid, f"hls@{slug} was restarted"
    # And the new watcher works: a title change still arrives.
    title = f"After The Crash - {uuid.uuid4().hex[:8]}"
    set_title(host, "demo-aac", title)
    wait_for(lambda: (now_playing(host, "demo-aac") or {}).get("title") == title, what="the title")


def test_demo_titles_change_by_themselves(host):
    listed = host.check_output("sed -n '/^TITLES = \\[/,/^\\]/p' /usr/local/libexec/hls-demo-titles")
    demo_titles = set(re.findall(r'"([^"]+)"', listed))
    assert len(demo_titles) >= 3, listed
    assert host.service("hls-demo-titles.timer").is_running
    all_ready(host)
    mine = f"Not A Demo Title - {uuid.uuid4().hex[:8]}"
    set_title(host, "demo-aac", mine)
    wait_for(lambda: (now_playing(host, "demo-aac") or {}).get("title") == mine, what="the test's title")
    # Nobody else changes titles now: only the timer (every 30 s in molecule.yml) can replace it with a demo title.
    wait_for(lambda: (now_playing(host, "demo-aac") or {}).get("title") in demo_titles, timeout=120, interval=2,
             what="the title timer to put a demo title back")


# --- hlsctl ----------------------------------------------------------------------------------------------------------

def test_hlsctl_status_table(host):
    all_ready(host)
    wait_for(lambda: host.run("hlsctl status").rc == 0, what="hlsctl")
    out = host.check_output("hlsctl status")
    assert "\033[" not in out  # piped: no colours
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["STATION", "STATE", "UPTIME", "RESTARTS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(SLUGS)
    assert "active (running)" in rows["demo-aac"] and "aac copy" in rows["demo-aac"]
    assert "mp3 transcode" in rows["demo-mp3"]


def test_hlsctl_status_of_one_station_shows_its_log(host):
    out = host.check_output("hlsctl status demo-aac")
    assert "--- last lines of /var/log/hls/demo-aac.log" in out
    assert "demo-mp3" not in out
    # Colours on a terminal (a pseudo-terminal from Python's pty module).
    coloured = host.run("""python3 -c 'import pty; pty.spawn(["hlsctl", "status", "demo-aac"])'""")
    assert "\033[32m" in coloured.stdout


def test_hlsctl_verbs_call_systemctl(host):
    all_ready(host)
    old_pid = main_pid(host, "demo-aac")
    host.check_output("hlsctl restart demo-aac")
    wait_for(lambda: main_pid(host, "demo-aac") not in (0, old_pid), what="the restart")
    station_ready(host, "demo-aac", min_segments=1)
    refused = host.run("hlsctl stop ../demo-aac")
    assert refused.rc == 2 and "does not match" in refused.stderr


# --- the status page -----------------------------------------------------------------------------------------------

def test_status_page_and_assets_are_served(host):
    status, headers, body = http(host, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]
    assert '<script src="/hls.min.js"' in body
    status, headers, body = http(host, "/hls.min.js")
    assert status == 200 and "javascript" in headers["content-type"] and len(body) > 100_000
    assert http(host, "/status.js")[0] == 200 and http(host, "/status.css")[0] == 200


def test_status_endpoints_stay_out_of_the_session_log(host):
    agent = f"status-probe-{uuid.uuid4().hex[:8]}"
    for path in ("/", "/status.json", "/status.js", "/status.css", "/hls.min.js", "/health", "/metrics"):
        assert http(host, path, "-o", "/dev/null", "-A", agent)[0] in (200, 503), path
    # A listening request by the same agent afterwards: once it is in the log, so would the others be.
    assert http(host, "/hls/demo-aac/index.m3u8", "-o", "/dev/null", "-A", agent)[0] == 200
    logged = session_log(host, marker=agent)
    assert [line.split("\t")[10] for line in logged] == ["/hls/demo-aac/index.m3u8"], logged


def test_status_json_has_the_stations_and_no_secret(host):
    all_ready(host)
    status, headers, body = http(host, "/status.json")
    assert status == 200 and headers["cache-control"] == "no-store"
    page = json.loads(body)
    assert {s["slug"] for s in page["stations"]} == set(SLUGS)
    assert all(s["playlist"] == f"/hls/{s['slug']}/index.m3u8" for s in page["stations"])
    for secret in ("127.0.0.1:8000", TOKEN, "demo-source"):
        assert secret not in body
        assert secret not in http(host, "/metrics")[2]
        assert secret not in http(host, "/health")[2]


def test_browser_lists_the_stations_and_plays_one(host):
    all_ready(host)
    port = os.environ.get("HLS_MOLECULE_HTTP_PORT", "18080")
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    screenshot = artifacts / "status-page.png"
    screenshot.unlink(missing_ok=True)
    result = subprocess.run(["node", str(REPO / "tests" / "browser" / "play.mjs"), f"http://127.0.0.1:{port}/",
                             str(screenshot), "demo-aac"], capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(seen["stations"]) == sorted(SLUGS)
    first, second = seen["currentTime"]
    assert second > first > 0
    assert seen["paused"] is False and seen["pressed"] == "demo-aac"
    assert seen["errors"] == []
    assert screenshot.stat().st_size > 10_000


def test_hlsjs_receives_a_title_change_as_in_stream_metadata(host, fixed_titles):
    """hls.js in Chromium (tests/browser/hls.mjs) playing demo-aac through nginx gets a new Icecast title as a timed
    ID3 tag (FRAG_PARSING_METADATA): TIT2 the song, TPE1 the artist, TXXX StreamTitle the whole title."""
    all_ready(host)
    port = os.environ.get("HLS_MOLECULE_HTTP_PORT", "18080")
    url = f"http://127.0.0.1:{port}/hls/demo-aac/index.m3u8"
    player = subprocess.Popen(["node", str(REPO / "tests" / "browser" / "hls.mjs"), url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[dict] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(json.loads(line)) for line in player.stdout if line.startswith("{")],
                     daemon=True).start()

    def next_record(deadline: float, what: str) -> dict:
        try:
            record = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"timed out waiting for {what}")
        assert "ended" not in record, record
        return record

    try:
        deadline = time.monotonic() + IN_STREAM_TITLE_SECONDS
        while next_record(deadline, "hls.js to play").get("position", 0) <= 0:
            pass
        title = f"Molecule Artist - In Stream {uuid.uuid4().hex[:8]}"
        set_title(host, "demo-aac", title)
        changed, deadline = time.monotonic(), time.monotonic() + IN_STREAM_TITLE_SECONDS
        seen: list[dict] = []
        while (record := next_record(deadline, f"{title!r} in the stream; tags seen: {seen[-3:]}")):
            if "metadata" in record:
                seen.append(record["metadata"])
                if record["metadata"]["frames"].get("TXXX:StreamTitle") == title:
                    break
        assert record["metadata"]["frames"] == {"TIT2": title.split(" - ", 1)[1], "TPE1": "Molecule Artist",
                                                "TXXX:StreamTitle": title}
        print(f"in the stream {time.monotonic() - changed:.1f} s after the change, segment "
              f"{record['metadata']['fragment']}")
    finally:
        player.terminate()
        player.wait(timeout=30)


def test_the_status_page_shows_the_title_the_stream_carries(host, fixed_titles):
    """The player of the status page shows the title from the stream's timed ID3 (data-source "stream"), not only
    the now playing of status.json (play.mjs waits for the first)."""
    all_ready(host)
    port = os.environ.get("HLS_MOLECULE_HTTP_PORT", "18080")
    song = f"Page Song {uuid.uuid4().hex[:8]}"
    set_title(host, "demo-aac", f"Molecule Artist - {song}")
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    result = subprocess.run(["node", str(REPO / "tests" / "browser" / "play.mjs"), f"http://127.0.0.1:{port}/",
                             str(artifacts / "status-page-title.png"), "demo-aac", song],
                            capture_output=True, text=True, timeout=IN_STREAM_TITLE_SECONDS + 120, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert (seen["streamTitle"], seen["titleSource"]) == (f"{song} · Molecule Artist", "stream")
    assert seen["errors"] == []


def test_health_refuses_to_guess_without_the_station_list(host):
    # A user outside the hls group cannot list /etc/hls/stations: that is an error, never "0 stations, all well".
    result = host.run(f"runuser -u nobody -- {HEALTH}")
    assert result.rc == 3  # UNKNOWN, as monitoring plugins read it
    assert result.stdout.startswith("UNKNOWN: cannot read the station list /etc/hls/stations: Permission denied")
