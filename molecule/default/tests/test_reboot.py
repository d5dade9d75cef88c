"""A host reboot (the container restarted): every enabled station, nginx and the timers come back."""

from __future__ import annotations

import subprocess

from conftest import STATIONS, station_ready, wait_for
from test_analytics import Listener, run_analytics


def test_everything_comes_back_after_a_reboot(host):
    before = {s["slug"]: station_ready(host, s["slug"]) for s in STATIONS}
    # A listener whose requests are half delivered when the host goes down.
    listener = Listener(host, seconds=8)
    listener.play()
    assert run_analytics(host).rc == 0
    Listener(host, seconds=4).play()  # more lines the analytics have not read yet
    listener.play()
    container = host.check_output("hostname")
    subprocess.run(["docker", "restart", "--time", "30", container], check=True, capture_output=True)
    # Right after `docker restart`, PID 1 may not answer yet: wait until it says it has booted.
    wait_for(lambda: host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded"),
             timeout=120, what="systemd to finish booting")
    for unit in ("nginx.service", "hls-sync.timer", "hls-analytics.timer", "run-hls.mount",
                 "hls-stations-start.service"):
        assert host.service(unit).is_running, unit
    for slug, old in before.items():
        after = station_ready(host, slug, min_segments=2)
        # The tmpfs is new after a reboot: the sequence still moves forward and no name comes back.
        assert after.sequence > max(old.numbered().values())
        assert not set(after.segments) & set(old.segments)
    # The analytics resume from their saved position: every request counted once.
    listener.delivered()
