"""A listener through the edge (docs/design.md, "### Edges") plays on while the origin that serves its station goes
away: first the station's hls@ unit there (its playlist and segments answer 404: the edge asks the other origin),
then the whole container (connections fail: the same). Runs after test_1_origins, as it stops an origin."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import pytest
from conftest import EDGE, ORIGINS, REPO, counted, edge_port, http, wait_for

from radio_hls.stations.placement import Ring

SLUG = "demo-aac"
PLAYERS = ["ffmpeg", "mpv"]  # libavformat's HLS demuxer, and a player that stops at a timestamp going back
WINDOW = 90  # seconds each player plays
STOP_UNIT_AT = 20  # seconds into the window: systemctl stop hls@<slug> on the station's first origin
STOP_HOST_AT = 50  # seconds into the window: docker stop of that origin
MIN_PLAYED = 0.9
PYTHON = "/usr/bin/python3"


def first_origin(slug: str) -> str:
    """The origin the edge asks first for the station: the first of its preference list on nginx's ring."""
    return Ring([f"{name}:80" for name in ORIGINS]).preference(slug)[0].rpartition(":")[0]


def play(player: str, url: str, reports: list[dict[str, Any]], playing: threading.Event) -> None:
    command = [PYTHON, str(REPO / "tests" / "players" / f"{player}.py"), "--seconds", str(WINDOW), url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "playing":
                playing.set()
            elif "played" in record:
                reports.append(record)


@pytest.fixture
def stopped_origins():
    """Whatever the test stops comes back afterwards (the scenario's destroy needs running containers)."""
    stopped: list[str] = []
    yield stopped
    for name in stopped:
        subprocess.run(["docker", "start", name], check=False, capture_output=True)


def test_a_listener_plays_on_while_its_origin_goes(origins, edge, stopped_origins):
    assert wait_for(lambda: http(edge, f"/hls/{SLUG}/index.m3u8")[0] == 200, what="the edge to serve the station")
    origin = first_origin(SLUG)
    host = origins[ORIGINS.index(origin)]
    url = f"http://127.0.0.1:{edge_port()}/hls/{SLUG}/index.m3u8?s=net-listener-1"
    reports: list[dict[str, Any]] = []
    started = [threading.Event() for _ in PLAYERS]
    threads = [threading.Thread(target=play, args=(player, url, reports, event), daemon=True)
               for player, event in zip(PLAYERS, started, strict=True)]
    for thread in threads:
        thread.start()
    assert all(event.wait(120) for event in started), "a player never began"
    began = time.monotonic()
    time.sleep(STOP_UNIT_AT)
    host.check_output(f"systemctl stop hls@{SLUG}")
    time.sleep(max(0.0, began + STOP_HOST_AT - time.monotonic()))
    stopped_origins.append(origin)
    subprocess.run(["docker", "stop", "--time", "5", origin], check=True, capture_output=True)
    for thread in threads:
        thread.join(WINDOW + 120)
    summary = [f"{r['player']}: played {r['played']}/{r['window']} s, stalls {r['stalls']} ({r['stalled']} s), "
               f"skipped {r['skipped']} s, went back {r['went_back']}, early {r['why']}" for r in reports]
    print("\n".join(summary))
    assert len(reports) == len(PLAYERS), summary
    assert all(r["played"] >= MIN_PLAYED * WINDOW and not r["early"] and not r["went_back"] for r in reports), (
        f"first origin {origin}, edge {EDGE}", summary)
    # Both players are one listener (s=net-listener-1) across the switch: the edge's analytics count it once.
    wait_for(lambda: counted(edge).get(SLUG) == 1, what="one listener session across the switch")
