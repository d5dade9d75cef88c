"""hls-analytics: the nginx session log's new lines -> submit_listening_events, at least once.

Run by hls-analytics.timer every BATCH_INTERVAL_SECONDS. Each run:
1. reads the log's new complete lines from the saved positions, across rotation (logreader);
2. turns them into events, one per session, station, type and BATCH_INTERVAL_SECONDS window (logparse,
   sessions), in slices of at most SLICE_BYTES of log;
3. writes each slice's events to the spool in batches of BATCH_SIZE (spool), the last batch carrying the
   read positions after the slice, and only then saves the positions in its state file. A run that dies in
   between is finished by the next one: batches with positions are kept and their positions adopted,
   batches without are removed (their lines are read again). A run of more than one slice (a backlog) on a host
   with a core to spare has two worker processes take turns, one parsing a slice while the other commits the
   one before, the commits still one after the other (Committer);
4. sends the spooled batches oldest first, deleting each once the backend acknowledged it. A batch the backend
   refuses for good (it answers, says no, and accepts an empty batch right after) goes to the dead letters and
   the next one is sent; any other failure stops the sending until the next run (exit status 1). A batch whose
   answer was lost (a timeout or a dropped connection after it was sent) may have been processed: sending it
   again is counted as a re-send (the contract has no idempotency key);
5. writes the live listeners file (sessions seen in the last 60 s per station, spool, dead letters, counters)
   and one summary line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import requests
import urllib3

from radio_hls.analytics.logparse import CONTROL_CHARACTERS, COUNTERS, Aggregator, Networks, no_gc
from radio_hls.analytics.logreader import LogReader, Position
from radio_hls.analytics.sessions import LIVE_WINDOW_MS, Prepared, Sessions, prepare
from radio_hls.analytics.spool import Batch, Spool
from radio_hls.common import clock, logs
from radio_hls.common.contract import setting
from radio_hls.common.files import write_atomically
from radio_hls.common.graphql import BackendError, execute

MUTATION = """mutation SubmitListeningEvents($events: [ListeningEventInput!]!) {
  submit_listening_events(events: $events) {
    ... on SubmitListeningEventsResponse { success processed_count message }
    ... on OperationInfo { messages { kind message field code } }
  }
}"""
SLICE_BYTES = 16 << 20
# Full slices committed by two forked worker processes (Committer) when a core is spare; False: every slice in the
# run's own process.
COMMIT_IN_WORKERS = True
PIPE_BYTES = 1 << 20  # a slice fills a pipe 16 times instead of 256 (each a wake-up of both ends)
SEND_BUDGET_SECONDS = 120.0
STATE_FILE = "state.json"
DEAD_LETTER_DIR = "dead-letter"
# Answers that say "not now" rather than "never": timeouts, rate limits, server errors.
TRANSIENT_STATUS = (408, 429)
# A gateway that gave up waiting: the backend may still process what it was sent.
GATEWAY_TIMEOUT = 504

log = logging.getLogger("hls-analytics")


def env_bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Config:
    endpoint: str
    api_key: str
    bearer: bool
    timeout: float
    access_log: Path
    state_dir: Path
    listeners_file: Path
    interval_seconds: int
    batch_size: int
    session_timeout_minutes: float
    spool_max_bytes: int
    dead_letter_max_bytes: int
    cloudflare_networks: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """analytics.env's settings and the unit's StateDirectory=; BadSetting for a missing path, ValueError for a
        number that is not one."""
        # HLS_ANALYTICS_STATE_DIR: a run by hand (or a test) on another directory than the unit's.
        state_dir = Path(environ.get("HLS_ANALYTICS_STATE_DIR") or setting(environ, "STATE_DIRECTORY"))
        spool_max_bytes = int(float(environ.get("SPOOL_MAX_MB") or 256) * (1 << 20))
        config = cls(
            endpoint=environ.get("GRAPHQL_ENDPOINT", "").strip(),
            api_key=environ.get("STREAMING_API_KEY", "").strip(),
            bearer=env_bool(environ.get("GRAPHQL_BEARER_AUTH")),
            timeout=float(environ.get("GRAPHQL_TIMEOUT_SECONDS") or 20),
            access_log=Path(setting(environ, "HLS_ACCESS_LOG")),
            state_dir=state_dir,
            listeners_file=Path(setting(environ, "HLS_LISTENERS_FILE")),
            interval_seconds=int(environ.get("BATCH_INTERVAL_SECONDS") or 10),
            batch_size=int(environ.get("BATCH_SIZE") or 500),
            session_timeout_minutes=float(environ.get("SESSION_TIMEOUT_MINUTES") or 5),
            spool_max_bytes=spool_max_bytes,
            # Dead letters are kept for an operator to look at, not to be sent: an eighth of the spool's bound.
            dead_letter_max_bytes=int(float(environ.get("DEAD_LETTER_MAX_MB") or 0) * (1 << 20))
            or spool_max_bytes // 8,
            cloudflare_networks=environ.get("CLOUDFLARE_NETWORKS", ""),
        )
        if config.interval_seconds < 1 or config.batch_size < 1 or config.session_timeout_minutes <= 0:
            raise ValueError("BATCH_INTERVAL_SECONDS, BATCH_SIZE and SESSION_TIMEOUT_MINUTES must be positive")
        return config

    def headers(self) -> dict[str, str]:
        headers = {"X-Streaming-Api-Key": self.api_key} if self.api_key else {}
        if self.bearer and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass
class State:
    """What the next run needs: read positions (None: never read), the last spooled batch, sessions."""

    files: list[Position] | None = None
    spool_seq: int = 0
    sessions: dict[str, Any] = field(default_factory=dict)
    dropped_events: int = 0  # dropped because the spool was full, ever
    dead_letter_events: int = 0  # refused for good by the backend, ever
    resent_batches: int = 0  # sent again after an attempt whose answer was lost, ever
    answer_lost: list[int] = field(default_factory=list)  # spool seqs whose last attempt's answer was lost

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        files = raw.get("files")
        return cls(files=None if files is None else [Position.from_json(item) for item in files],
                   spool_seq=int(raw.get("spool_seq", 0)), sessions=raw.get("sessions") or {},
                   dropped_events=int(raw.get("dropped_events", 0)),
                   dead_letter_events=int(raw.get("dead_letter_events", 0)),
                   resent_batches=int(raw.get("resent_batches", 0)),
                   answer_lost=[int(seq) for seq in raw.get("answer_lost") or []])

    def save(self, path: Path) -> None:
        body = {"files": None if self.files is None else [position.to_json() for position in self.files],
                "spool_seq": self.spool_seq, "sessions": self.sessions, "dropped_events": self.dropped_events,
                "dead_letter_events": self.dead_letter_events, "resent_batches": self.resent_batches,
                "answer_lost": self.answer_lost}
        write_atomically(path, json.dumps(body, separators=(",", ":")), mode=0o600)

    def cursor(self) -> dict[str, Any]:
        return {"files": [position.to_json() for position in self.files or []], "spool_seq": self.spool_seq}


class Refused(BackendError):
    """The backend answered and said no to the batch: an HTTP 4xx other than 408/429, GraphQL errors (a
    validation error, a resolver that raised), an OperationInfo, success=false. Whether it says no to this
    batch only or to every batch (a wrong key) is for Analytics.send() to find out."""


class Unavailable(BackendError):
    """No usable answer: unreachable, a timeout, 408, 429, 5xx, a redirect, a body that is not GraphQL.

    `answer_lost`: the batch had been sent when the answer failed to come (a timeout or a connection dropped
    after sending, a gateway timeout), so the backend may have processed it."""

    def __init__(self, message: str, answer_lost: bool) -> None:
        super().__init__(message)
        self.answer_lost = answer_lost


# Control characters as \xNN in journal lines: a backend's message cannot forge a line or colour a terminal.
PRINTABLE = {code: f"\\x{code:02x}" for code in CONTROL_CHARACTERS}


def printable(text: str) -> str:
    return text.translate(PRINTABLE)


def never_sent(error: BaseException | None) -> bool:
    """Whether a call that got no answer failed before its request left: the connection was never made.
    Anything else (a read timeout, a connection closed while waiting, an unknown cause) may have reached the
    backend."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    if isinstance(error, requests.ConnectionError) and error.args:
        reason = getattr(error.args[0], "reason", None)
        return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))
    return False


def has_graphql_errors(response: requests.Response) -> bool:
    try:
        payload = response.json()
    except ValueError:
        return False
    return isinstance(payload, dict) and bool(payload.get("errors"))


def classify(error: BackendError, response: requests.Response | None) -> Refused | Unavailable:
    """What a failed call came to, from its last HTTP answer (None: there was none) and execute()'s error."""
    message = str(error)
    if response is None:
        return Unavailable(message, answer_lost=not never_sent(error.__cause__ or error.__context__))
    status = response.status_code
    if 400 <= status < 500 and status not in TRANSIENT_STATUS:
        return Refused(message)
    if 200 <= status < 300 and has_graphql_errors(response):
        return Refused(message)
    return Unavailable(message, answer_lost=status == GATEWAY_TIMEOUT)


def recover(state: State, spool: Spool) -> None:
    """Finish the commit of a run that died between its spool writes and its state save."""
    newer = [path for path in spool.paths() if spool.seq_of(path) > state.spool_seq]
    for path in reversed(newer):
        try:
            batch = spool.read(path)
        except (OSError, ValueError, EOFError):
            continue
        if batch.cursor is not None:
            state.files = [Position.from_json(item) for item in batch.cursor["files"]]
            state.spool_seq = batch.seq
            log.warning("adopted the read positions of spool batch %s (the last run stopped before saving them)",
                        path.name)
            break
    removed = spool.discard_after(state.spool_seq)
    if removed:
        log.warning("removed %d spool batch(es) of an unfinished run; their lines are read again", len(removed))


def text_length(block: bytes) -> int:
    """A block's length as decoded text: slices were measured so when the reader decoded, and the same slices
    make the same events."""
    return len(block) if block.isascii() else len(block.decode("utf-8", "replace"))


class Analytics:
    def __init__(self, config: Config, now: Callable[[], float] = time.time,
                 http: requests.Session | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.now = now
        self.monotonic = monotonic  # the clock of the send budget
        self.http = http or requests.Session()
        # execute() turns every failure into one BackendError; the last answer tells a refusal from an outage.
        self.answer: requests.Response | None = None
        self.http.hooks["response"].append(self._record_answer)
        self.state_path = config.state_dir / STATE_FILE
        self.spool = Spool(config.state_dir / "spool", config.spool_max_bytes)
        self.dead_letters = Spool(config.state_dir / DEAD_LETTER_DIR, config.dead_letter_max_bytes)
        self.cloudflare = Networks.parse(config.cloudflare_networks)
        self.state = State.load(self.state_path)
        self.sessions = Sessions(self.state.sessions, config.session_timeout_minutes)
        self.stopping = False
        self.summary: dict[str, int] = {"spooled_events": 0, "spooled_batches": 0, "sent_events": 0,
                                        "sent_batches": 0, "unsent_events": 0, "dead_letter_batches": 0,
                                        "dead_letter_events": 0, "resent_batches": 0}
        self.counts: dict[str, int] = {}
        self.lines_read = 0
        self.live: dict[str, Any] = {}  # what the last finish() wrote to the listeners file

    # --- read, aggregate, spool, commit -------------------------------------------------------------------

    def read(self) -> None:
        recover(self.state, self.spool)
        reader = LogReader(self.config.access_log, self.state.files)
        committer = Committer(self)
        blocks: list[bytes] = []
        pending = 0
        try:
            # No cycle collection while reading: each one would scan every aggregate and event made so far, none of
            # which is in a cycle (once the collector runs again, it scans what is still alive once).
            with no_gc():
                for block in reader:
                    blocks.append(block)
                    pending += text_length(block)
                    if pending >= SLICE_BYTES:
                        committer.commit(blocks, reader.positions())
                        blocks, pending = [], 0
                        if self.stopping:
                            break
            committer.finish()
        finally:
            committer.wait()
        for warning in reader.warnings:
            log.warning("%s", warning)
        with no_gc():
            self.commit(blocks, reader.positions())
        self.lines_read = sum(self.counts[name] for name in COUNTERS)

    def parse(self, blocks: list[bytes]) -> tuple[Prepared, dict[str, int]]:
        """A slice's events as far as they need no session state (sessions.prepare), and its counters."""
        aggregator = Aggregator(window_seconds=self.config.interval_seconds)
        for block in blocks:
            aggregator.feed(block)
        return prepare(aggregator, self.cloudflare), aggregator.counts

    def commit(self, blocks: list[bytes], positions: list[Position]) -> None:
        self.commit_prepared(*self.parse(blocks), positions)

    def commit_prepared(self, prepared: Prepared, counts: dict[str, int], positions: list[Position]) -> None:
        for name, count in counts.items():
            self.counts[name] = self.counts.get(name, 0) + count
        events = self.sessions.assign_prepared(prepared)
        self.state.files = positions
        if events and not self.config.endpoint:
            self.summary["unsent_events"] += len(events)
        elif events:
            size = self.config.batch_size
            chunks = [events[index:index + size] for index in range(0, len(events), size)]
            for number, chunk in enumerate(chunks, start=1):
                self.state.spool_seq += 1
                cursor = self.state.cursor() if number == len(chunks) else None
                self.spool.write(self.state.spool_seq, chunk, cursor)
            self.summary["spooled_events"] += len(events)
            self.summary["spooled_batches"] += len(chunks)
        self.state.sessions = self.sessions.state()
        self.state.save(self.state_path)

    def handover(self) -> tuple[State, dict[str, int], dict[str, int], dict[str, Any], int]:
        """What commits change and the next commit needs: small (sessions, not aggregates), to pass between
        processes."""
        return self.state, self.summary, self.counts, self.sessions.state(), self.sessions.ambiguous

    def adopt(self, handed: tuple[State, dict[str, int], dict[str, int], dict[str, Any], int]) -> None:
        self.state, self.summary, self.counts, sessions, ambiguous = handed
        self.sessions = Sessions(sessions, self.config.session_timeout_minutes)
        self.sessions.ambiguous = ambiguous

    # --- send ---------------------------------------------------------------------------------------------

    def _record_answer(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        self.answer = response

    def submit(self, events: list[dict[str, Any]]) -> None:
        """Send one batch; return only when the backend acknowledged it, else raise Refused or Unavailable."""
        self.answer = None
        try:
            data = execute(self.config.endpoint, MUTATION, {"events": events}, headers=self.config.headers(),
                           timeout=self.config.timeout, session=self.http)
        except BackendError as error:
            raise classify(error, self.answer) from error
        result = data.get("submit_listening_events")
        if not isinstance(result, dict):
            raise Refused("the answer has no submit_listening_events result")
        if "messages" in result:
            messages = "; ".join(str(message.get("message")) for message in result.get("messages") or []
                                 if isinstance(message, dict))
            raise Refused(f"the backend refused the batch: {messages or 'OperationInfo'}")
        if result.get("success") is not True:
            raise Refused(f"the backend answered success=false: {result.get('message')}")
        if result.get("processed_count") != len(events):
            log.warning("the backend processed %s of %d events (it skips stations it does not know)",
                        result.get("processed_count"), len(events))

    def submit_batch(self, batch: Batch) -> None:
        """submit() a spooled batch, keeping count of lost answers: sending a batch again after one is a re-send,
        which the backend may receive as a second copy."""
        if batch.seq in self.state.answer_lost:
            self.state.answer_lost.remove(batch.seq)
            self.state.resent_batches += 1
            self.summary["resent_batches"] += 1
            log.warning("sending spool batch %s again after a lost answer: the backend may now have it twice",
                        batch.path.name)
        try:
            self.submit(batch.events)
        except Unavailable as error:
            if error.answer_lost:
                self.state.answer_lost.append(batch.seq)
                self.state.save(self.state_path)
            raise

    def refusal_is_the_batchs(self) -> bool:
        """Whether the backend accepts an empty batch right after refusing one: then the refusal was about that
        batch's content. Otherwise it refuses everything (a wrong key, missing rights, a broken backend), which
        waits for a fix like an outage."""
        try:
            self.submit([])
        except BackendError:
            return False
        return True

    def dead_letter(self, batch: Batch, error: BackendError) -> None:
        kept = self.spool.move_to_dead_letters(batch, self.dead_letters, reason=str(error))
        self.state.dead_letter_events += len(batch.events)
        self.state.answer_lost = [seq for seq in self.state.answer_lost if seq != batch.seq]
        self.state.save(self.state_path)
        self.summary["dead_letter_batches"] += 1
        self.summary["dead_letter_events"] += len(batch.events)
        log.error("the backend refused spool batch %s for good, its %d events are moved to %s (the backend accepts "
                  "other batches; sending goes on): %s", batch.path.name, len(batch.events), kept,
                  printable(str(error)))

    def send(self) -> bool:
        """Send the spool oldest first; False when the backend failed (what is left waits for the next run)."""
        if not self.config.endpoint:
            return True
        deadline = self.monotonic() + SEND_BUDGET_SECONDS
        for path in self.spool.paths():
            if self.stopping or self.monotonic() > deadline:
                break
            try:
                batch = self.spool.read(path)
            except (OSError, ValueError, EOFError) as error:
                self.spool.quarantine(path, error)
                continue
            try:
                self.submit_batch(batch)
            except Refused as error:
                if self.refusal_is_the_batchs():
                    self.dead_letter(batch, error)
                    continue
                self.log_unavailable(f"{error} (an empty batch is refused as well)")
                return False
            except Unavailable as error:
                self.log_unavailable(str(error))
                return False
            self.spool.delete(path)
            self.summary["sent_batches"] += 1
            self.summary["sent_events"] += len(batch.events)
        return True

    def log_unavailable(self, reason: str) -> None:
        log.error("backend unavailable, %d batch(es) kept in the spool for the next run: %s",
                  len(self.spool.paths()), printable(reason))

    # --- after --------------------------------------------------------------------------------------------

    def finish(self) -> None:
        dropped = self.spool.drop_oldest_over_limit()
        self.state.dropped_events += dropped
        now_ms = int(self.now() * 1000)
        self.sessions.prune(now_ms)
        self.state.sessions = self.sessions.state()
        stations = self.sessions.listeners(now_ms)
        spooled = set(map(self.spool.seq_of, self.spool.paths()))
        self.state.answer_lost = [seq for seq in self.state.answer_lost if seq in spooled]
        self.state.save(self.state_path)
        batches, size = self.spool.size()
        dead_batches, dead_size = self.dead_letters.size()
        self.live = {
            "updated_at": clock.iso_z(now_ms / 1000),
            "window_seconds": LIVE_WINDOW_MS // 1000,
            "stations": stations,
            "total": sum(stations.values()),
            "spool": {"batches": batches, "bytes": size},
            "dropped_events_total": self.state.dropped_events,
            "dead_letter": {"batches": dead_batches, "bytes": dead_size},
            "dead_letter_events_total": self.state.dead_letter_events,
            "resent_batches_total": self.state.resent_batches,
        }
        write_atomically(self.config.listeners_file, json.dumps(self.live, indent=2) + "\n", mode=0o644)

    def log_summary(self) -> None:
        counts = self.counts
        ignored = ", ".join(f"{counts.get(name, 0)} {label}" for name, label in (
            ("not_hls", "not /hls/"), ("not_media", "not playlist or segment"), ("method", "not GET"),
            ("status", "error status"), ("malformed", "malformed")))
        s = self.summary
        extra = ""
        if s["unsent_events"]:
            extra += f", not sent (no GRAPHQL_ENDPOINT) {s['unsent_events']} events"
        if s["resent_batches"]:
            extra += f", {s['resent_batches']} of those batches again after a lost answer"
        if s["dead_letter_batches"]:
            extra += f", refused for good {s['dead_letter_events']} events in {s['dead_letter_batches']} batches"
        if self.sessions.ambiguous:
            extra += f"; {self.sessions.ambiguous} requests without s= from an address and agent several " \
                     "sessions share kept apart"
        log.info("read %d lines: %d listening requests (%d with an invalid s=), ignored %s; spooled %d events "
                 "in %d batches, sent %d events in %d batches%s; spool: %d batches; listeners: %s",
                 self.lines_read,
                 counts.get("events", 0), counts.get("invalid_session_id", 0), ignored, s["spooled_events"],
                 s["spooled_batches"], s["sent_events"], s["sent_batches"], extra,
                 self.live["spool"]["batches"], self.live["stations"] or "none")

    def run(self) -> bool:
        self.read()
        ok = self.send()
        self.finish()
        self.log_summary()
        return ok


class Committer:
    """Commits the full slices of a backlog in two forked worker processes, taking turns: while one commits its
    slice (sessions, events, spool, state), the other parses the next (parsing and committing take about as long,
    so two cores do a backlog in about half the time). The run's process only reads the log and hands each full
    slice's bytes to a worker through a pipe; a worker makes every object of its slice itself (an object made
    before a fork and touched after it costs a copy of its memory page) and keeps its memory from slice to slice
    (a process forked per slice spent about a second of a million lines faulting its fresh pages in).

    The commits stay one after the other, in order: a worker waits for the other to hand over what it committed
    (Analytics.handover: state, counters, sessions, all small), commits, and hands over in turn; at the end the
    worker holding the last hand-over passes it to the run, which commits the rest itself. A run that reads
    less than a slice (the timer's usual run) never forks.

    A worker that fails hands its error on: no later slice is committed (its lines are read again by the next
    run, as after a failed commit in one process) and the run raises it."""

    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics
        self.pids: list[int] = []
        self.inboxes: list[IO[bytes]] = []  # the run -> each worker: slices, then ("last",) and ("end",)
        self.results: IO[bytes] | None = None  # the last hand-over -> the run
        self.slices = 0
        self.in_workers: bool | None = None  # decided at the first full slice

    def commit(self, blocks: list[bytes], positions: list[Position]) -> None:
        if self.in_workers is None:
            self.in_workers = COMMIT_IN_WORKERS and spare_core()
            if self.in_workers:
                self._start()
        if not self.in_workers:
            self.analytics.commit(blocks, positions)
            return
        send(self.inboxes[self.slices % 2], ("slice", blocks, positions))
        self.slices += 1

    def _start(self) -> None:
        inboxes = [pipe() for _ in range(2)]
        handovers = [pipe() for _ in range(2)]  # [0]: worker 0 -> worker 1, [1]: worker 1 -> worker 0
        results = pipe()
        every = {fd for pair in (*inboxes, *handovers, results) for fd in pair}
        for index in range(2):
            own = (inboxes[index][0], handovers[1 - index][0], handovers[index][1], results[1])
            pid = os.fork()
            if pid == 0:
                for fd in every - set(own):
                    os.close(fd)
                self._work(index, *own)
            self.pids.append(pid)
        for fd in every - {inboxes[0][1], inboxes[1][1], results[0]}:
            os.close(fd)
        self.inboxes = [os.fdopen(write_end, "wb") for _, write_end in inboxes]
        self.results = os.fdopen(results[0], "rb")

    def _work(self, index: int, inbox: int, handed: int, handing: int, result: int) -> NoReturn:
        status = 1
        try:  # whatever happens, the worker ends here: it must never go on with the run's code
            with os.fdopen(inbox, "rb") as slices, os.fdopen(handed, "rb") as from_peer, \
                    os.fdopen(handing, "wb") as to_peer, os.fdopen(result, "wb") as to_run:
                # Worker 0 commits the first slice on the state it was forked with; every other commit waits.
                outcome: tuple[Any, ...] | None = ("ok", None) if index == 0 else None
                writer: threading.Thread | None = None
                while (message := pickle.load(slices))[0] != "end":
                    if message[0] == "last":
                        send(to_run, pickle.load(from_peer))
                        continue
                    _, blocks, positions = message
                    try:
                        parsed: tuple[Prepared, dict[str, int]] | Exception = self.analytics.parse(blocks)
                    except Exception as error:  # noqa: BLE001 (handed on, after the hand-over it waits for)
                        parsed = error
                    outcome = outcome or pickle.load(from_peer)
                    outcome = self._commit(outcome, parsed, positions)
                    # Handed over by a thread: the other worker reads it only once it has its next slice, which
                    # the run may be waiting to give it until this worker reads its own next one.
                    if writer is not None:
                        writer.join()
                    writer = threading.Thread(target=send, args=(to_peer, outcome))
                    writer.start()
                    outcome = None
                if writer is not None:
                    writer.join()
            status = 0
        finally:
            os._exit(status)

    def _commit(self, handed: tuple[Any, ...], parsed: tuple[Prepared, dict[str, int]] | Exception,
                positions: list[Position]) -> tuple[Any, ...]:
        """Commit a parsed slice after the hand-over of the slice before; what to hand over in turn."""
        if handed[0] != "ok":
            return handed
        try:
            if isinstance(parsed, Exception):
                raise parsed
            if handed[1] is not None:
                self.analytics.adopt(handed[1])
            self.analytics.commit_prepared(*parsed, positions)
        except Exception as error:  # noqa: BLE001 (handed to the run, which raises it)
            return ("failed", isinstance(error, OSError), f"{type(error).__name__}: {error}")
        return ("ok", self.analytics.handover())

    def finish(self) -> None:
        """Take over what the last commit made; raise a worker's error."""
        if not self.pids or self.results is None:
            return
        send(self.inboxes[self.slices % 2], ("last",))  # the worker the last commit was handed to
        for inbox in self.inboxes:
            send(inbox, ("end",))
        try:
            outcome: tuple[Any, ...] = pickle.load(self.results)  # noqa: S301 (from our own fork, through a pipe)
        except EOFError:
            outcome = ("failed", True, "a worker process ended without handing over its commit")
        if outcome[0] != "ok":
            _, is_os_error, message = outcome
            raise (OSError if is_os_error else RuntimeError)(f"committing a slice in a worker process: {message}")
        self.analytics.adopt(outcome[1])

    def wait(self) -> None:
        """Close the pipes (a worker still waiting for a slice ends) and wait for the workers."""
        for handle in (*self.inboxes, *([self.results] if self.results else [])):
            try:
                handle.close()
            except OSError:  # a worker that died leaves a pipe without a reader
                pass
        for pid in self.pids:
            os.waitpid(pid, 0)
        self.pids, self.inboxes, self.results = [], [], None


def spare_core() -> bool:
    """Whether the host has a core the run's work does not take from others: at least two, and a load average
    that leaves one free. On a host whose stations take every core, two workers are slower than one process:
    each waits, slice after slice, for the other to be given a core and hand over."""
    cores = os.cpu_count() or 1
    return cores >= 2 and os.getloadavg()[0] <= cores - 1


def pipe() -> tuple[int, int]:
    """A pipe that holds a slice's hand-over in few writes."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # (a limit lower than PIPE_BYTES: the default size does, more slowly)
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return read_end, write_end


def send(handle: IO[bytes], message: tuple[Any, ...]) -> None:
    pickle.dump(message, handle, protocol=pickle.HIGHEST_PROTOCOL)
    handle.flush()


def locked(state_dir: Path) -> IO[str]:
    """Hold the state directory's lock: runs never overlap (the timer, logrotate's prerotate, a manual run)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = open(state_dir / ".lock", "a")  # noqa: SIM115 (held until the process ends)
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    logs.setup()
    try:
        config = Config.from_env(os.environ)
    except ValueError as error:
        log.error("bad configuration: %s", error)
        return 2
    lock = locked(config.state_dir)
    analytics = Analytics(config)

    def stop(_signum: int, _frame: Any) -> None:
        analytics.stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        return 0 if analytics.run() else 1
    except OSError as error:
        log.error("run failed, nothing is lost (the next run starts from the last saved position): %s", error)
        return 1
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
