"""The units' sandboxes and limits, as systemd itself scores and reports them."""

from __future__ import annotations

import re

# systemd-analyze security's exposure, 0 (locked down) to 10, of every service unit the roles install (a template by
# its name: each instance is held to it): the score measured on the molecule host (systemd 252) plus 0.2, so that any
# loosened setting fails here. Tighten a unit, then lower its number to match; a new unit needs a line here.
EXPOSURE_LIMITS = {"hls@.service": 1.2 + 0.2, "hls-sync.service": 1.7 + 0.2, "hls-sync-watch.service": 1.3 + 0.2,
                   "hls-watchdog.service": 0.7 + 0.2, "hls-status.service": 0.4 + 0.2,
                   "hls-nowplaying.service": 1.2 + 0.2, "hls-analytics.service": 1.3 + 0.2,
                   "hls-playlists.service": 0.4 + 0.2, "hls-stations-start.service": 0.7 + 0.2,
                   "hls-demo-icecast.service": 1.1 + 0.2, "hls-demo-feed@.service": 1.1 + 0.2,
                   "hls-demo-titles.service": 1.1 + 0.2}
UNIT_DIR = "/etc/systemd/system"
# The first lines of `{{ ansible_managed | comment }}`: what tells the roles' unit files from others (the test backend).
MANAGED = "# Ansible managed"


def installed_services(host) -> dict[str, list[str]]:
    """The service units the roles wrote, each with the units to score: itself, or a template's instances."""
    files = host.check_output(f"grep -l -x -F '{MANAGED}' {UNIT_DIR}/*.service").split()
    installed = {}
    for name in (path.removeprefix(f"{UNIT_DIR}/") for path in files):
        if name.endswith("@.service"):
            listed = host.check_output(f"systemctl list-units --all --plain --no-legend --full '{name[:-8]}*.service'")
            installed[name] = [line.split()[0] for line in listed.splitlines()]
        else:
            installed[name] = [name]
    return installed


def test_every_installed_unit_has_a_limit(host):
    installed = installed_services(host)
    assert "hls@.service" in installed, installed  # the listing itself works
    assert sorted(installed) == sorted(EXPOSURE_LIMITS), "a unit the roles install has no limit here, or one is gone"
    assert all(installed.values()), f"a template without a running instance to score: {installed}"


def test_exposure_scores(host):
    too_exposed = []
    for name, units in installed_services(host).items():
        for unit in units:
            last = host.check_output(f"systemd-analyze security --no-pager {unit}").splitlines()[-1]
            score = float(re.search(r"level for \S+: ([0-9.]+)", last).group(1))
            if name not in EXPOSURE_LIMITS or score > round(EXPOSURE_LIMITS[name], 1):
                too_exposed.append(f"{unit}: {score}, limit {EXPOSURE_LIMITS.get(name)}")
    assert not too_exposed, too_exposed


def test_station_resource_limits(host):
    show = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show -p MemoryMax -p TasksMax -p CPUWeight -p User -p NoNewPrivileges hls@demo-aac").splitlines())
    assert int(show["MemoryMax"]) == 256 * 1024 * 1024
    assert show["TasksMax"] == "64"
    assert show["CPUWeight"] == "100"
    assert show["User"] == "hls"
    assert show["NoNewPrivileges"] == "yes"


def test_station_output_is_a_bounded_tmpfs(host):
    # molecule.yml: hls_output_storage ram, hls_output_max_size 32M (the paths scenario checks disk).
    mount = host.mount_point("/run/hls")
    assert mount.exists and mount.filesystem == "tmpfs"
    assert {"noexec", "nosuid", "nodev", "size=32768k"} <= set(mount.options), mount.options
