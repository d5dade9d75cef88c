"""Whole runs of radio_hls/analytics/run.py against the fake backend over loopback: real log files, real
spool, real HTTP. Each scenario checks that the backend received every logged request exactly once, but for the
one case that cannot be (an answer lost after the backend processed the batch), where it checks what arrived twice
and that the re-send was counted, and for batches the backend refuses for good, which go to the dead letters."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
import urllib3
from loglines import T0, line, listening
from patience import GENEROUS_TIMEOUT, PATIENCE, SHORT_TIMEOUT, wait_for

from radio_hls.analytics import logparse as hls_logparse
from radio_hls.analytics import logreader as hls_logreader
from radio_hls.analytics import run as hls_analytics
from radio_hls.analytics.run import (
    MUTATION,
    SEND_BUDGET_SECONDS,
    Analytics,
    Config,
    Refused,
    State,
    Unavailable,
    classify,
)
from radio_hls.analytics.spool import Spool
from radio_hls.common.graphql import BackendError

if TYPE_CHECKING:
    from conftest import FakeBackend, HeldHang

KEY = "analytics-key"


@pytest.fixture
def environ(tmp_path: Path, backend: FakeBackend) -> dict[str, str]:
    backend.set_state(api_key=KEY)
    return {
        "GRAPHQL_ENDPOINT": backend.graphql,
        "STREAMING_API_KEY": KEY,
        "GRAPHQL_TIMEOUT_SECONDS": str(GENEROUS_TIMEOUT),
        "HLS_ACCESS_LOG": str(tmp_path / "hls-access.log"),
        "HLS_ANALYTICS_STATE_DIR": str(tmp_path / "state"),
        "HLS_LISTENERS_FILE": str(tmp_path / "run" / "listeners.json"),
        "BATCH_INTERVAL_SECONDS": "10",
        "BATCH_SIZE": "500",
    }


def log_path(environ: dict[str, str]) -> Path:
    return Path(environ["HLS_ACCESS_LOG"])


def write(environ: dict[str, str], *lines: str, rotated: bool = False) -> None:
    path = log_path(environ)
    if rotated:
        path = path.with_name(path.name + ".1")
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(lines))


def run(environ: dict[str, str], now_ms: int = T0 + 60_000, **injected: Any) -> bool:
    """One run; `injected`: Analytics' other stand-ins (http, monotonic)."""
    return Analytics(Config.from_env(environ), now=lambda: now_ms / 1000, **injected).run()


def received(backend: FakeBackend) -> list[dict[str, Any]]:
    response = requests.get(f"{backend.url}/admin/events", timeout=GENEROUS_TIMEOUT)
    response.raise_for_status()
    return response.json()


def totals(events: list[dict[str, Any]]) -> Counter:
    """Requests per (session, station, type), the way the backend sums them."""
    counter: Counter = Counter()
    for event in events:
        counter[(event["anonymous_session_id"], event["station_slug"], event["event_type"])] += event["request_count"]
    return counter


def logged(*lines: str) -> Counter:
    counter: Counter = Counter()
    for text in lines:
        fields = text.rstrip("\n").split("\t")
        kind = "playlist_request" if fields[10].endswith(".m3u8") else "segment_request"
        counter[(fields[3], fields[2], kind)] += 1
    return counter


def spool_of(environ: dict[str, str]) -> Spool:
    return Spool(Path(environ["HLS_ANALYTICS_STATE_DIR"]) / "spool", 1 << 30)


def dead_letters_of(environ: dict[str, str]) -> Spool:
    return Spool(Path(environ["HLS_ANALYTICS_STATE_DIR"]) / "dead-letter", 1 << 30)


def live(environ: dict[str, str]) -> dict[str, Any]:
    return json.loads(Path(environ["HLS_LISTENERS_FILE"]).read_text())


# --- the normal path --------------------------------------------------------------------------------------

def test_a_session_arrives_aggregated_with_the_api_key(environ: dict[str, str], backend: FakeBackend) -> None:
    lines = listening("sess-1", seconds=30) + listening("sess-2", seconds=10, slug="other-station")
    write(environ, *lines, line(slug="", uri="/healthz"), line(slug="nope", kind="playlist", status=404))
    assert run(environ)
    events = received(backend)
    assert totals(events) == logged(*lines)
    # One event per session, station, type and 10 s window.
    assert len(events) == 3 * 2 + 1 * 2
    assert sum(event["bytes_transferred"] for event in events) == 20 * 300 + 20 * 32000
    requests_seen = backend.recorded_requests()
    assert [r["operationName"] for r in requests_seen] == [None]
    assert requests_seen[0]["headers"]["X-Streaming-Api-Key"] == KEY
    assert "Authorization" not in requests_seen[0]["headers"]
    assert spool_of(environ).paths() == []


def test_the_mutation_is_the_backends_own() -> None:
    assert "mutation SubmitListeningEvents($events: [ListeningEventInput!]!)" in MUTATION
    assert "... on OperationInfo { messages { kind message field code } }" in MUTATION


def test_bearer_auth_when_configured(environ: dict[str, str], backend: FakeBackend) -> None:
    write(environ, *listening("sess-1", seconds=4))
    assert run({**environ, "GRAPHQL_BEARER_AUTH": "true"})
    headers = backend.recorded_requests()[0]["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["X-Streaming-Api-Key"] == KEY


def test_nothing_new_sends_nothing(environ: dict[str, str], backend: FakeBackend) -> None:
    write(environ, *listening("sess-1", seconds=4))
    assert run(environ)
    assert run(environ)
    assert len(backend.recorded_requests()) == 1


def test_batches_hold_at_most_batch_size_events_and_arrive_in_order(environ: dict[str, str],
                                                                     backend: FakeBackend) -> None:
    lines = [text for number in range(45) for text in listening(f"sess-{number:02d}", seconds=2)]
    write(environ, *lines)
    assert run({**environ, "BATCH_SIZE": "20"})
    events = received(backend)
    assert Counter(event["batch"] for event in events) == {1: 20, 2: 20, 3: 20, 4: 20, 5: 10}
    assert totals(events) == logged(*lines)


def test_the_summary_counts_what_was_not_sent(environ: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hls-analytics")
    write(environ, *listening("sess-1", seconds=2), line(slug="", uri="/healthz"), line(slug="", uri="/x", status=404),
          line(slug="nope", kind="playlist", status=404), line(kind="playlist", method="OPTIONS"), "garbage\n")
    assert run(environ)
    summary = caplog.records[-1].getMessage()
    assert summary.startswith("read 7 lines: 2 listening requests")
    assert "ignored 2 not /hls/, 0 not playlist or segment, 1 not GET, 1 error status, 1 malformed" in summary
    assert "spooled 2 events in 1 batches, sent 2 events in 1 batches" in summary
    assert summary.endswith("; spool: 0 batches; listeners: {'radio-joy': 1}"), summary


# --- backend failures -------------------------------------------------------------------------------------

# Every failure the backend reports, or that shows before it processed the batch. A hang is different: the backend
# may process the batch after the client gave up (test_a_batch_whose_answer_is_lost_arrives_twice_alike).
FAILURES = [
    {"fail": "500"}, {"fail": "malformed"}, {"fail": "errors"}, {"fail": "close"},
    {"submit_result": "operation_info"}, {"submit_result": "unsuccessful"}, {"api_key": "another-key"},
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda failure: "-".join(str(v) for v in failure.values()))
def test_a_failed_batch_stays_spooled_then_arrives_once(environ: dict[str, str], backend: FakeBackend,
                                                       failure: dict[str, Any],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    lines = listening("sess-1", seconds=20)
    write(environ, *lines)
    backend.set_state(**failure)
    assert not run(environ)
    assert "backend unavailable, 1 batch(es) kept in the spool" in caplog.text
    assert len(spool_of(environ).paths()) == 1
    # A backend that refuses even an empty batch refuses everything (a wrong key, no rights): not this batch's
    # fault, so nothing goes to the dead letters.
    assert dead_letters_of(environ).paths() == []
    assert live(environ)["dead_letter_events_total"] == 0
    backend.set_state(fail=None, submit_result="ok", api_key=KEY)
    assert run(environ)
    assert totals(received(backend)) == logged(*lines)
    assert spool_of(environ).paths() == []
    assert run(environ)
    assert totals(received(backend)) == logged(*lines)


def copies(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The batches the backend recorded, each as the events the client sent (without what the backend added)."""
    batches: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        sent = {key: value for key, value in event.items() if key not in ("batch", "received_at")}
        batches.setdefault(event["batch"], []).append(sent)
    return [batches[number] for number in sorted(batches)]


def test_a_batch_whose_answer_is_lost_arrives_twice_alike(environ: dict[str, str], backend: FakeBackend,
                                                         held_hang: HeldHang) -> None:
    """The limit docs/analytics.md names: the backend processes a batch after the client gave up on it, and
    the next run sends it again. Nothing in the contract identifies a batch (ListeningEventInput has no id, the
    spool's seq is not sent), so all a backend has to drop the second copy by is its content: the same events,
    field for field, each one alone with its session, station, type and timestamp."""
    lines = listening("sess-1", seconds=20)
    write(environ, *lines)
    backend.set_state(fail="hang")
    assert not run({**environ, "GRAPHQL_TIMEOUT_SECONDS": str(SHORT_TIMEOUT)})
    assert held_hang.answered == 0 and received(backend) == []  # the client gave up, the backend still has it
    assert len(spool_of(environ).paths()) == 1

    backend.set_state(fail=None)
    held_hang.release()  # the backend processes the batch the client no longer waits for
    wait_for(lambda: received(backend), "the held batch to be processed")
    assert run(environ)  # and the spool sends it again
    assert spool_of(environ).paths() == []
    assert live(environ)["resent_batches_total"] == 1  # counted, so /metrics says the backend may have it twice
    assert run(environ)
    assert live(environ)["resent_batches_total"] == 1

    first, second = copies(received(backend))
    assert first == second
    assert totals(first) == logged(*lines)
    keys = [(event["anonymous_session_id"], event["station_slug"], event["event_type"], event["timestamp"])
            for event in first]
    assert len(set(keys)) == len(keys)


def test_an_hour_long_outage_delivers_everything_once_in_order(environ: dict[str, str],
                                                               backend: FakeBackend) -> None:
    backend.set_state(fail="500")
    all_lines: list[str] = []
    for minute in range(60):
        lines = listening("sess-1", start=T0 + minute * 60_000, seconds=60, segment=6)
        write(environ, *lines)
        all_lines += lines
        assert not run(environ, now_ms=T0 + (minute + 1) * 60_000)
    assert len(spool_of(environ).paths()) == 60
    assert received(backend) == []
    backend.set_state(fail=None)
    assert run(environ, now_ms=T0 + 61 * 60_000)
    events = received(backend)
    assert totals(events) == logged(*all_lines)
    assert [event["timestamp"] for event in events] == sorted(event["timestamp"] for event in events)
    assert [event["batch"] for event in events] == sorted(event["batch"] for event in events)


def test_a_flapping_backend_loses_and_doubles_nothing(environ: dict[str, str], backend: FakeBackend) -> None:
    all_lines: list[str] = []
    for step in range(12):
        lines = listening(f"sess-{step % 3}", start=T0 + step * 20_000, seconds=20)
        write(environ, *lines)
        all_lines += lines
        backend.set_state(fail="close" if step % 3 else None)
        run({**environ, "BATCH_SIZE": "2"}, now_ms=T0 + (step + 1) * 20_000)
    backend.set_state(fail=None)
    assert run(environ)
    assert totals(received(backend)) == logged(*all_lines)


def test_no_endpoint_counts_events_without_spooling(environ: dict[str, str], backend: FakeBackend,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hls-analytics")
    write(environ, *listening("sess-1", seconds=4))
    assert run({**environ, "GRAPHQL_ENDPOINT": ""})
    assert backend.recorded_requests() == []
    assert spool_of(environ).paths() == []
    assert "not sent (no GRAPHQL_ENDPOINT) 2 events" in caplog.text


# --- runs never overlap, and each sends for at most SEND_BUDGET_SECONDS -----------------------------------

def waits_for_lock(path: Path) -> bool:
    """Whether a process is blocked in flock() on `path`: the kernel lists each waiter with "->" in /proc/locks."""
    info = path.stat()
    file_id = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino} "
    return any(" -> FLOCK " in entry and file_id in entry for entry in Path("/proc/locks").read_text().splitlines())


def test_a_run_waits_for_the_run_in_progress(environ: dict[str, str], backend: FakeBackend) -> None:
    lines = listening("sess-1", seconds=4)
    write(environ, *lines)
    state_dir = Path(environ["HLS_ANALYTICS_STATE_DIR"])
    in_progress = hls_analytics.locked(state_dir)  # what a run holds from its start to its end
    second = subprocess.Popen([sys.executable, hls_analytics.__file__], env={**os.environ, **environ},
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: second.poll() is not None or waits_for_lock(state_dir / ".lock"),
                 "the second run to finish or to wait for the lock")
        assert second.poll() is None, "the second run ended while the first held the lock"
        # It waits before it reads anything (the spool is made when a run starts) or sends anything.
        assert not (state_dir / "spool").exists() and not (state_dir / hls_analytics.STATE_FILE).exists()
        assert backend.recorded_requests() == []
    finally:
        in_progress.close()
        try:
            _, stderr = second.communicate(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            second.kill()
            raise
    assert second.returncode == 0, stderr
    assert totals(received(backend)) == logged(*lines)


class SlowLink(requests.Session):
    """The HTTP session of a run, and the clock of its send budget: each request to the backend takes
    `seconds_per_request` of that clock, and nothing else moves it."""

    def __init__(self, seconds_per_request: float) -> None:
        super().__init__()
        self.seconds_per_request = seconds_per_request
        self.elapsed = 0.0

    def monotonic(self) -> float:
        return self.elapsed

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().request(*args, **kwargs)
        finally:
            self.elapsed += self.seconds_per_request


def run_over(environ: dict[str, str], seconds_per_request: float) -> bool:
    """One run whose every request to the backend takes `seconds_per_request` of its send budget."""
    link = SlowLink(seconds_per_request)
    return run(environ, http=link, monotonic=link.monotonic)


def test_a_run_sends_for_at_most_the_budget_and_the_next_run_sends_the_rest(environ: dict[str, str],
                                                                           backend: FakeBackend) -> None:
    assert SEND_BUDGET_SECONDS == 120  # as docs/analytics.md says
    lines = [text for number in range(45) for text in listening(f"sess-{number:02d}", seconds=2)]
    write(environ, *lines)
    environ = {**environ, "BATCH_SIZE": "20"}  # 90 events: 5 batches
    # Batches start at 0, 50 and 100 s; a fourth would start at 150 s, past the budget. Not a failure.
    assert run_over(environ, seconds_per_request=50)
    assert sorted({event["batch"] for event in received(backend)}) == [1, 2, 3]
    assert len(spool_of(environ).paths()) == 2
    assert run_over(environ, seconds_per_request=50)
    assert spool_of(environ).paths() == []
    events = received(backend)
    assert len(events) == 90 and totals(events) == logged(*lines)
    assert [event["batch"] for event in events] == sorted(event["batch"] for event in events)


# --- crashes and restarts ---------------------------------------------------------------------------------

def test_a_crash_after_spooling_before_saving_the_state(environ: dict[str, str], backend: FakeBackend,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    lines = listening("sess-1", seconds=20)
    write(environ, *lines)
    backend.set_state(fail="500")

    def crash(self: State, path: Path) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(State, "save", crash)
        with pytest.raises(OSError):
            run(environ)
    assert len(spool_of(environ).paths()) == 1
    backend.set_state(fail=None)
    assert run(environ)
    assert totals(received(backend)) == logged(*lines)


def test_a_crash_in_the_middle_of_spooling(environ: dict[str, str], backend: FakeBackend,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [text for number in range(30) for text in listening(f"sess-{number}", seconds=2)]
    write(environ, *lines)
    real_write = Spool.write
    calls = []

    def crash_on_the_third(self: Spool, seq: int, events: list, cursor: dict | None = None) -> Path:
        calls.append(seq)
        if len(calls) == 3:
            raise OSError("killed")
        return real_write(self, seq, events, cursor)

    with monkeypatch.context() as patch:
        patch.setattr(Spool, "write", crash_on_the_third)
        with pytest.raises(OSError):
            run({**environ, "BATCH_SIZE": "10"})
    assert len(spool_of(environ).paths()) == 2  # written, but not committed
    assert run({**environ, "BATCH_SIZE": "10"})
    assert totals(received(backend)) == logged(*lines)


def test_rotation_between_runs_loses_and_doubles_nothing(environ: dict[str, str], backend: FakeBackend) -> None:
    before = listening("sess-1", seconds=10)
    write(environ, *before)
    assert run(environ)
    late = listening("sess-1", start=T0 + 10_000, seconds=4)
    write(environ, *late)
    log = log_path(environ)
    log.rename(log.with_name(log.name + ".1"))
    write(environ, *listening("sess-1", start=T0 + 14_000, seconds=2), rotated=True)  # before nginx reopened
    after = listening("sess-1", start=T0 + 16_000, seconds=10)
    write(environ, *after)
    assert run(environ)
    assert run(environ)
    expected = logged(*before, *late, *listening("sess-1", start=T0 + 14_000, seconds=2), *after)
    assert totals(received(backend)) == expected


def test_large_backlogs_are_committed_in_slices(environ: dict[str, str], backend: FakeBackend,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hls_analytics, "SLICE_BYTES", 4096)
    monkeypatch.setattr(hls_logreader, "BLOCK_BYTES", 1024)
    lines = [text for number in range(40) for text in listening(f"sess-{number}", seconds=4)]
    write(environ, *lines)
    assert run(environ)
    assert totals(received(backend)) == logged(*lines)
    assert len({event["batch"] for event in received(backend)}) > 5


def test_slices_are_measured_in_characters_as_the_decoded_text_was() -> None:
    """The reader hands out bytes; a slice still ends where it did when it handed out text: same slices, same
    events."""
    assert hls_analytics.text_length(b"abc\n") == 4
    assert hls_analytics.text_length("\u00e9\u20ac\n".encode()) == 3
    assert hls_analytics.text_length(b"a\xe2\x82\xff\n") == 4  # a cut sequence and a stray byte: one U+FFFD each


# --- the spool bound and the live listeners file ----------------------------------------------------------

def test_a_full_spool_drops_the_oldest_and_says_so(environ: dict[str, str], backend: FakeBackend,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    backend.set_state(fail="500")
    for minute in range(5):
        write(environ, *listening(f"sess-{minute}", start=T0 + minute * 60_000, seconds=60))
        run({**environ, "SPOOL_MAX_MB": "0.0005"}, now_ms=T0 + (minute + 1) * 60_000)
    assert "DROPPED batch" in caplog.text
    kept = spool_of(environ).paths()
    assert 0 < len(kept) < 5
    live = json.loads(Path(environ["HLS_LISTENERS_FILE"]).read_text())
    assert live["dropped_events_total"] > 0
    assert live["spool"]["batches"] == len(kept)
    backend.set_state(fail=None)
    assert run(environ, now_ms=T0 + 6 * 60_000)
    sessions = {event["anonymous_session_id"] for event in received(backend)}
    assert "sess-4" in sessions and "sess-0" not in sessions


def test_the_live_listeners_file(environ: dict[str, str]) -> None:
    write(environ, *listening("a", seconds=30), *listening("b", seconds=30), *listening("c", slug="other", seconds=30),
          *listening("gone", start=T0 - 120_000, seconds=10))
    assert run(environ, now_ms=T0 + 40_000)
    path = Path(environ["HLS_LISTENERS_FILE"])
    live = json.loads(path.read_text())
    assert live["stations"] == {"other": 1, "radio-joy": 2}
    assert live["total"] == 3
    assert live["window_seconds"] == 60
    assert live["updated_at"] == "2026-11-24T10:00:40Z"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert run(environ, now_ms=T0 + 200_000)  # nobody since: the counts fall to zero
    assert json.loads(path.read_text())["stations"] == {}


def test_the_state_file_is_private(environ: dict[str, str]) -> None:
    write(environ, *listening("a", seconds=2))
    assert run(environ)
    state = Path(environ["HLS_ANALYTICS_STATE_DIR"]) / "state.json"
    assert oct(state.stat().st_mode & 0o777) == "0o600"


# --- main -------------------------------------------------------------------------------------------------

def test_main_exit_status(environ: dict[str, str], backend: FakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    write(environ, *listening("a", seconds=2))
    backend.set_state(fail="500")
    assert hls_analytics.main([]) == 1
    backend.set_state(fail=None)
    assert hls_analytics.main([]) == 0
    monkeypatch.setenv("BATCH_SIZE", "0")
    assert hls_analytics.main([]) == 2
    assert len(received(backend)) == 2


def test_two_forced_rotations_while_a_player_listens(environ: dict[str, str], backend: FakeBackend) -> None:
    """What `logrotate -f` twice does to a player that puts s= on its playlist requests only."""
    log = log_path(environ)
    one, two = log.with_name(log.name + ".1"), log.with_name(log.name + ".2")
    all_lines: list[str] = []
    clock = [T0]

    def play(steps: int, rotated: bool = False) -> None:
        for _ in range(steps):
            lines = [line(s="sess-1", kind="playlist", msec=clock[0]), line(s="", msec=clock[0] + 50)]
            write(environ, *lines, rotated=rotated)
            all_lines.extend(lines)
            clock[0] += 2000

    play(3)
    assert run(environ)
    play(2)
    assert run(environ)                  # prerotate
    log.rename(one)
    play(1, rotated=True)                # nginx has not reopened yet
    play(3)
    assert run(environ)
    play(2)
    assert run(environ)                  # prerotate of the second rotation
    one.rename(two)
    log.rename(one)
    play(1, rotated=True)
    two.unlink()                         # compressed to .2.gz
    play(3)
    assert run(environ)
    assert run(environ)
    expected = Counter()
    for text in all_lines:
        kind = "playlist_request" if ".m3u8" in text else "segment_request"
        expected[("sess-1", "radio-joy", kind)] += 1
    assert totals(received(backend)) == expected


# --- batches the backend refuses for good -----------------------------------------------------------------

@contextmanager
def keeping_control_characters(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The parser as it was before control characters were removed (the pattern matches nothing)."""
    clear = getattr(hls_logparse, "_clean_text", None)  # its cache must not keep what is cleaned inside
    with monkeypatch.context() as patch:
        patch.setattr(hls_logparse, "CONTROL_PATTERN", re.compile("(?!)"), raising=False)
        if clear:
            clear.cache_clear()
        try:
            yield
        finally:
            if clear:
                clear.cache_clear()


def spool_a_batch_with_nul(environ: dict[str, str], backend: FakeBackend, monkeypatch: pytest.MonkeyPatch,
                           lines: list[str]) -> None:
    """What the version before control characters were removed spooled while the backend was down: the NUL of a
    `?ref=%00` in a batch, which PostgreSQL (and the fake backend) refuses whenever it is sent."""
    backend.set_state(fail="500")
    with keeping_control_characters(monkeypatch):
        write(environ, *lines)
        assert not run(environ)
    backend.set_state(fail=None)
    [path] = spool_of(environ).paths()
    assert any("\x00" in (event["referer"] or "") for event in spool_of(environ).read(path).events)


def test_a_batch_refused_for_good_goes_to_the_dead_letters_and_the_rest_flows(
        environ: dict[str, str], backend: FakeBackend, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    poisoned = listening("sess-nul", seconds=4, ref="%00")
    spool_a_batch_with_nul(environ, backend, monkeypatch, poisoned)
    [refused] = spool_of(environ).paths()
    later = listening("sess-2", start=T0 + 10_000, seconds=20)
    write(environ, *later)
    caplog.clear()
    assert run(environ)  # before the fix: False on every run, and nothing behind the batch ever arrived
    assert totals(received(backend)) == logged(*later)
    assert spool_of(environ).paths() == []
    [dead] = dead_letters_of(environ).paths()
    assert dead.name == refused.name
    kept = json.loads(gzip.decompress(dead.read_bytes()))
    assert totals(kept["events"]) == logged(*poisoned)
    assert "NUL" in kept["reason"]
    lines = [record.getMessage() for record in caplog.records if refused.name in record.getMessage()]
    assert len(lines) == 1 and "refused spool batch" in lines[0] and "for good" in lines[0], lines
    assert "NUL (0x00)" in lines[0] and "\n" not in lines[0]
    numbers = live(environ)
    assert numbers["dead_letter"]["batches"] == 1 and numbers["dead_letter"]["bytes"] == dead.stat().st_size
    assert numbers["dead_letter_events_total"] == len(kept["events"])
    sent = len(backend.recorded_requests())
    assert run(environ)  # the refused batch is not tried again
    assert len(backend.recorded_requests()) == sent
    assert live(environ)["dead_letter_events_total"] == len(kept["events"])


def test_a_ref_of_nul_reaches_the_backend_without_it(environ: dict[str, str], backend: FakeBackend) -> None:
    lines = [line(s="sess-1", kind="playlist", ref="%00"), line(s="sess-1", kind="segment", ref="radio%00%01x%7F",
                                                                 msec=T0 + 50, ua="Player\x01\x7f\x85/1")]
    write(environ, *lines)
    assert run(environ)  # before the fix: refused, and the run failed again on every later run
    events = {event["event_type"]: event for event in received(backend)}
    assert events["playlist_request"]["referer"] is None
    assert events["segment_request"]["referer"] == "radiox"
    assert events["segment_request"]["user_agent"] == "Player/1"
    assert dead_letters_of(environ).paths() == []


class Refusing(requests.adapters.HTTPAdapter):
    """A gateway in front of the backend that answers `status` to every batch holding `marker`, and passes
    everything else on."""

    def __init__(self, status: int, marker: str) -> None:
        super().__init__()
        self.status, self.marker = status, marker

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if self.marker.encode() in (request.body or b""):
            response = requests.Response()
            response.status_code, response.url, response.request = self.status, request.url, request
            response._content = b"<html>refused</html>"
            return response
        return super().send(request, *args, **kwargs)


@pytest.mark.parametrize("status", [400, 403, 413, 422])
def test_an_http_4xx_for_one_batch_sends_it_to_the_dead_letters(environ: dict[str, str], backend: FakeBackend,
                                                                status: int) -> None:
    environ = {**environ, "BATCH_SIZE": "2"}
    bad = listening("sess-bad", seconds=2)
    good = listening("sess-good", start=T0 + 10_000, seconds=2)
    write(environ, *bad, *good)
    http = requests.Session()
    http.mount("http://", Refusing(status, "sess-bad"))
    assert run(environ, http=http)
    assert totals(received(backend)) == logged(*good)
    [dead] = dead_letters_of(environ).paths()
    assert f"HTTP {status}" in json.loads(gzip.decompress(dead.read_bytes()))["reason"]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_an_http_status_that_means_not_now_keeps_the_batch(environ: dict[str, str], backend: FakeBackend,
                                                           status: int) -> None:
    bad = listening("sess-bad", seconds=2)
    write(environ, *bad)
    http = requests.Session()
    http.mount("http://", Refusing(status, "sess-bad"))
    assert not run(environ, http=http)
    assert len(spool_of(environ).paths()) == 1 and dead_letters_of(environ).paths() == []
    assert run(environ)
    assert totals(received(backend)) == logged(*bad)
    # A gateway timeout leaves the backend with the batch perhaps processed: its re-send is counted.
    assert live(environ)["resent_batches_total"] == (1 if status == 504 else 0)


def test_the_dead_letters_are_bounded_the_oldest_go_first(environ: dict[str, str], backend: FakeBackend,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    backend.set_state(fail="500")
    with keeping_control_characters(monkeypatch):
        for number in range(4):
            write(environ, *listening(f"sess-{number}", start=T0 + number * 60_000, seconds=10, ref="%00"))
            assert not run(environ, now_ms=T0 + (number + 1) * 60_000)
    names = [path.name for path in spool_of(environ).paths()]
    assert len(names) == 4
    backend.set_state(fail=None)
    # Room for about two and a half batches.
    bound = 2.5 * spool_of(environ).paths()[0].stat().st_size
    assert run({**environ, "DEAD_LETTER_MAX_MB": str(bound / (1 << 20))}, now_ms=T0 + 5 * 60_000)
    kept = [path.name for path in dead_letters_of(environ).paths()]
    assert sum(path.stat().st_size for path in dead_letters_of(environ).paths()) <= bound
    assert kept and kept == names[len(names) - len(kept):]  # the newest
    removed = [record.getMessage() for record in caplog.records if "dead letters over" in record.getMessage()]
    assert len(removed) == len(names) - len(kept) > 0
    assert all(name in text for name, text in zip(names, removed, strict=False))  # the oldest, oldest first
    assert live(environ)["dead_letter_events_total"] == 4 * 2  # all refused: a playlist and a segment event each
    assert received(backend) == []


# --- re-sent batches: sent again after an attempt whose answer was lost -----------------------------------

def test_a_connection_dropped_after_sending_counts_the_re_send(environ: dict[str, str], backend: FakeBackend,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    write(environ, *listening("sess-1", seconds=4))
    backend.set_state(fail="close")
    assert not run(environ)
    assert live(environ)["resent_batches_total"] == 0
    backend.set_state(fail=None)
    assert run(environ)
    assert live(environ)["resent_batches_total"] == 1
    assert "sending spool batch 0000000000000001.json.gz again after a lost answer" in caplog.text


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_backend_that_cannot_be_reached_counts_no_re_send(environ: dict[str, str], backend: FakeBackend) -> None:
    write(environ, *listening("sess-1", seconds=4))
    assert not run({**environ, "GRAPHQL_ENDPOINT": f"http://127.0.0.1:{closed_port()}/graphql"})
    backend.set_state(fail="500")  # the backend said it failed: it did not process the batch
    assert not run(environ)
    backend.set_state(fail=None)
    assert run(environ)
    assert live(environ)["resent_batches_total"] == 0
    assert totals(received(backend)) == logged(*listening("sess-1", seconds=4))


def test_a_re_send_is_counted_once_per_lost_answer(environ: dict[str, str], backend: FakeBackend) -> None:
    """Lost, then a known failure, then lost again, then acknowledged: the backend may hold three copies, two of
    them extra: two re-sends."""
    write(environ, *listening("sess-1", seconds=4))
    for failure in ("close", "500", "close"):
        backend.set_state(fail=failure)
        assert not run(environ)
    backend.set_state(fail=None)
    assert run(environ)
    assert live(environ)["resent_batches_total"] == 2


def test_the_lost_answers_survive_a_restart_of_the_state(environ: dict[str, str], backend: FakeBackend) -> None:
    write(environ, *listening("sess-1", seconds=4))
    backend.set_state(fail="close")
    assert not run(environ)
    state = State.load(Path(environ["HLS_ANALYTICS_STATE_DIR"]) / hls_analytics.STATE_FILE)
    assert state.answer_lost == [1]


def failed_call(cause: BaseException | None) -> BackendError:
    """A BackendError the way execute() raises it: `from None`, the cause kept as the context."""
    try:
        try:
            if cause is not None:
                raise cause
            raise BackendError("no cause")
        except BaseException:
            raise BackendError("failed") from None
    except BackendError as error:
        return error


def answer(status: int, body: bytes = b"") -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body
    return response


@pytest.mark.parametrize(("error", "response", "expected"), [
    (failed_call(requests.ConnectTimeout()), None, (Unavailable, False)),
    (failed_call(requests.ConnectionError(urllib3.exceptions.MaxRetryError(
        None, "/graphql", urllib3.exceptions.NewConnectionError(None, "refused")))), None, (Unavailable, False)),
    (failed_call(requests.ReadTimeout()), None, (Unavailable, True)),
    (failed_call(requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted."))), None,
     (Unavailable, True)),
    (failed_call(None), None, (Unavailable, True)),  # unknown: it may have arrived
    (failed_call(None), answer(500), (Unavailable, False)),
    (failed_call(None), answer(504), (Unavailable, True)),
    (failed_call(None), answer(429), (Unavailable, False)),
    (failed_call(None), answer(408), (Unavailable, False)),
    (failed_call(None), answer(302), (Unavailable, False)),
    (failed_call(None), answer(200, b"<html>a proxy's page</html>"), (Unavailable, False)),
    (failed_call(None), answer(200, b'{"data": null}'), (Unavailable, False)),
    (failed_call(None), answer(200, b'{"data": null, "errors": [{"message": "x"}]}'), (Refused, None)),
    (failed_call(None), answer(400, b'{"errors": [{"message": "Variable $events got invalid value"}]}'),
     (Refused, None)),
    (failed_call(None), answer(404), (Refused, None)),
    (failed_call(None), answer(413), (Refused, None)),
])
def test_classify(error: BackendError, response: requests.Response | None, expected: tuple) -> None:
    kind, lost = expected
    outcome = classify(error, response)
    assert type(outcome) is kind
    if kind is Unavailable:
        assert outcome.answer_lost is lost


# --- the listener's address -------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "expected"), [
    ({"CLOUDFLARE_NETWORKS": "173.245.48.0/20,2400:cb00::/32"}, "203.0.113.8"),
    ({}, "173.245.48.5"),
    # The variable this replaces: proxies are nginx's business now (set_real_ip_from), not the analytics'.
    ({"TRUSTED_PROXIES": "173.245.48.0/20"}, "173.245.48.5"),
])
def test_cf_connecting_ip_is_believed_only_from_the_configured_cloudflare_ranges(
        environ: dict[str, str], backend: FakeBackend, setting: dict[str, str], expected: str) -> None:
    write(environ, line(remote="173.245.48.5", cf_ip="203.0.113.8", forwarded_for="198.51.100.9"))
    assert run({**environ, **setting})
    [event] = received(backend)
    assert event["ip_address"] == expected
