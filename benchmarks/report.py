"""The tables of `make bench` and `make bench-scale`, from the JSON the agents wrote (host side, stdlib only).

  report.py machine        JSON: when and on what machine the run happens
  report.py all DIR        Markdown: the summary table (ratios against the peers, targets) and the details
  report.py scale DIR      Markdown: the many-stations run
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COPY_TARGET_PCT = 0.15
TRANSCODE_TARGET_RATIO = 0.5
SERVING_TARGET_RATIO = 0.9
ANALYTICS_TARGET_RATIO = 3.0
FLAG_TARGET_S = 15.0
KILL_TARGET_S = 5.0
WORKLOAD_NAMES = {
    "project": "radio-hls (hls@ units, FFmpeg)",
    "liquidsoap-each": "Liquidsoap 2.1, one process per station",
    "liquidsoap-one": "Liquidsoap 2.1, one process for all",
    "floor": "floor: curl copying the bytes",
}


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    memory = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "kernel": platform.release(),
        "memory_gib": round(int(memory.group(1)) / 2**20, 1) if memory else None,
        "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def load(directory: Path, name: str) -> dict[str, Any] | None:
    """A result file, or None when that benchmark did not run (or did not finish)."""
    try:
        return json.loads((directory / name).read_text())
    except (OSError, ValueError):
        return None


def verdict(met: bool, miss: str) -> str:
    return "met" if met else f"**missed** ({miss})"


def pct(value: float) -> str:
    return f"{value:.3f} %" if value < 1 else f"{value:.2f} %"


def machine_lines(info: dict[str, Any]) -> list[str]:
    return [f"Run {info['date_utc']} on {info['nproc']} × {info['cpu']}, kernel {info['kernel']}, "
            f"{info['memory_gib']} GiB; load average at the start {info['load_1_5_15']}.", ""]


def cost_rows(cost: dict[str, Any]) -> list[str]:
    rows = ["| Workload | Job | CPU % of a core / station | CPU s / station-minute | PSS MiB / station "
            "| USS MiB / station | RSS MiB / station | Processes | Outputs advancing | Restarts |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, modes in cost["workloads"].items():
        for mode, f in modes.items():
            job = "AAC copy" if mode == "copy" else f"MP3 -> AAC-LC {cost.get('bitrate', '')}"
            if name == "floor":
                job = "AAC bytes" if mode == "copy" else "MP3 bytes"
            rows.append(f"| {WORKLOAD_NAMES.get(name, name)} | {job} | {pct(f['cpu_pct'])} | "
                        f"{f['cpu_s_per_station_min']:.3f} | {f['pss_mib']:.1f} | {f['uss_mib']:.1f} | "
                        f"{f['rss_mib']:.1f} | {f['processes']:.0f} | {f['advancing']:.0f}/{f['stations']:.0f} | "
                        f"{f.get('restarts', 0):.0f} |")
    rows += [f"- window lost: {failure}" for failure in cost.get("failures", [])]
    return rows


def serving_rows(serving: dict[str, Any]) -> list[str]:
    rows = ["| nginx | requests/s | p50 ms | p99 ms | errors | best req/s with p99 < 50 ms "
            "| listeners at p99 < 50 ms |",
            "|---|---|---|---|---|---|---|"]
    for name, t in serving["targets"].items():
        label = "radio-hls configuration" if name == "project" else "plain static"
        rows.append(f"| {label} | {t['rps']:.0f} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['errors']} | "
                    f"{t['capacity_rps']:.0f} | {t['listeners']} |")
    return rows


def analytics_rates(directory: Path) -> dict[str, float]:
    """Lines per second of each tool in the table that `make bench-analytics` prints (Markdown rows
    `| tool | lines | median seconds | lines per second | vs GoAccess |`)."""
    try:
        text = (directory / "analytics.out").read_text()
    except OSError:
        return {}
    rates = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[3].replace(",", "").replace(".", "").isdigit():
            rates[cells[0]] = float(cells[3].replace(",", ""))
    return rates


def summary_rows(directory: Path) -> list[str]:
    rows = ["| Figure | radio-hls | Peer | radio-hls / peer | Target | Result |", "|---|---|---|---|---|---|"]
    cost = load(directory, "station_cost.json")
    if cost:
        w = cost["workloads"]
        copy, transcode = w["project"]["copy"], w["project"]["transcode"]
        floor = w["floor"]["copy"]
        copy_miss = f"{copy['cpu_pct'] / COPY_TARGET_PCT:.2f}x the target"
        for peer in ("liquidsoap-each", "liquidsoap-one"):
            theirs = w[peer]["copy"]
            rows.append(f"| AAC copy: CPU per station | {pct(copy['cpu_pct'])} | {WORKLOAD_NAMES[peer]} "
                        f"{pct(theirs['cpu_pct'])} | {copy['cpu_pct'] / theirs['cpu_pct']:.2f} | "
                        f"< {COPY_TARGET_PCT} % of a core | {verdict(copy['cpu_pct'] < COPY_TARGET_PCT, copy_miss)} |")
        for peer in ("liquidsoap-each", "liquidsoap-one"):
            theirs = w[peer]["copy"]
            rows.append(f"| AAC copy: PSS per station | {copy['pss_mib']:.1f} MiB | {WORKLOAD_NAMES[peer]} "
                        f"{theirs['pss_mib']:.1f} MiB | {copy['pss_mib'] / theirs['pss_mib']:.2f} | — | — |")
        for peer in ("liquidsoap-each", "liquidsoap-one"):
            ratio = transcode["cpu_pct"] / w[peer]["transcode"]["cpu_pct"]
            ratio_text = f"{ratio:.2f}"
            rows.append(f"| MP3 -> AAC: CPU per station | {pct(transcode['cpu_pct'])} | "
                        f"{WORKLOAD_NAMES[peer]} {pct(w[peer]['transcode']['cpu_pct'])} | {ratio:.2f} | "
                        f"≤ {TRANSCODE_TARGET_RATIO} | {verdict(ratio <= TRANSCODE_TARGET_RATIO, ratio_text)} |")
        rows.append(f"| Floor (bytes copied to a file) | — | curl {pct(floor['cpu_pct'])}, "
                    f"{floor['pss_mib']:.1f} MiB PSS | AAC copy costs {copy['cpu_pct'] / floor['cpu_pct']:.1f}x "
                    "the floor | — | — |")
    serving = load(directory, "serving.json")
    if serving:
        project, plain = serving["targets"]["project"], serving["targets"]["plain"]
        ratio = project["rps"] / plain["rps"]
        slower = f"{(1 - ratio) * 100:.0f} % slower"
        rows.append(f"| nginx: requests/s | {project['rps']:.0f} | plain static nginx {plain['rps']:.0f} | "
                    f"{ratio:.2f} | ≥ {SERVING_TARGET_RATIO} | "
                    f"{verdict(ratio >= SERVING_TARGET_RATIO, slower)} |")
        rows.append(f"| nginx: p99 latency | {project['p99_ms']:.1f} ms | {plain['p99_ms']:.1f} ms | "
                    f"{project['p99_ms'] / plain['p99_ms']:.2f} | — | — |")
        rows.append(f"| Listeners per host at p99 < 50 ms | {project['listeners']} | {plain['listeners']} | "
                    f"{project['listeners'] / max(plain['listeners'], 1):.2f} | — | — |")
    rates = analytics_rates(directory)
    goaccess = next((rate for name, rate in rates.items() if name.lower().startswith("goaccess")), None)
    for name, rate in rates.items():
        if goaccess and not name.lower().startswith("goaccess"):
            ratio = rate / goaccess
            rows.append(f"| Analytics: log lines/s, {name} | {rate:,.0f} | GoAccess {goaccess:,.0f} | {ratio:.2f} | "
                        f"≥ {ANALYTICS_TARGET_RATIO:g} | {verdict(ratio >= ANALYTICS_TARGET_RATIO, f'{ratio:.1f}x')} |")
    for name, label, target in (("flag.json", "Backend flag -> first playlist", FLAG_TARGET_S),
                                ("kill_copy.json", "kill -9 -> fresh segment (AAC copy)", KILL_TARGET_S),
                                ("kill_transcode.json", "kill -9 -> fresh segment (MP3 -> AAC)", KILL_TARGET_S),
                                ("restart.json", "Host restart -> every station serving", None)):
        figure = load(directory, name)
        if figure:
            seconds = figure["median_s"]
            result = "—" if target is None else verdict(seconds <= target, f"{seconds - target:.1f} s over")
            goal = "—" if target is None else f"≤ {target:g} s"
            rows.append(f"| {label} | {seconds:.1f} s | — | — | {goal} | {result} |")
    return rows


def report_all(directory: Path) -> str:
    lines = ["### Summary", ""]
    info = load(directory, "machine.json")
    if info:
        lines += machine_lines(info)
    lines += summary_rows(directory) + [""]
    cost = load(directory, "station_cost.json")
    if cost:
        lines += [f"### Station cost ({cost['stations']} stations per job, {cost['window_s']:g} s windows, "
                  f"median of {cost['rounds']})", ""] + cost_rows(cost) + [""]
    serving = load(directory, "serving.json")
    if serving:
        lines += [f"### Serving ({serving['connections']} connections, {serving['duration_s']:g} s runs, "
                  f"median of {serving['rounds']}; {serving['stations']} stations)", ""] + serving_rows(serving) + [""]
    reactions = [(name, load(directory, f"{name}.json")) for name in ("flag", "kill_copy", "kill_transcode", "restart")]
    lines += ["### Reaction times (seconds; every run)", "", "| What | median | runs |", "|---|---|---|"]
    for name, figure in reactions:
        if figure:
            runs = ", ".join(f"{s:.1f}" for s in figure["samples_s"])
            lines.append(f"| {name} | {figure['median_s']:.1f} | {runs} |")
    return "\n".join(lines) + "\n"


def report_scale(directory: Path) -> str:
    lines = ["### Many stations on one host", ""]
    info = load(directory, "machine.json")
    if info:
        lines += machine_lines(info)
    started = load(directory, "start.json")
    scale = load(directory, "scale.json")
    if started:
        lines += [f"All stations served a first segment {started['median_s']:.0f} s after they were listed.", ""]
    if scale:
        lines += cost_rows(scale)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["machine"]:
        print(json.dumps(machine(), indent=2))
    elif len(args) == 2 and args[0] in ("all", "scale"):
        print((report_all if args[0] == "all" else report_scale)(Path(args[1])), end="")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
