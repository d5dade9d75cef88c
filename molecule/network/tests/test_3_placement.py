"""A third origin joins: the first origin's own sync, given the longer origin list, stops exactly the stations the
ring now places on the newcomer instead, and keeps the rest (the unit tests measure the share over 3,000 slugs;
here the real sync, systemd and units of one origin do it). Runs last: test_2_edge stopped and started an origin."""

from __future__ import annotations

from conftest import ID, ORIGINS, SLUGS, wait_for

from radio_hls.stations.placement import Ring

SYNC_ENV = "/etc/hls/sync.env"


def newcomer() -> tuple[str, int]:
    """A third origin's name (no such host: only the list changes) that takes a station from one of the two, and
    that one's index: whether one does depends on the names, which hold the scenario's id."""
    for number in range(3, 100):
        name = f"hls-net-origin{number}-{ID}:80"
        ring = Ring([*(f"{origin}:80" for origin in ORIGINS), name])
        for index, origin in enumerate(ORIGINS):
            if any(f"{origin}:80" not in ring.preference(slug)[:2] for slug in SLUGS):
                return name, index
    raise AssertionError("no third origin name takes a station")


def running(host) -> set[str]:
    return {slug for slug in SLUGS if host.service(f"hls@{slug}").is_running}


def test_a_third_origin_takes_only_its_share(origins):
    third, index = newcomer()
    host, here = origins[index], f"{ORIGINS[index]}:80"
    wait_for(lambda: running(host) == set(SLUGS), what=f"both stations on {ORIGINS[index]}")
    three = [*(f"{name}:80" for name in ORIGINS), third]
    expected = {slug for slug in SLUGS if here in Ring(three).preference(slug)[:2]}
    assert expected != set(SLUGS)
    host.check_output(f"sed -E 's|^HLS_ORIGINS=(.*)$|HLS_ORIGINS=\\1 {third}|' {SYNC_ENV} > /tmp/sync-three.env")
    # The host's own sync (its timer, the two-origin list) would start again what the three-origin sync stopped.
    host.check_output("systemctl stop hls-sync.timer hls-sync.service")
    try:
        host.check_output("systemd-run --wait --quiet --collect -p EnvironmentFile=/tmp/sync-three.env "
                          "/opt/hls/venv/bin/hls-sync")
        assert running(host) == expected, (expected, Ring(three).preference(SLUGS[0]))
    finally:  # the real list: both stations here again
        host.check_output("systemctl start hls-sync.timer hls-sync.service")
    wait_for(lambda: running(host) == set(SLUGS), what=f"both stations back on {ORIGINS[index]}")
