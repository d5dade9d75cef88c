"""A backlog's slices committed in two worker processes (radio_hls/analytics/run.py, Committer): the same spool,
state and counters as one process makes, on lines made to catch a wrong hand-over between slices."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from loglines import T0, line, listening

from radio_hls.analytics import logreader as hls_logreader
from radio_hls.analytics import run as hls_analytics
from radio_hls.analytics.run import Analytics, Config
from radio_hls.analytics.spool import Spool

MINUTE = 60_000
KEYS = {str(day): f"{day:064x}" for day in range(T0 // 86_400_000 - 1, T0 // 86_400_000 + 2)}


def backlog() -> list[str]:
    """Sessions that run across many slices: segments without s= joining their playlist's session (on the same
    and on another station), two sessions behind one address and agent (ambiguous), a client that never sends
    s= and comes back after the timeout, Cloudflare's header, requests of several sessions at the same
    millisecond (ties in the events' order) and lines no event comes of."""
    lines: list[str] = []
    for step in range(40):
        now = T0 + step * 2000
        lines.append(line(s="sess-a", kind="playlist", msec=now))
        lines.append(line(s="", kind="segment", msec=now + 50))
        lines.append(line(s="sess-b", kind="playlist", msec=now, remote="198.51.100.4", slug="radio-two"))
        lines.append(line(s="sess-c", kind="playlist", msec=now, remote="198.51.100.4", slug="radio-two"))
        lines.append(line(s="", kind="segment", msec=now, remote="198.51.100.4", slug="radio-two"))
        lines.append(line(s="", kind="segment", msec=now + 7, remote="192.0.2.9", ua="VLC/3.0.20"))
        lines.append(line(s="sess-d", kind="segment", msec=now + 7, remote="10.1.2.3", peer="173.245.48.1",
                          cf_ip="2001:db8::1", seconds=0.1 * (step % 3)))
        if step % 9 == 0:
            lines.append(line(s="x" * 200, kind="playlist", msec=now))
            lines.append(line(s="sess-a", kind="playlist", msec=now, status=404))
            lines.append("not\ta\tsession\tlog\tline\n")
    lines += listening("sess-a", start=T0 + 90 * MINUTE // 10, seconds=6, segment=1)  # after a gap
    lines.append(line(s="", kind="segment", msec=T0 + 20 * MINUTE, remote="192.0.2.9", ua="VLC/3.0.20"))
    return lines


def outcome(tmp_path: Path, name: str, lines: list[str]) -> dict[str, Any]:
    """Analytics.read of the log into a state directory of its own: everything it wrote and counted."""
    state_dir = tmp_path / name
    state_dir.mkdir()
    (state_dir / "state.json").write_text(json.dumps({"files": None, "spool_seq": 0, "sessions": {"keys": KEYS}}))
    log = tmp_path / "hls-access.log"
    if not log.exists():
        log.write_text("".join(lines))
    analytics = Analytics(Config.from_env({
        "HLS_ANALYTICS_STATE_DIR": str(state_dir), "HLS_ACCESS_LOG": str(log),
        "HLS_LISTENERS_FILE": str(state_dir / "listeners.json"), "GRAPHQL_ENDPOINT": "http://127.0.0.1:9/graphql",
        "BATCH_SIZE": "3", "CLOUDFLARE_NETWORKS": "173.245.48.0/20"}))
    analytics.read()
    spool = Spool(state_dir / "spool", 1 << 30)
    return {"batches": [json.loads(gzip.decompress(path.read_bytes())) for path in spool.paths()],
            "state": json.loads((state_dir / "state.json").read_text()), "summary": analytics.summary,
            "counts": analytics.counts, "lines": analytics.lines_read, "ambiguous": analytics.sessions.ambiguous,
            "sessions": analytics.sessions.state()}


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The child processes the run forks (counted in the run's process)."""
    forked: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counting_fork)
    return forked


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hls_analytics, "SLICE_BYTES", 2048)
    monkeypatch.setattr(hls_logreader, "BLOCK_BYTES", 512)
    monkeypatch.setattr(hls_analytics, "spare_core", lambda: True)  # (whatever else this machine runs)


@pytest.mark.usefixtures("small_slices")
def test_slices_committed_in_worker_processes_make_what_one_process_makes(
        tmp_path: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    lines = backlog()
    monkeypatch.setattr(hls_analytics, "COMMIT_IN_WORKERS", False)
    alone = outcome(tmp_path, "one-process", lines)
    assert not forks
    monkeypatch.setattr(hls_analytics, "COMMIT_IN_WORKERS", True)
    in_workers = outcome(tmp_path, "workers", lines)
    assert len(forks) == 2
    assert in_workers == alone
    assert len(alone["state"]["files"]) == 1
    assert len(alone["batches"]) > 20  # (BATCH_SIZE 3) and more than 20 slices:
    assert len({batch["cursor"]["files"][0]["offset"] for batch in alone["batches"] if batch["cursor"]}) > 20
    # What the lines were made to test is in there:
    assert alone["ambiguous"] > 0
    assert len({event["anonymous_session_id"] for batch in alone["batches"] for event in batch["events"]}) > 5
    assert alone["counts"]["malformed"] > 0


def test_a_run_of_less_than_a_slice_stays_in_one_process(tmp_path: Path, forks: list[int]) -> None:
    outcome(tmp_path, "small", backlog())
    assert not forks


@pytest.mark.usefixtures("small_slices")
def test_a_failed_commit_in_a_worker_stops_the_later_ones_and_the_run(tmp_path: Path, forks: list[int],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    lines = backlog()
    alone = outcome(tmp_path, "one-process", lines)
    real_write = Spool.write

    def full_disk(self: Spool, seq: int, events: list[dict[str, Any]], cursor: dict[str, Any] | None = None) -> Path:
        if seq == 7:
            raise OSError(28, "No space left on device")
        return real_write(self, seq, events, cursor)

    monkeypatch.setattr(Spool, "write", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        outcome(tmp_path, "failing", lines)
    assert forks
    state = json.loads((tmp_path / "failing" / "state.json").read_text())
    committed = [batch for batch in alone["batches"] if batch["seq"] <= state["spool_seq"]]
    assert committed[-1]["cursor"] == {"files": state["files"], "spool_seq": state["spool_seq"]}
    assert state["spool_seq"] < 7
    spooled = [path.name for path in Spool(tmp_path / "failing" / "spool", 1 << 30).paths()]
    assert len(spooled) <= 6  # nothing of the later slices


@pytest.mark.usefixtures("small_slices")
def test_no_spare_core_commits_in_one_process(tmp_path: Path, forks: list[int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hls_analytics, "spare_core", lambda: False)
    outcome(tmp_path, "busy", backlog())
    assert not forks


@pytest.mark.parametrize(("cores", "load", "spare"), [(1, 0.0, False), (2, 0.5, True), (2, 1.0, True),
                                                      (2, 1.5, False), (8, 6.9, True), (8, 7.5, False)])
def test_a_spare_core_is_one_the_load_leaves_free(monkeypatch: pytest.MonkeyPatch, cores: int, load: float,
                                                  spare: bool) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert hls_analytics.spare_core() is spare


@pytest.mark.usefixtures("small_slices")
def test_a_worker_killed_in_a_commit_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_pid = os.getpid()
    real_commit = Analytics.commit_prepared

    def killed_in_the_second(self: Analytics, *args: Any) -> None:
        if os.getpid() != run_pid and self.state.spool_seq > 0:
            os._exit(9)  # (as by the OOM killer: no error handed on)
        real_commit(self, *args)

    monkeypatch.setattr(Analytics, "commit_prepared", killed_in_the_second)
    with pytest.raises(OSError):  # ("ended without handing over", or a broken pipe if the run was still sending)
        outcome(tmp_path, "killed", backlog())
    state = json.loads((tmp_path / "killed" / "state.json").read_text())
    assert state["spool_seq"] > 0  # the first slice's commit, and none after it
    spool = Spool(tmp_path / "killed" / "spool", 1 << 30)
    [batch] = [batch for batch in map(spool.read, spool.paths()) if batch.cursor]
    assert batch.cursor == {"files": state["files"], "spool_seq": state["spool_seq"]}
