"""The units' sandboxes and limits, as systemd itself scores and reports them."""

from __future__ import annotations

import re

import pytest

# systemd-analyze security's exposure, 0 (locked down) to 10: the score measured on the molecule host (systemd 252)
# plus 0.2, so that any loosened setting fails here. Tighten a unit, then lower its number to match.
EXPOSURE_LIMITS = {"hls@demo-aac.service": 1.4 + 0.2, "hls-sync.service": 1.7 + 0.2,
                   "hls-sync-watch.service": 1.3 + 0.2, "hls-watchdog.service": 0.9 + 0.2, "hls-status.service": 0.8 + 0.2,
                   "hls-nowplaying.service": 1.4 + 0.2, "hls-analytics.service": 1.4 + 0.2}


@pytest.mark.parametrize(("unit", "limit"), EXPOSURE_LIMITS.items())
def test_exposure_score(host, unit, limit):
    last = host.check_output(f"systemd-analyze security --no-pager {unit}").splitlines()[-1]
    score = float(re.search(r"level for \S+: ([0-9.]+)", last).group(1))
    assert score <= round(limit, 1), last


def test_station_resource_limits(host):
    show = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show -p MemoryMax -p TasksMax -p CPUWeight -p User -p NoNewPrivileges hls@demo-aac").splitlines())
    assert int(show["MemoryMax"]) == 256 * 1024 * 1024
    assert show["TasksMax"] == "64"
    assert show["CPUWeight"] == "100"
    assert show["User"] == "hls"
    assert show["NoNewPrivileges"] == "yes"


def test_station_output_is_a_bounded_tmpfs(host):
    mount = host.mount_point("/run/hls")
    assert mount.exists and mount.filesystem == "tmpfs"
    assert "noexec" in mount.options and "nosuid" in mount.options
