"""Tests of radio_hls/analytics/spool.py: atomic batches in order, the size bound, unreadable batches."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from radio_hls.analytics.spool import Spool

EVENT = {"anonymous_session_id": "s", "station_slug": "radio-joy", "event_type": "segment_request"}


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", max_bytes=1 << 20)


def test_batches_round_trip_in_sequence_order(spool: Spool) -> None:
    for seq in (3, 1, 12, 2):
        spool.write(seq, [{**EVENT, "n": seq}], cursor={"spool_seq": seq} if seq == 12 else None)
    assert [spool.seq_of(path) for path in spool.paths()] == [1, 2, 3, 12]
    batches = [spool.read(path) for path in spool.paths()]
    assert [batch.events[0]["n"] for batch in batches] == [1, 2, 3, 12]
    assert [batch.cursor for batch in batches] == [None, None, None, {"spool_seq": 12}]
    assert spool.last_seq() == 12


def test_write_leaves_no_temporary_file_and_is_private(spool: Spool) -> None:
    spool.write(1, [EVENT])
    assert [path.name for path in spool.directory.iterdir()] == ["0000000000000001.json.gz"]
    assert oct(spool.directory.stat().st_mode & 0o777) == "0o700"


def test_a_failed_write_leaves_nothing(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        spool.write(1, [EVENT])
    assert list(spool.directory.iterdir()) == []


def test_delete_and_discard_after(spool: Spool) -> None:
    for seq in range(1, 6):
        spool.write(seq, [EVENT])
    spool.delete(spool.paths()[0])
    removed = spool.discard_after(3)
    assert [spool.seq_of(path) for path in removed] == [4, 5]
    assert [spool.seq_of(path) for path in spool.paths()] == [2, 3]


def test_over_the_bound_the_oldest_batches_are_dropped_loudly(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1)
    for seq in range(1, 4):
        spool.write(seq, [{**EVENT, "n": n} for n in range(seq * 10)])
    spool.max_bytes = spool.paths()[-1].stat().st_size
    assert spool.drop_oldest_over_limit() == 10 + 20
    assert [spool.seq_of(path) for path in spool.paths()] == [3]
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "DROPPED batch 0000000000000001.json.gz with 10 events" in errors[0]


def test_within_the_bound_nothing_is_dropped(spool: Spool) -> None:
    spool.write(1, [EVENT])
    assert spool.drop_oldest_over_limit() == 0
    assert len(spool.paths()) == 1


def test_an_unreadable_batch_is_moved_aside(spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    path = spool.write(1, [EVENT])
    path.write_bytes(b"not gzip")
    with pytest.raises(OSError):
        spool.read(path)
    spool.quarantine(path, ValueError("bad"))
    assert spool.paths() == []
    assert (spool.directory / "0000000000000001.json.gz.bad").exists()
    assert "unreadable" in caplog.text
