"""Station cost: CPU and memory per station of this project's hls@ units vs Liquidsoap and a plain copier.

Runs inside the benchmark host. N stations per codec are pulled from the demo Icecast2's aliases
(demo-aac-1..N: AAC, copied; demo-mp3-1..N: MP3, transcoded to AAC-LC). Each round starts one workload at a
time, waits for every output to exist, measures its units' cgroup CPU over a fixed window and their memory
at the end of it, checks that every output moved on, and stops it. The order of the workloads rotates from
round to round, so a noisy neighbour cannot favour one of them. The feeders are other units: not counted.

Workloads (all with 6 s segments, AAC-LC at the given bitrate; Liquidsoap keeps 10 per playlist):
  project          the hls@<slug> units deployed by the roles (FFmpeg, one process per station), plus an even share
                   of hls-playlists.service (one process for the host, writing every station's playlist)
  liquidsoap-each  Liquidsoap output.file.hls, one process per station
  liquidsoap-one   Liquidsoap output.file.hls, one process for all N stations of a codec
  floor            curl copying the upstream bytes to a file, one process per station
  encoder          the transcoding's floor: one FFmpeg decoding a recording of the MP3 upstream and encoding it
                   with the stations' AAC settings, as fast as it runs, to nowhere (-f null); its CPU time
                   (user + sys) per minute of audio stands next to the stations' CPU per station-minute
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchcommon import (
    cpu_ns,
    emit,
    log,
    median,
    playlist_path,
    progress_marker,
    rotations,
    run,
    show,
    station_ffmpeg,
    systemctl,
    unit_memory,
    wait_for,
)

CODECS = {"copy": "demo-aac", "transcode": "demo-mp3"}
SCRIPTS = Path("/var/lib/hls-bench/liquidsoap")
RUNTIME = Path("/run/hls-bench")
# On the tmpfs: the encoder floor reads its recording from memory, as a station reads its upstream.
RECORDING = RUNTIME / "encoder-floor" / "upstream.mp3"
# The stations' AAC settings (launcher.aac_options with the benchmark's hls_aac_coder): AAC-LC, the fast coder.
STATION_AAC_CODER = "fast"
LIQ_HEADER = """settings.init.allow_root.set(true)
settings.log.stdout.set(true)
settings.log.file.set(false)
settings.log.level.set(2)
"""


@dataclass
class Job:
    """One unit serving `stations` stations of one codec mode, and the outputs that must move on."""

    unit: str
    mode: str
    stations: int
    outputs: list[Path]
    start_argv: list[str] = field(default_factory=list)  # empty: a deployed unit, started with systemctl


@dataclass
class Workload:
    name: str
    jobs: list[Job]
    keep_running: bool = False  # measured as they run (the many-stations run), never stopped
    # Units that serve every station of the workload at once: their CPU and memory are split evenly over them.
    shared: list[str] = field(default_factory=list)
    prepare: Callable[[], None] = lambda: None  # runs before every start

    def start(self) -> None:
        self.prepare()
        deployed = [job.unit for job in self.jobs if not job.start_argv]
        if deployed:
            systemctl("start", *deployed)
        for job in self.jobs:
            if job.start_argv:
                systemctl("reset-failed", job.unit, check=False)
                runtime = job.unit.removesuffix(".service")
                # Supervised as an operator would run it: restarted when it exits (Liquidsoap's copy mode
                # can exit on a broken ADTS frame); the restarts are counted and reported.
                systemctl_run = ["systemd-run", "--quiet", f"--unit={job.unit}", "--property=Restart=always",
                                 "--property=RestartSec=1", f"--property=RuntimeDirectory=hls-bench/{runtime}",
                                 "--property=RuntimeDirectoryPreserve=restart"]
                run(*systemctl_run, *job.start_argv)

    def stop(self) -> None:
        if not self.keep_running:
            systemctl("stop", *(job.unit for job in self.jobs), check=False)

    def outputs(self) -> list[Path]:
        return [path for job in self.jobs for path in job.outputs]

    def measure(self, window: float, warmup: float) -> dict[str, dict[str, float]]:
        return measure(self, window, warmup)


@dataclass
class EncoderFloor(Workload):
    """The transcoding's floor: the stations' decode + encode in one FFmpeg, on a recording of their upstream.

    No unit and no window: the recording (made once, before the rounds) is transcoded as fast as FFmpeg runs, and
    its CPU time is divided by the recording's audio time.
    """

    recording: Path = RECORDING
    audio_s: float = 0.0
    bitrate: str = "96k"

    def prepare_recording(self, mount: str, seconds: float) -> None:
        """Copy `seconds` of the upstream's MP3 frames as they arrive (not re-encoded) to the recording."""
        self.recording.parent.mkdir(parents=True, exist_ok=True)
        log(f"encoder floor: recording {seconds:g} s of {mount}")
        run("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", f"http://127.0.0.1:8000/{mount}",
            "-map", "0:a:0", "-c", "copy", "-t", f"{seconds:g}", str(self.recording))
        self.audio_s = float(run("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                 str(self.recording)))

    def stop(self) -> None:
        pass  # nothing runs between rounds

    def measure(self, window: float, warmup: float) -> dict[str, dict[str, float]]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run(station_ffmpeg(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-i", str(self.recording),
            "-map", "0:a:0", "-c:a", "aac", "-profile:a", "aac_low", "-b:a", self.bitrate,
            "-aac_coder", STATION_AAC_CODER, "-f", "null", "-")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return {"transcode": {"cpu_pct": 100 * cpu_s / self.audio_s, "cpu_s_per_station_min": 60 * cpu_s / self.audio_s,
                              "audio_s": self.audio_s, "processes": 1, "stations": 1, "advancing": 1, "restarts": 0}}


def liquidsoap_script(pairs: Sequence[tuple[str, Path]], mode: str, args: argparse.Namespace) -> str:
    """output.file.hls for each (mount, directory); copy keeps the AAC frames, transcode makes AAC-LC."""
    coder = f", aac_coder=\"{args.liquidsoap_aac_coder}\"" if args.liquidsoap_aac_coder else ""
    lines = [LIQ_HEADER]
    for index, (mount, directory) in enumerate(pairs):
        if mode == "copy":
            source, encoder, extra = f"input.http(\"http://127.0.0.1:8000/{mount}\")", "%audio.copy", "fallible=true, "
        else:
            source = f"mksafe(input.http(\"http://127.0.0.1:8000/{mount}\"))"
            encoder, extra = f"%audio(codec=\"aac\", b=\"{args.bitrate}\"{coder})", ""
        lines.append(
            f"s{index} = {source}\n"
            f"output.file.hls(playlist=\"index.m3u8\", segment_duration={args.segment_seconds}.0, "
            f"segments={args.playlist_size}, "
            f"segments_overhead=1, {extra}\"{directory}\", "
            f"[(\"aac\", %ffmpeg(format=\"mpegts\", {encoder}))], s{index})\n"
        )
    return "".join(lines)


def liquidsoap_job(unit: str, mode: str, mounts: Sequence[str], args: argparse.Namespace) -> Job:
    base = RUNTIME / unit.removesuffix(".service")
    pairs = [(mount, base / mount) for mount in mounts] if len(mounts) > 1 else [(mounts[0], base)]
    script = SCRIPTS / f"{unit.removesuffix('.service')}.liq"
    script.write_text(liquidsoap_script(pairs, mode, args))
    dirs = " ".join(str(directory) for _, directory in pairs)
    argv = ["/bin/sh", "-c", f"mkdir -p {dirs} && exec liquidsoap {script}"]
    return Job(unit, mode, len(mounts), [directory / "aac.m3u8" for _, directory in pairs], argv)


def workloads(args: argparse.Namespace) -> list[Workload]:
    SCRIPTS.mkdir(parents=True, exist_ok=True)
    mounts = {mode: [f"{CODECS[mode]}-{i}" for i in range(1, args.stations + 1)] for mode in args.modes}
    project, each, one, floor = [], [], [], []
    for mode, names in mounts.items():
        for mount in names:
            project.append(Job(f"hls@{mount}.service", mode, 1, [playlist_path(mount)]))
            each.append(liquidsoap_job(f"bench-ls-{mount}.service", mode, [mount], args))
            copy_to = RUNTIME / f"bench-floor-{mount}" / "stream"
            floor.append(Job(f"bench-floor-{mount}.service", mode, 1, [copy_to],
                             ["/usr/bin/curl", "-sS", "-o", str(copy_to), f"http://127.0.0.1:8000/{mount}"]))
        one.append(liquidsoap_job(f"bench-ls-all-{CODECS[mode]}.service", mode, names, args))
    every = [Workload("project", project, shared=["hls-playlists.service"]), Workload("liquidsoap-each", each),
             Workload("liquidsoap-one", one), Workload("floor", floor)]
    if "transcode" in args.modes:
        every.append(EncoderFloor("encoder", [], bitrate=args.bitrate))
    return every


def restart_counts(units: Sequence[str]) -> dict[str, int]:
    values = show(units, "NRestarts")
    return {unit: int(values[unit].get("NRestarts") or 0) for unit in units}


def measure(workload: Workload, window: float, warmup: float) -> dict[str, dict[str, float]]:
    """Start, wait until every output exists, measure one window, stop. Per mode: per-station figures."""
    workload.start()
    try:
        outputs = workload.outputs()
        ready = wait_for(lambda: all(progress_marker(path) for path in outputs), interval=1,
                         timeout=max(120.0, len(outputs) / 2))
        if not ready:
            missing = [str(path) for path in outputs if not progress_marker(path)][:5]
            raise RuntimeError(f"{workload.name}: outputs never appeared: {missing}")
        time.sleep(warmup)
        units = [job.unit for job in workload.jobs]
        measured = units + workload.shared
        markers = {path: progress_marker(path) for path in outputs}
        restarts = restart_counts(units)
        before, started = cpu_ns(measured), time.monotonic()
        time.sleep(window)
        after, elapsed = cpu_ns(measured), time.monotonic() - started
        memory = unit_memory(measured)
        moved = {path for path in outputs if progress_marker(path) != markers[path]}
        restarted = {unit: count - restarts[unit] for unit, count in restart_counts(units).items()}
    finally:
        workload.stop()
    # A unit restarted in the window has a new cgroup: only its time since the restart is known.
    cpu_s = {unit: (after[unit] - (before[unit] if after[unit] >= before[unit] else 0)) / 1e9 for unit in measured}
    # The shared units' part of each station: their totals over every station of the workload.
    share = 1 / sum(job.stations for job in workload.jobs)
    shared_cpu_s = share * sum(cpu_s[unit] for unit in workload.shared)
    shared_kib = {key: share * sum(getattr(memory[unit], key) for unit in workload.shared)
                  for key in ("pss_kib", "uss_kib", "rss_kib")}
    figures: dict[str, dict[str, float]] = {}
    for mode in sorted({job.mode for job in workload.jobs}):
        jobs = [job for job in workload.jobs if job.mode == mode]
        stations = sum(job.stations for job in jobs)
        mode_cpu_s = sum(cpu_s[job.unit] for job in jobs) + stations * shared_cpu_s

        def per_station(key: str, jobs: list[Job] = jobs, stations: int = stations) -> float:
            return (sum(getattr(memory[job.unit], key) for job in jobs) / stations + shared_kib[key]) / 1024

        figures[mode] = {
            "cpu_pct": 100 * mode_cpu_s / elapsed / stations,
            "cpu_s_per_station_min": mode_cpu_s / stations / (elapsed / 60),
            "shared_cpu_pct": 100 * shared_cpu_s / elapsed,
            "pss_mib": per_station("pss_kib"),
            "uss_mib": per_station("uss_kib"),
            "rss_mib": per_station("rss_kib"),
            "processes": sum(memory[job.unit].processes for job in jobs),
            "stations": stations,
            "advancing": sum(1 for job in jobs for path in job.outputs if path in moved),
            "restarts": sum(restarted[job.unit] for job in jobs),
        }
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=10, help="stations per codec (N)")
    parser.add_argument("--window", type=float, default=30, help="seconds measured per workload and round")
    parser.add_argument("--warmup", type=float, default=5, help="seconds after the first outputs before measuring")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="workload names to run (default: all)")
    parser.add_argument("--keep-running", action="store_true",
                        help="measure the deployed stations as they run instead of starting them afresh")
    parser.add_argument("--modes", nargs="+", choices=sorted(CODECS), default=sorted(CODECS),
                        help="copy: AAC upstreams, transcode: MP3 upstreams")
    parser.add_argument("--bitrate", default="96k")
    parser.add_argument("--liquidsoap-aac-coder", help="give Liquidsoap's AAC encoder this aac_coder too "
                        "(default: FFmpeg's own default, twoloop)")
    parser.add_argument("--segment-seconds", type=int, default=6)
    parser.add_argument("--playlist-size", type=int, default=10)
    parser.add_argument("--recording-seconds", type=float, default=60,
                        help="audio recorded from the MP3 upstream for the encoder floor")
    args = parser.parse_args(argv)
    runs = [w for w in workloads(args) if not args.only or w.name in args.only]
    for workload in runs:
        if isinstance(workload, EncoderFloor):
            workload.prepare_recording(f"{CODECS['transcode']}-1", args.recording_seconds)
    for workload in runs:
        workload.keep_running = args.keep_running and workload.name == "project"
        workload.stop()  # the deployed stations run from the start: every workload starts from nothing
    samples: dict[str, dict[str, list[dict[str, float]]]] = {w.name: {mode: [] for mode in args.modes} for w in runs}
    failures: list[str] = []
    for round_index, workload in rotations(runs, args.rounds):
        log(f"round {round_index + 1}/{args.rounds}: {workload.name}, {args.stations} stations per codec")
        try:
            measured = workload.measure(args.window, args.warmup)
        except RuntimeError as error:  # one broken window must not lose the whole run
            log(f"  skipped: {error}")
            failures.append(f"round {round_index + 1}, {workload.name}: {error}")
            continue
        for mode, figures in measured.items():
            samples[workload.name][mode].append(figures)
            memory = f", {figures['pss_mib']:.1f} MiB PSS" if "pss_mib" in figures else ""
            log(f"  {mode}: {figures['cpu_pct']:.3f} % CPU ({figures['cpu_s_per_station_min']:.3f} s per "
                f"station-minute){memory} per station, {figures['advancing']}/{figures['stations']} advancing")
    project = [w for w in runs if w.name == "project" and not w.keep_running]
    for workload in project:  # leave the deployed stations running, as they were
        workload.start()
    result = {"stations": args.stations, "window_s": args.window, "rounds": args.rounds, "bitrate": args.bitrate,
              "failures": failures, "workloads": {}}
    for name, modes in samples.items():
        result["workloads"][name] = {
            mode: {key: median([s[key] for s in rounds]) for key in rounds[0]}
            | {"advancing": min(s["advancing"] for s in rounds), "restarts": sum(s["restarts"] for s in rounds),
               "samples": rounds}
            for mode, rounds in modes.items() if rounds
        }
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
