"""Where the CPU of one station start goes, on the benchmark host (issue 15: a thousand starts on two cores).

For each round, one station (an AAC copy) is stopped and started again, and the CPU of each part of the start
is read from the processes themselves:
  systemd     PID 1's CPU time from `systemctl start` until the station's FFmpeg runs (fork, cgroup, sandbox
              namespaces, the unit's ExecStartPre/ExecStart bookkeeping), less PID 1's idle rate
  launcher    the unit's cgroup CPU until its main process is FFmpeg: Python, its imports, the env file, the
              probe FFmpeg when it runs one, the sed that redacts the log
  ffmpeg      the unit's cgroup CPU in its first WINDOW seconds after the exec, less WINDOW seconds of the same
              station's steady rate (measured after): linking Debian's FFmpeg, opening the upstream, the burst
Two cases: the launcher knows the upstream from its last probe (a reboot), and it must probe (a new station; a
first run's probe also waits for the burst, which costs time, not CPU). Prints JSON: per case, the median of each
part over the rounds, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from benchcommon import cpu_ns, emit, log, median, show, systemctl, wait_for

FACTS_DIR = Path("/var/lib/hls-stations")
TICKS = os.sysconf("SC_CLK_TCK")


def pid1_cpu_ms() -> float:
    fields = Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICKS  # utime, stime


def main_process(unit: str) -> str:
    pid = show([unit], "MainPID")[unit]["MainPID"]
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() if pid != "0" else ""
    except OSError:
        return ""


def unit_cpu_ms(unit: str) -> float:
    return cpu_ns([unit])[unit] / 1e6


def one_start(slug: str, keep_facts: bool, window: float, pid1_idle_ms_per_s: float) -> dict[str, float]:
    unit = f"hls@{slug}.service"
    systemctl("stop", unit)
    if not keep_facts:
        (FACTS_DIR / f"{slug}.json").unlink(missing_ok=True)
    time.sleep(1)
    started, pid1_before = time.monotonic(), pid1_cpu_ms()
    systemctl("start", unit)
    if not wait_for(lambda: main_process(unit) == "ffmpeg", timeout=60, interval=0.005):
        raise RuntimeError(f"{unit}: FFmpeg did not start within 60 s")
    launcher_ms = unit_cpu_ms(unit)
    systemd_ms = pid1_cpu_ms() - pid1_before - pid1_idle_ms_per_s * (time.monotonic() - started)
    exec_at = time.monotonic()
    time.sleep(window)
    first_window_ms = unit_cpu_ms(unit) - launcher_ms
    first_elapsed = time.monotonic() - exec_at
    steady_from = unit_cpu_ms(unit)
    time.sleep(window)
    steady_ms_per_s = (unit_cpu_ms(unit) - steady_from) / window
    return {"systemd_ms": systemd_ms, "launcher_ms": launcher_ms,
            "ffmpeg_start_ms": first_window_ms - steady_ms_per_s * first_elapsed}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slug", default="demo-aac-1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=5.0)
    args = parser.parse_args(argv)
    before = pid1_cpu_ms()
    time.sleep(5)
    pid1_idle = (pid1_cpu_ms() - before) / 5
    result: dict[str, object] = {"what": "start_profile", "slug": args.slug, "rounds": args.rounds,
                                 "pid1_idle_ms_per_s": pid1_idle}
    for case, keep in (("facts known (a reboot)", True), ("probe (a new station)", False)):
        samples = [one_start(args.slug, keep, args.window, pid1_idle) for _ in range(args.rounds)]
        parts = {key: median([sample[key] for sample in samples]) for key in samples[0]}
        log(f"{case}: " + ", ".join(f"{key} {value:.0f}" for key, value in parts.items()))
        result[case] = parts
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
