"""What writing the playlists costs: hls-playlists.service, one process for every station of the host, next to
FFmpeg's own hls muxer writing each station's playlist itself.

Runs inside the benchmark host while the deployed stations run. Each round measures these one at a time, in an
order that rotates from round to round:
  hls-playlists   the deployed service writing the playlist of every running station: CPU from /proc/<MainPID>/stat
                  (utime + stime) over the window, memory from /proc/<MainPID>/smaps_rollup at its end
  ffmpeg-hls      N FFmpeg, each copying an AAC mount (demo-aac-1..N) with the hls muxer writing its own playlist of
                  the same window (the flags the project used before, and program_date_time)
  ffmpeg-segment  the same N FFmpeg with the segment muxer and its CSV list, as the stations run now
ffmpeg-hls minus ffmpeg-segment is what FFmpeg spends on its playlist per station; hls-playlists' total over its
stations is what owning the playlist costs instead.

Every playlist is made as long as the window first: older segments of an earlier run go before its own
(hls-playlists reads its playlists back when it starts, the hls muxer with append_list), so the playlists rewritten
in the windows are as long as in the steady state, not the few segments of a young one.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from benchcommon import (
    PLAYLISTS,
    emit,
    listed_segments,
    log,
    median,
    older_segments,
    playlist_path,
    process_memory,
    progress_marker,
    rotations,
    show,
    systemctl,
    wait_for,
)
from station_cost import RUNTIME, Job, Workload, measure

SERVICE = "hls-playlists.service"
ENV_FILE = Path("/etc/hls/playlists.env")
FFMPEG = ["/usr/bin/ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning"]
SEGMENT_HEAD = ("#EXT-X-DISCONTINUITY\n", "#EXT-X-PROGRAM-DATE-TIME:", "#EXTINF:")


def window_minutes(env_file: Path) -> int:
    """HLS_WINDOW_MINUTES of the deployed hls-playlists."""
    for line in env_file.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "HLS_WINDOW_MINUTES":
            return int(value.strip().strip("'\""))
    raise RuntimeError(f"{env_file}: no HLS_WINDOW_MINUTES")


def lengthen(text: str, seconds: float, now: float) -> str:
    """A playlist hls-playlists wrote, with older segments of an earlier run before its own, so that it lists
    `seconds` of audio (its trim then keeps it that long); `text` unchanged when it is that long already."""
    listed = listed_segments(text)
    missing = seconds - sum(segment.duration for segment in listed)
    lines = text.splitlines(keepends=True)
    first = next((index for index, line in enumerate(lines) if line.startswith(SEGMENT_HEAD)), None)
    if missing <= 0 or first is None:
        return text
    head = {line.partition(":")[0]: line.partition(":")[2].strip() for line in lines[:first]}
    target = int(head["#EXT-X-TARGETDURATION"])
    older = older_segments(listed[0].start if listed else now, missing, target)
    added = len(listed_segments(older))
    # The media sequence counts from the first listed segment: now an older one.
    sequence = int(head["#EXT-X-MEDIA-SEQUENCE"])
    head_text = "".join(lines[:first]).replace(f"#EXT-X-MEDIA-SEQUENCE:{sequence}\n",
                                                f"#EXT-X-MEDIA-SEQUENCE:{max(0, sequence - added)}\n")
    body = "".join(lines[first:])
    # The earlier run ends where the station's first listed run begins: a discontinuity.
    if not body.startswith(SEGMENT_HEAD[0]):
        body = SEGMENT_HEAD[0] + body
    return head_text + older + body


def fill_service_playlists(seconds: float) -> int:
    """Make every playlist hls-playlists writes `seconds` long (it is stopped meanwhile, and reads them back when
    it starts); returns how many."""
    systemctl("stop", SERVICE)
    try:
        playlists = sorted(PLAYLISTS.glob("*.m3u8"))
        now = time.time()
        for path in playlists:
            try:
                text = path.read_text()
            except OSError:  # the station stopped meanwhile
                continue
            spare = path.with_name(f".{path.name}.bench")
            spare.write_text(lengthen(text, seconds, now))
            spare.chmod(0o644)
            spare.replace(path)
    finally:
        systemctl("start", SERVICE)
    return len(playlists)


def process_cpu_s(pid: int) -> float:
    """CPU time of a process so far (utime + stime of /proc/<pid>/stat; after the command name, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_pid(unit: str) -> int:
    pid = int(show([unit], "MainPID")[unit]["MainPID"] or 0)
    if pid <= 0:
        raise RuntimeError(f"{unit} is not running")
    return pid


def measure_service(window: float) -> dict[str, float]:
    """hls-playlists over one window: CPU (% of a core) and memory, total and per station it writes for."""
    pid = main_pid(SERVICE)
    playlists = sorted(PLAYLISTS.glob("*.m3u8"))
    markers = {path: progress_marker(path) for path in playlists}
    before, started = process_cpu_s(pid), time.monotonic()
    time.sleep(window)
    after, elapsed = process_cpu_s(pid), time.monotonic() - started
    if main_pid(SERVICE) != pid:
        raise RuntimeError(f"{SERVICE} restarted during the window")
    memory = process_memory(pid)
    lengths = [sum(s.duration for s in listed_segments(path.read_text())) for path in playlists if path.exists()]
    stations = len(playlists)
    cpu_pct = 100 * (after - before) / elapsed
    return {
        "cpu_pct_total": cpu_pct,
        "cpu_pct": cpu_pct / max(stations, 1),
        "pss_mib_total": memory.pss_kib / 1024,
        "pss_mib": memory.pss_kib / 1024 / max(stations, 1),
        "uss_mib_total": memory.uss_kib / 1024,
        "rss_mib_total": memory.rss_kib / 1024,
        "stations": stations,
        "advancing": sum(1 for path in playlists if progress_marker(path) not in ("", markers[path])),
        "playlist_minutes": median(lengths) / 60 if lengths else 0.0,
    }


def peer_workloads(stations: int, minutes: int, segment_seconds: int) -> list[Workload]:
    """FFmpeg copying the AAC mounts to segments, with its hls muxer writing the playlist or with the segment muxer."""
    hls_jobs, segment_jobs = [], []
    for index in range(1, stations + 1):
        url = f"http://127.0.0.1:8000/demo-aac-{index}"
        source = [*FFMPEG, "-i", url, "-map", "0:a:0", "-c:a", "copy", "-muxdelay", "0", "-muxpreload", "0"]
        run = int(time.time() * 1000)
        directory = RUNTIME / f"bench-ffhls-{index}"
        hls_jobs.append(Job(f"{directory.name}.service", "copy", 1, [directory / "index.m3u8"], [
            *source, "-f", "hls", "-hls_time", str(segment_seconds),
            "-hls_list_size", str(minutes * 60 // segment_seconds),
            "-hls_flags", "delete_segments+append_list+omit_endlist+temp_file+program_date_time",
            "-hls_segment_type", "mpegts", "-hls_segment_filename", str(directory / f"{run}-%d.ts"),
            str(directory / "index.m3u8")]))
        directory = RUNTIME / f"bench-ffsegment-{index}"
        segment_jobs.append(Job(f"{directory.name}.service", "copy", 1, [directory / f"{run}.csv"], [
            *source, "-f", "segment", "-segment_time", str(segment_seconds), "-segment_format", "mpegts",
            "-segment_list", str(directory / f"{run}.csv"), "-segment_list_type", "csv", "-segment_list_size", "50",
            str(directory / f"{run}-%d.ts")]))

    def fill_hls() -> None:
        """Each hls muxer's playlist as long as the window before it starts (it appends to it), with the older
        segments' files there for it to delete as they leave."""
        now = time.time()
        older = older_segments(now, minutes * 60, segment_seconds)
        for job in hls_jobs:
            playlist = job.outputs[0]
            playlist.parent.mkdir(parents=True, exist_ok=True)
            playlist.write_text(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{segment_seconds}\n"
                                f"#EXT-X-MEDIA-SEQUENCE:0\n{older}")
            for segment in listed_segments(older):
                (playlist.parent / segment.name).touch()

    return [Workload("ffmpeg-hls", hls_jobs, prepare=fill_hls), Workload("ffmpeg-segment", segment_jobs)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=20, help="seconds measured per workload and round")
    parser.add_argument("--warmup", type=float, default=8, help="seconds after the peers' first output")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-stations", type=int, default=10, help="FFmpeg processes per peer")
    parser.add_argument("--segment-seconds", type=int, default=6)
    parser.add_argument("--window-minutes", type=int, help="the playlists' window (default: hls-playlists')")
    args = parser.parse_args(argv)
    minutes = args.window_minutes or window_minutes(ENV_FILE)
    # Every running station (its directory) with a playlist first: each of them is made full.
    stations = [entry.name for entry in PLAYLISTS.parent.iterdir() if entry.is_dir() and entry != PLAYLISTS]
    if not wait_for(lambda: all(progress_marker(playlist_path(slug)) for slug in stations), timeout=180, interval=1):
        log("  not every running station has a playlist: filling those there are")
    filled = fill_service_playlists(minutes * 60.0)
    log(f"{filled} playlists made {minutes} minutes long; waiting for hls-playlists to rewrite them")
    playlists = sorted(PLAYLISTS.glob("*.m3u8"))
    markers = {path: progress_marker(path) for path in playlists}
    if not wait_for(lambda: all(progress_marker(path) != markers[path] for path in playlists),
                    timeout=max(60.0, 4 * args.segment_seconds), interval=1):
        log("  not every playlist moved on: measuring anyway (the table's advancing column tells)")
    peers = peer_workloads(args.peer_stations, minutes, args.segment_seconds)
    writers: list[Workload | None] = [None, *peers]  # None: the deployed hls-playlists
    samples: dict[str, list[dict[str, float]]] = {SERVICE: []} | {peer.name: [] for peer in peers}
    failures: list[str] = []
    for round_index, peer in rotations(writers, args.rounds):
        name = peer.name if peer else SERVICE
        log(f"round {round_index + 1}/{args.rounds}: {name}")
        try:
            figures = measure(peer, args.window, args.warmup)["copy"] if peer else measure_service(args.window)
        except RuntimeError as error:  # one broken window must not lose the whole run
            log(f"  skipped: {error}")
            failures.append(f"round {round_index + 1}, {name}: {error}")
            continue
        samples[name].append(figures)
        log(f"  {figures['cpu_pct']:.4f} % CPU, {figures['pss_mib']:.2f} MiB PSS per station, "
            f"{figures['advancing']:.0f}/{figures['stations']:.0f} advancing")
    result = {"window_s": args.window, "rounds": args.rounds, "window_minutes": minutes,
              "segment_seconds": args.segment_seconds, "failures": failures, "workloads": {}}
    for name, rounds in samples.items():
        if rounds:
            result["workloads"][name] = {key: median([s[key] for s in rounds]) for key in rounds[0]} | {
                "advancing": min(s["advancing"] for s in rounds), "samples": rounds}
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
