#!/usr/bin/env python3
"""What following ICY titles costs per station: one process for all stations (what hls-nowplaying.service
does) against one sidecar process per station (the alternative), next to the stations' own FFmpeg.

Runs inside a deployed host (the molecule or demo container), as root, stdlib only:
    docker exec -i <container> python3 - --stations 20 --seconds 60 < benchmarks/nowplaying_cost.py

For N pseudo-stations that all read the demo Icecast mounts, it starts the deployed hls-nowplaying as the
hls user (a) once for all N and (b) N times with --only, each against a scratch station list and output root
(no backend calls), lets them settle, then measures CPU time and PSS over --seconds. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PROGRAM = "/opt/hls/venv/bin/hls-nowplaying"
MOUNTS = ("http://127.0.0.1:8000/demo-mp3", "http://127.0.0.1:8000/demo-aac")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def measure(pids: list[int], seconds: float) -> tuple[float, float]:
    """(CPU % of one core, PSS MiB) summed over the processes, over `seconds`."""
    before = sum(cpu_seconds(pid) for pid in pids)
    time.sleep(seconds)
    after = sum(cpu_seconds(pid) for pid in pids)
    return 100 * (after - before) / seconds, sum(pss_kib(pid) for pid in pids) / 1024


def scratch(root: Path, count: int) -> tuple[Path, Path]:
    stations, output = root / "stations", root / "run"
    stations.mkdir()
    output.mkdir()
    for index in range(count):
        slug = f"bench-{index:03d}"
        env = stations / f"{slug}.env"
        env.write_text(f'HLS_STATION_SLUG="{slug}"\nHLS_STATION_ID=""\nHLS_STREAM_URL="{MOUNTS[index % 2]}"\n')
        shutil.chown(env, "root", "hls")
        env.chmod(0o640)
        (output / slug).mkdir()
        shutil.chown(output / slug, "hls", "hls")
    for path in (root, stations, output):
        shutil.chown(path, "root", "hls")
        path.chmod(0o750 if path == stations else 0o755)
    return stations, output


def start(stations: Path, output: Path, only: str | None = None) -> subprocess.Popen:
    command = ["runuser", "-u", "hls", "--", PROGRAM, "--stations-dir", str(stations),
               "--output-root", str(output), "--endpoint", ""]
    if only:
        command += ["--only", only]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "LOG_LEVEL": "WARNING"})


def python_pid(runner: subprocess.Popen) -> int:
    """runuser's child: the Python process itself."""
    children = Path(f"/proc/{runner.pid}/task/{runner.pid}/children").read_text().split()
    return int(children[0]) if children else runner.pid


def published(output: Path, count: int) -> int:
    return sum((output / f"bench-{index:03d}" / "now-playing.json").exists() for index in range(count))


def run(kind: str, count: int, seconds: float, settle: float) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory(prefix="nowplaying-bench-", dir="/run") as tmp:
        stations, output = scratch(Path(tmp), count)
        runners = [start(stations, output)] if kind == "one process" else \
            [start(stations, output, f"bench-{index:03d}") for index in range(count)]
        try:
            time.sleep(settle)
            cpu, pss = measure([python_pid(runner) for runner in runners], seconds)
            return cpu, pss, published(output, count)
        finally:
            for runner in runners:
                runner.terminate()
            for runner in runners:
                runner.wait(15)


def ffmpeg_reference(seconds: float) -> tuple[float, float, int]:
    pids = [int(pid) for pid in subprocess.run(["pgrep", "-x", "ffmpeg", "-u", "hls"], capture_output=True,
                                               text=True, check=False).stdout.split()]
    cpu, pss = measure(pids, seconds) if pids else (0.0, 0.0)
    return cpu, pss, len(pids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--settle", type=float, default=10)
    args = parser.parse_args()
    print(f"{args.stations} pseudo-stations reading the 2 demo mounts (MP3 128k, AAC 96k), "
          f"measured over {args.seconds:g} s after {args.settle:g} s; CPU in % of one core.\n")
    print("| mechanism | stations | titles published | CPU % total | CPU % per station | PSS MiB total "
          "| PSS MiB per station |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = [("one process (deployed)", *run("one process", 1, args.seconds, args.settle), 1),
            ("one process (deployed)", *run("one process", args.stations, args.seconds, args.settle), args.stations),
            ("one sidecar process per station", *run("sidecars", args.stations, args.seconds, args.settle),
             args.stations)]
    for name, cpu, pss, seen, count in rows:
        print(f"| {name} | {count} | {seen} | {cpu:.2f} | {cpu / count:.3f} | {pss:.1f} | {pss / count:.2f} |")
    (_, cpu_1, pss_1, _, _), (_, cpu_n, pss_n, _, _) = rows[0], rows[1]
    added = max(1, args.stations - 1)
    print(f"| one process: each added station | - | - | - | {(cpu_n - cpu_1) / added:.3f} | - "
          f"| {(pss_n - pss_1) / added:.2f} |")
    cpu, pss, count = ffmpeg_reference(args.seconds)
    if count:
        print(f"| for comparison: the stations' FFmpeg | {count} | - | {cpu:.2f} | {cpu / count:.3f} | {pss:.1f} "
              f"| {pss / count:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
