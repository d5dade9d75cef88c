"""The tables of `make bench` and `make bench-scale`, from the JSON the agents wrote (host side, stdlib only).

  report.py machine        JSON: when and on what machine the run happens
  report.py all DIR        Markdown: the summary table (ratios against the peers, targets) and the details
  report.py scale DIR      Markdown: the many-stations run
"""

from __future__ import annotations

import json
import math
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
TRANSCODE_FLOOR_TARGET_RATIO = 1.1
SERVING_TARGET_RATIO = 0.9
ANALYTICS_TARGET_RATIO = 3.0
FLAG_TARGET_S = 15.0
KILL_TARGET_S = 5.0
WORKLOAD_NAMES = {
    "project": "radio-hls (hls@ units, FFmpeg)",
    "liquidsoap-each": "Liquidsoap 2.1, one process per station",
    "liquidsoap-one": "Liquidsoap 2.1, one process for all",
    "floor": "floor: curl copying the bytes",
    "encoder": "encoder floor: one FFmpeg, decode + encode only, as fast as it runs",
}
WRITER_NAMES = {
    "hls-playlists.service": "hls-playlists (one process for the host)",
    "ffmpeg-hls": "FFmpeg, hls muxer writing its playlist (one per station)",
    "ffmpeg-segment": "FFmpeg, segment muxer and CSV list (one per station)",
}
ACTIONS = {"kill": "kill -9", "restart": "systemctl restart"}


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


def write_section(document: Path, heading: str, section: str) -> None:
    """Put `section` (which starts with `heading`) in the Markdown `document`, in place of the section of that
    heading if there is one (up to the next `## `), else at the end; the other sections are kept."""
    text = document.read_text(encoding="utf-8") if document.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _match: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def load(directory: Path, name: str) -> dict[str, Any] | None:
    """A result file, or None when that benchmark did not run (or did not finish)."""
    try:
        return json.loads((directory / name).read_text())
    except (OSError, ValueError):
        return None


def verdict(met: bool, miss: str) -> str:
    return "met" if met else f"**missed** ({miss})"


def pct(value: float) -> str:
    if abs(value) < 0.01:
        return f"{value:.4f} %"
    return f"{value:.3f} %" if abs(value) < 1 else f"{value:.2f} %"


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` percent of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share / 100 * len(ordered)) - 1)]


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
            if name == "encoder":  # one process on a recording: no memory while running, no output to advance
                rows.append(f"| {WORKLOAD_NAMES[name]} | {job}, {f['audio_s']:.0f} s recorded from the upstream | "
                            f"{pct(f['cpu_pct'])} | {f['cpu_s_per_station_min']:.3f} | — | — | — | 1 | — | — |")
                continue
            rows.append(f"| {WORKLOAD_NAMES.get(name, name)} | {job} | {pct(f['cpu_pct'])} | "
                        f"{f['cpu_s_per_station_min']:.3f} | {f['pss_mib']:.1f} | {f['uss_mib']:.1f} | "
                        f"{f['rss_mib']:.1f} | {f['processes']:.0f} | {f['advancing']:.0f}/{f['stations']:.0f} | "
                        f"{f.get('restarts', 0):.0f} |")
    rows += [f"- window lost: {failure}" for failure in cost.get("failures", [])]
    encoder = cost["workloads"].get("encoder", {}).get("transcode")
    station = cost["workloads"].get("project", {}).get("transcode")
    if encoder and station:
        floor_s = encoder["cpu_s_per_station_min"]
        # hls-playlists serves the whole host: its share per station is not the transcoding's, and shrinks as
        # stations are added; shown apart so that what FFmpeg itself spends beyond the encoder stays visible.
        own_s = station["cpu_s_per_station_min"] - station.get("shared_cpu_pct", 0) * 60 / 100  # % of a core: s/min
        rows.append(f"- radio-hls MP3 -> AAC / encoder floor: {station['cpu_s_per_station_min'] / floor_s:.2f} "
                    f"(CPU s per station-minute / CPU s per audio minute); without the hls-playlists share: "
                    f"{own_s / floor_s:.2f}")
    shared = [f"{mode} {pct(f['shared_cpu_pct'])}" for modes in cost["workloads"].values()
              for mode, f in modes.items() if f.get("shared_cpu_pct")]
    if shared:
        rows.append(f"- radio-hls includes each station's share of hls-playlists.service: {', '.join(shared)}")
    return rows


def writer_costs(cost: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per writer: CPU and PSS in total and per station; the peers' difference is FFmpeg's own playlist."""
    figures = {}
    for name in [name for name in WRITER_NAMES if name in cost["workloads"]]:
        f = cost["workloads"][name]
        stations = f["stations"]
        total = name == "hls-playlists.service"
        figures[name] = {
            "stations": stations, "advancing": f["advancing"],
            "cpu_total": f["cpu_pct_total"] if total else f["cpu_pct"] * stations, "cpu": f["cpu_pct"],
            "pss_total": f["pss_mib_total"] if total else f["pss_mib"] * stations, "pss": f["pss_mib"],
        }
    hls, segment = figures.get("ffmpeg-hls"), figures.get("ffmpeg-segment")
    if hls and segment:
        figures["ffmpeg-own-playlist"] = {key: hls[key] - segment[key] for key in ("cpu", "pss")} | {
            "cpu_total": (hls["cpu"] - segment["cpu"]) * hls["stations"],
            "pss_total": (hls["pss"] - segment["pss"]) * hls["stations"],
            "stations": hls["stations"], "advancing": min(hls["advancing"], segment["advancing"])}
    return figures


def playlist_rows(cost: dict[str, Any]) -> list[str]:
    rows = ["| Writer | Stations | CPU % of a core, total | CPU % / station | PSS MiB, total | PSS MiB / station "
            "| Playlists advancing |", "|---|---|---|---|---|---|---|"]
    for name, f in writer_costs(cost).items():
        label = WRITER_NAMES.get(name, "FFmpeg's own playlist: hls muxer minus segment muxer")
        rows.append(f"| {label} | {f['stations']:.0f} | {pct(f['cpu_total'])} | {pct(f['cpu'])} | "
                    f"{f['pss_total']:.1f} | {f['pss']:.2f} | {f['advancing']:.0f}/{f['stations']:.0f} |")
    service = cost["workloads"].get("hls-playlists.service")
    if service:
        rows.append(f"- every playlist {cost['window_minutes']} minutes of {cost['segment_seconds']} s segments "
                    f"(hls-playlists' median: {service['playlist_minutes']:.1f} min); hls-playlists USS "
                    f"{service['uss_mib_total']:.1f} MiB, RSS {service['rss_mib_total']:.1f} MiB")
    rows += [f"- window lost: {failure}" for failure in cost.get("failures", [])]
    return rows


def restart_groups(restarts: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The samples by action and upstream codec (demo-aac-*: AAC copy, demo-mp3-*: MP3 -> AAC)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for sample in restarts["samples"]:
        job = "MP3 -> AAC" if sample["slug"].startswith("demo-mp3") else "AAC copy"
        groups.setdefault((sample["action"], job), []).append(sample)
        groups.setdefault((sample["action"], "all"), []).append(sample)
    return groups


def restart_rows(restarts: dict[str, Any]) -> list[str]:
    rows = ["| What | Job | Runs | first new segment listed: p50 / p95 / max | gap heard: p50 / max |",
            "|---|---|---|---|---|"]
    for (action, job), samples in sorted(restart_groups(restarts).items()):
        listed, gaps = [s["listed_s"] for s in samples], [s["gap_s"] for s in samples]
        rows.append(f"| {ACTIONS[action]} | {job} | {len(samples)} | {percentile(listed, 50):.1f} / "
                    f"{percentile(listed, 95):.1f} / {max(listed):.1f} s | {percentile(gaps, 50):.2f} / "
                    f"{max(gaps):.2f} s |")
    rows += [f"- failed: {failure}" for failure in restarts.get("failures", [])]
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
        encoder = w.get("encoder", {}).get("transcode")
        if encoder:
            ratio = transcode["cpu_s_per_station_min"] / encoder["cpu_s_per_station_min"]
            rows.append(f"| MP3 -> AAC: CPU s per station-minute | {transcode['cpu_s_per_station_min']:.3f} | encoder "
                        f"floor (decode + encode, CPU s per audio minute) {encoder['cpu_s_per_station_min']:.3f} | "
                        f"{ratio:.2f} | ≤ {TRANSCODE_FLOOR_TARGET_RATIO} | "
                        f"{verdict(ratio <= TRANSCODE_FLOOR_TARGET_RATIO, f'{ratio:.2f}')} |")
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
    rows += writer_summary_rows(directory) + restart_summary_rows(directory)
    for name, label, target in (("flag.json", "Backend flag -> first playlist", FLAG_TARGET_S),
                                ("restart.json", "Host restart -> every station serving", None)):
        figure = load(directory, name)
        if figure:
            seconds = figure["median_s"]
            result = "—" if target is None else verdict(seconds <= target, f"{seconds - target:.1f} s over")
            goal = "—" if target is None else f"≤ {target:g} s"
            rows.append(f"| {label} | {seconds:.1f} s | — | — | {goal} | {result} |")
    return rows


def writer_summary_rows(directory: Path) -> list[str]:
    cost = load(directory, "playlist_cost.json")
    figures = writer_costs(cost) if cost else {}
    service, own = figures.get("hls-playlists.service"), figures.get("ffmpeg-own-playlist")
    if not service:
        return []
    rows = []
    for key, label, unit in (("cpu", "CPU", pct), ("pss", "PSS", lambda mib: f"{mib:.2f} MiB")):
        peer = f"FFmpeg's hls muxer, its own playlist {unit(own[key])}" if own else "—"
        ratio = f"{service[key] / own[key]:.2f}" if own and own[key] > 0 else "—"
        rows.append(f"| Playlists: {label} per station, {service['stations']:.0f} stations | {unit(service[key])} "
                    f"(hls-playlists, {unit(service[key + '_total'])} in all) | {peer} | {ratio} | — | — |")
    return rows


def restart_summary_rows(directory: Path) -> list[str]:
    restarts = load(directory, "restarts.json")
    if not restarts:
        return []
    groups, rows = restart_groups(restarts), []
    for job in ("AAC copy", "MP3 -> AAC"):
        samples = groups.get(("kill", job))
        if samples:
            seconds = percentile([s["listed_s"] for s in samples], 50)
            result = verdict(seconds <= KILL_TARGET_S, f"{seconds - KILL_TARGET_S:.1f} s over")
            rows.append(f"| kill -9 -> first new segment listed ({job}), p50 | {seconds:.1f} s | — | — | "
                        f"≤ {KILL_TARGET_S:g} s | {result} |")
    for action in ACTIONS:
        samples = groups.get((action, "all"))
        if samples:
            listed, gaps = [s["listed_s"] for s in samples], [s["gap_s"] for s in samples]
            rows.append(f"| {ACTIONS[action]} -> first new segment listed, p50 / max | {percentile(listed, 50):.1f} / "
                        f"{max(listed):.1f} s | — | — | — | — |")
            rows.append(f"| Gap heard at {ACTIONS[action]}, p50 / max | {percentile(gaps, 50):.2f} / "
                        f"{max(gaps):.2f} s | — | — | — | — |")
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
    lines += writer_lines(directory) + restart_lines(directory)
    reactions = [(name, load(directory, f"{name}.json")) for name in ("flag", "restart")]
    lines += ["### Reaction times (seconds; every run; restart: of the host)", "", "| What | median | runs |",
              "|---|---|---|"]
    for name, figure in reactions:
        if figure:
            runs = ", ".join(f"{s:.1f}" for s in figure["samples_s"])
            lines.append(f"| {name} | {figure['median_s']:.1f} | {runs} |")
    return "\n".join(lines) + "\n"


def writer_lines(directory: Path) -> list[str]:
    cost = load(directory, "playlist_cost.json")
    if not cost:
        return []
    return [f"### What writing the playlists costs ({cost['window_s']:g} s windows, median of {cost['rounds']})", ""] \
        + playlist_rows(cost) + [""]


def restart_lines(directory: Path) -> list[str]:
    restarts = load(directory, "restarts.json")
    if not restarts:
        return []
    return [f"### Station restarts ({len(restarts['stations'])} stations at once, {restarts['runs']} of each "
            "per station)", ""] + restart_rows(restarts) + [""]


def report_scale(directory: Path) -> str:
    lines = ["### Many stations on one host", ""]
    info = load(directory, "machine.json")
    if info:
        lines += machine_lines(info)
    started = load(directory, "start.json")
    scale = load(directory, "scale.json")
    if scale:
        lines += cost_rows(scale) + [""]
    lines += start_lines(started, load(directory, "restart.json"), load(directory, "start_profile.json"))
    lines += writer_lines(directory) + restart_lines(directory)
    return "\n".join(lines) + "\n"


def start_lines(started: dict | None, rebooted: dict | None, profile: dict | None) -> list[str]:
    """Seconds until each station serves, as distributions, and where one start's CPU goes."""
    lines = ["| Event | Stations serving / listed | p50 | p95 | max |", "|---|---|---|---|---|"]

    def shown(seconds: float, timeout: float) -> str:
        return f"{seconds:.1f} s" if math.isfinite(seconds) else f"> {timeout:g} s"

    for name, figure in (("the backend flags them all -> each serving", started),
                         ("host restart -> each serving", rebooted)):
        if figure and "p50_s" in figure:
            timeout = figure["timeout_s"]
            lines.append(f"| {name} | {figure['serving']} / {figure['stations']} | {shown(figure['p50_s'], timeout)} | "
                         f"{shown(figure['p95_s'], timeout)} | {shown(figure['max_s'], timeout)} |")
    lines.append("")
    if profile:
        cases = [key for key, value in profile.items() if isinstance(value, dict)]
        lines += ["| One start, CPU ms (median of " + str(profile["rounds"]) + ") | " + " | ".join(cases) + " |",
                  "|---|" + "---|" * len(cases)]
        for part in ("systemd_ms", "launcher_ms", "ffmpeg_start_ms"):
            lines.append(f"| {part.removesuffix('_ms')} | " + " | ".join(f"{profile[case][part]:.0f}" for case in cases)
                         + " |")
        lines.append("")
    return lines


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
