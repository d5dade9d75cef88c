"""Listener analytics: a real HLS client through nginx -> hls-analytics -> the GraphQL test backend, exactly once,
through a backend outage and a forced logrotate."""

from __future__ import annotations

import json
import shlex
import uuid
from collections import Counter

import pytest
from conftest import BACKEND, NGINX, session_log, settled, station_ready, wait_for

LOGS = "/var/log/nginx/hls-access.log"
SPOOL = "/var/lib/hls-analytics/spool"
LISTENERS = "/run/hls-analytics/listeners.json"
SLUG = "demo-aac"
TYPES = {".m3u8": "playlist_request", ".ts": "segment_request"}


class Listener:
    """One ffmpeg playing a station through nginx, with its own session id and user agent."""

    def __init__(self, host, slug: str = SLUG, seconds: int = 16) -> None:
        self.host = host
        self.slug = slug
        self.session = str(uuid.uuid4())
        self.user_agent = f"radio-hls-test/{self.session}"
        self.unit = f"hls-test-listener-{self.session[:8]}"
        url = f"{NGINX}/hls/{slug}/index.m3u8?s={self.session}&ref=test"
        self.command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-user_agent", self.user_agent, "-i", url,
                        "-t", str(seconds), "-c", "copy", "-f", "null", "-"]

    def play(self) -> None:
        """Listen in the foreground until ffmpeg has read `seconds` of audio."""
        self.host.check_output("timeout 120 " + shlex.join(self.command))

    def start(self) -> None:
        self.host.check_output(f"systemd-run --quiet --collect --unit {self.unit} {shlex.join(self.command)}")

    def wait(self) -> None:
        wait_for(lambda: self.host.run(f"systemctl is-active --quiet {self.unit}").rc != 0, timeout=120,
                 what=f"{self.unit} to finish")

    def logged(self, pattern: str = LOGS + "*") -> Counter:
        """Requests (by event type) and bytes this client made, from nginx's logs, rotated ones included."""
        out = self.host.run(f"zcat -f {pattern} | grep -F -- {shlex.quote(self.user_agent)}").stdout
        counts: Counter = Counter()
        for line in out.splitlines():
            fields = line.split("\t")
            kind = next((kind for suffix, kind in TYPES.items() if fields[10].endswith(suffix)), None)
            if kind and fields[9] == "GET" and fields[11][:1] in ("2", "3"):
                counts[kind] += 1
                counts["bytes"] += int(fields[12])
        return counts

    def events(self) -> list[dict]:
        all_events = json.loads(self.host.check_output(f"curl -fsS {BACKEND}/admin/events"))
        return [event for event in all_events if event["user_agent"] == self.user_agent]

    def received(self) -> Counter:
        counts: Counter = Counter()
        for event in self.events():
            counts[event["event_type"]] += event["request_count"]
            counts["bytes"] += event["bytes_transferred"]
        return counts

    def delivered(self) -> Counter:
        """Wait until the backend has every request of this client, then check nothing more arrives."""
        expected = settled(self.logged, what=f"the session log lines of {self.session}")
        assert expected["playlist_request"] >= 2 and expected["segment_request"] >= 2, expected
        try:
            # Each probe runs the analytics once more (the timer's own firing is checked on its own).
            wait_for(lambda: run_analytics(self.host) and self.received() == expected, timeout=90, interval=1,
                     what=f"the backend to count {dict(expected)} for {self.session}")
        except pytest.fail.Exception:
            journal = self.host.run("journalctl -u hls-analytics.service --no-pager -o cat -n 30").stdout
            assert self.received() == expected, f"events: {self.events()}\njournal: {journal}"
        run_analytics(self.host)
        assert self.received() == expected
        return expected


def run_analytics(host):
    return host.run("systemctl start hls-analytics.service")


def spooled(host) -> int:
    return len(host.run(f"ls {SPOOL}").stdout.split())


@pytest.fixture(scope="module", autouse=True)
def station(host):
    station_ready(host, SLUG)


def test_the_timer_runs_the_analytics(host):
    assert host.service("hls-analytics.timer").is_enabled
    assert host.service("hls-analytics.timer").is_running
    first = host.check_output("systemctl show -p InactiveExitTimestampMonotonic --value hls-analytics.service")
    wait_for(lambda: host.check_output("systemctl show -p InactiveExitTimestampMonotonic --value "
                                       "hls-analytics.service") != first,
             what="hls-analytics.timer to start the analytics again")


def test_analytics_units_are_hardened_and_the_key_stays_secret(host):
    env = host.file("/etc/hls/analytics.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert "STREAMING_API_KEY=molecule-analytics-key" in env.content_string
    shown = host.check_output("systemctl show hls-analytics.service")
    assert "molecule-analytics-key" not in shown
    assert "User=hls-analytics" in shown and "ProtectSystem=strict" in shown
    assert run_analytics(host).rc == 0
    assert "molecule-analytics-key" not in host.check_output("journalctl -u hls-analytics.service --no-pager")
    state = host.file("/var/lib/hls-analytics/state.json")
    assert state.user == "hls-analytics" and state.mode == 0o600


def test_a_listening_session_reaches_the_backend(host, backend):
    listener = Listener(host)
    listener.play()
    expected = listener.delivered()
    events = listener.events()
    assert {event["anonymous_session_id"] for event in events} == {listener.session}
    assert {event["station_slug"] for event in events} == {SLUG}
    assert {event["event_type"] for event in events} == set(TYPES.values())
    assert {event["referer"] for event in events if event["event_type"] == "playlist_request"} == {"test"}
    assert {event["ip_address"] for event in events} == {"127.0.0.1"}
    assert sum(event["bytes_transferred"] for event in events) == expected["bytes"]
    requests = json.loads(host.check_output(f"curl -fsS {BACKEND}/admin/requests"))
    submits = [r for r in requests if r["headers"].get("X-Streaming-Api-Key")]
    assert submits and {r["headers"]["X-Streaming-Api-Key"] for r in submits} == {"molecule-analytics-key"}


def test_live_listeners_file_counts_a_listener(host):
    listener = Listener(host, seconds=30)
    listener.start()
    try:
        wait_for(lambda: json.loads(host.file(LISTENERS).content_string or "{}").get("stations", {}).get(SLUG, 0) >= 1,
                 what=f"{LISTENERS} to count a listener of {SLUG}")
        assert host.file(LISTENERS).mode == 0o644
    finally:
        listener.wait()


def test_a_backend_outage_delivers_everything_once_afterwards(host, backend):
    host.check_output("systemctl stop hls-test-backend.service")
    listener = Listener(host)
    listener.play()
    wait_for(lambda: spooled(host) >= 1, what="the analytics to spool while the backend is down")
    assert run_analytics(host).rc != 0
    assert "backend unavailable" in host.check_output("journalctl -u hls-analytics.service --no-pager -n 20 -o cat")
    host.check_output("systemctl start hls-test-backend.service")
    wait_for(lambda: host.run(f"curl -fsS {BACKEND}/healthz").rc == 0, what="the test backend")
    listener.delivered()
    timestamps = [event["timestamp"] for event in listener.events()]
    assert timestamps == sorted(timestamps)
    wait_for(lambda: spooled(host) == 0, what="the spool to empty")


def test_a_failing_backend_delivers_everything_once_afterwards(host, backend):
    backend(fail="500")
    listener = Listener(host)
    listener.play()
    wait_for(lambda: spooled(host) >= 1, what="the analytics to spool while the backend fails")
    assert listener.received() == Counter()
    backend(fail=None, submit_result="operation_info")
    assert run_analytics(host).rc != 0
    assert listener.received() == Counter()
    backend(submit_result="ok")
    listener.delivered()


def rotate_twice_while_listening(host, listener: Listener) -> None:
    """Two forced logrotate runs while `listener` plays, each log with some of its requests in it."""
    listener.start()
    try:
        for rotation in ("first", "second"):
            wait_for(lambda: listener.logged(LOGS)["segment_request"] >= 2,
                     what=f"requests in the live log before the {rotation} rotation")
            host.check_output("logrotate -f /etc/logrotate.d/nginx")
    finally:
        listener.wait()


def test_a_forced_logrotate_while_listening_loses_and_doubles_nothing(host, backend):
    listener = Listener(host, seconds=24)
    rotate_twice_while_listening(host, listener)
    assert host.file(LOGS + ".2.gz").exists
    listener.delivered()


def test_analytics_that_miss_two_rotations_finish_from_the_compressed_log(host, backend):
    # As when the analytics fail on every run until a fix: neither the timer nor logrotate's prerotate runs them.
    marker = f"radio-hls-test/first-bytes-{uuid.uuid4()}"
    host.check_output(f"curl -fsS -o /dev/null -A {marker} {NGINX}/hls/{SLUG}/index.m3u8")
    session_log(host, marker)
    assert run_analytics(host).rc == 0  # the live log is now known by its first bytes
    dropin = "/run/systemd/system/hls-analytics.service.d/test-off.conf"
    host.check_output(f"mkdir -p {dropin.rsplit('/', 1)[0]} && printf '[Unit]\\nConditionPathExists=/nonexistent\\n'"
                      f" > {dropin} && systemctl daemon-reload")
    listener = Listener(host, seconds=24)
    try:
        rotate_twice_while_listening(host, listener)
    finally:
        host.check_output(f"rm -f {dropin} && systemctl daemon-reload")
    assert listener.logged(LOGS + ".2.gz")["segment_request"] >= 2  # the file read last is now compressed
    listener.delivered()
