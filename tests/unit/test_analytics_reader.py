"""Tests of radio_hls/analytics/logreader.py on real files: new lines only, partial lines, rename and copytruncate
rotation, replaced files, first runs. Every scenario checks that each line is read exactly once."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from radio_hls.analytics.logreader import LogReader, Position


class Follower:
    """Runs the reader the way hls_analytics does, keeping its positions in JSON between runs."""

    def __init__(self, log: Path, block_bytes: int = 1 << 20) -> None:
        self.log = log
        self.saved: str | None = None
        self.block_bytes = block_bytes
        self.warnings: list[str] = []

    def run(self) -> list[str]:
        positions = None if self.saved is None else [Position.from_json(p) for p in json.loads(self.saved)]
        reader = LogReader(self.log, positions, block_bytes=self.block_bytes)
        text = b"".join(reader).decode("utf-8", "replace")
        self.saved = json.dumps([position.to_json() for position in reader.positions()])
        self.warnings += reader.warnings
        return text.splitlines()


def append(path: Path, *lines: str, end: str = "\n") -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(f"{line}{end}" for line in lines))


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "hls-access.log"


def rotated(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def truncate(path: Path) -> None:
    with path.open("r+") as handle:
        handle.truncate(0)


def copytruncate(log: Path) -> None:
    """What logrotate's `copytruncate` does: copy the log to .1, then truncate it in place."""
    shutil.copyfile(log, rotated(log))
    truncate(log)


def test_only_new_lines_are_read(log: Path) -> None:
    follower = Follower(log)
    append(log, "a", "b")
    assert follower.run() == ["a", "b"]
    assert follower.run() == []
    append(log, "c")
    assert follower.run() == ["c"]


def test_a_missing_log_is_no_error(log: Path) -> None:
    follower = Follower(log)
    assert follower.run() == []
    append(log, "a")
    assert follower.run() == ["a"]


def test_a_partial_last_line_waits_for_its_end(log: Path) -> None:
    follower = Follower(log)
    append(log, "a")
    append(log, "half", end="")
    assert follower.run() == ["a"]
    assert follower.run() == []
    append(log, "-done", "b")
    assert follower.run() == ["half-done", "b"]


def test_rename_rotation_reads_the_rest_of_the_old_file_first(log: Path) -> None:
    follower = Follower(log)
    append(log, "1", "2")
    assert follower.run() == ["1", "2"]
    append(log, "3")                     # written before the rotation, not read yet
    log.rename(rotated(log))             # logrotate: rename, create
    append(log, "new-1")
    append(rotated(log), "4")            # nginx writes to the old file until USR1 reopens its logs
    assert follower.run() == ["3", "4", "new-1"]
    append(rotated(log), "5")            # still before the reopen
    append(log, "new-2")
    assert follower.run() == ["5", "new-2"]
    assert follower.run() == []


def test_two_rotations_between_runs(log: Path) -> None:
    """The file read last time is now .1 and a never-seen file sits between: both are read whole."""
    follower = Follower(log)
    append(log, "1")
    assert follower.run() == ["1"]
    log.rename(rotated(log))
    append(log, "3")
    rotated(log).unlink()                 # compressed away by the next rotation (after prerotate drained it)
    log.rename(rotated(log))
    append(log, "4")
    assert follower.run() == ["3", "4"]


def test_copytruncate_reads_the_rest_from_the_copy(log: Path) -> None:
    follower = Follower(log)
    append(log, "line-1", "line-2")
    assert follower.run() == ["line-1", "line-2"]
    append(log, "line-3", "line-4")
    copytruncate(log)
    append(log, "after-1")
    assert follower.run() == ["line-3", "line-4", "after-1"]
    assert follower.run() == []
    append(log, "after-2")
    assert follower.run() == ["after-2"]


def test_copytruncate_that_grew_past_the_old_offset(log: Path) -> None:
    """The truncated file is already longer than the old offset: its first bytes tell it apart."""
    follower = Follower(log)
    append(log, "old-1")
    assert follower.run() == ["old-1"]
    append(log, "old-2")
    copytruncate(log)
    append(log, "a much longer first line after the truncation", "second")
    assert follower.run() == ["old-2", "a much longer first line after the truncation", "second"]


def test_truncation_without_a_copy_rereads_from_the_start_with_a_warning(log: Path) -> None:
    follower = Follower(log)
    append(log, "old-1", "old-2")
    follower.run()
    truncate(log)
    append(log, "new")
    assert follower.run() == ["new"]
    assert any("truncated or replaced" in warning for warning in follower.warnings)


def test_a_copy_of_an_intact_file_is_not_read_again(log: Path) -> None:
    follower = Follower(log)
    append(log, "a", "b")
    follower.run()
    shutil.copyfile(log, rotated(log))    # logrotate's `copy` (without truncate)
    append(log, "c")
    assert follower.run() == ["c"]


def test_first_run_reads_the_live_log_and_leaves_rotated_history(log: Path) -> None:
    append(rotated(log), "history")
    append(log, "today")
    follower = Follower(log)
    assert follower.run() == ["today"]
    append(rotated(log), "late line in the old file")
    assert follower.run() == ["late line in the old file"]


def test_an_empty_state_reads_new_files_whole(log: Path) -> None:
    """Positions saved as [] (the log did not exist yet) are not a first run: a rotated file is new."""
    follower = Follower(log)
    assert follower.run() == []
    append(log, "a")
    log.rename(rotated(log))
    append(log, "b")
    assert follower.run() == ["a", "b"]


def test_a_new_file_on_a_reused_inode_is_read_from_its_start(log: Path) -> None:
    follower = Follower(log)
    append(log, "x" * 50)
    follower.run()
    with log.open("r+") as handle:        # same inode, other content, longer than before
        handle.seek(0)
        handle.write("y" * 60 + "\n" + "z\n")
    assert follower.run() == ["y" * 60, "z"]


def test_one_file_under_both_names_is_read_once(log: Path) -> None:
    """A rotation between opening the live log and its .1 shows the same file twice."""
    follower = Follower(log)
    append(log, "a")
    os.link(log, rotated(log))
    assert follower.run() == ["a"]
    append(log, "b")
    assert follower.run() == ["b"]


def test_small_blocks_never_split_a_line_or_a_character(log: Path) -> None:
    lines = [f"line {number} ünïcödé €😀" + "x" * (number % 7) for number in range(200)]
    append(log, *lines)
    assert Follower(log, block_bytes=7).run() == lines


def test_invalid_utf8_is_handed_out_as_it_is(log: Path) -> None:
    """Bytes that are no UTF-8 are the parser's to replace, field by field: the reader loses none of them."""
    log.write_bytes(b"ok\nbad \xff\xfe byte\nok again\n")
    assert b"".join(LogReader(log, None)) == b"ok\nbad \xff\xfe byte\nok again\n"


def test_positions_round_trip() -> None:
    position = Position(dev=1, ino=2, offset=3, head_len=3, head="abc")
    assert Position.from_json(json.loads(json.dumps(position.to_json()))) == position


# --- compressed rotated files: the reader did not run across two rotations ------------------------------------

def logrotate(log: Path) -> None:
    """What logrotate does with `compress` and `delaycompress`: .N.gz -> .N+1.gz, .1 -> .2.gz, log -> .1."""
    numbered = sorted(log.parent.glob(f"{log.name}.*.gz"), key=lambda path: int(path.name.split(".")[-2]))
    for path in reversed(numbered):
        path.rename(log.with_name(f"{log.name}.{int(path.name.split('.')[-2]) + 1}.gz"))
    if rotated(log).exists():
        with rotated(log).open("rb") as plain, gzip.open(log.with_name(f"{log.name}.2.gz"), "wb") as packed:
            shutil.copyfileobj(plain, packed)
        rotated(log).unlink()
    if log.exists():
        log.rename(rotated(log))


def test_the_rest_of_a_file_compressed_before_it_was_read_comes_from_the_gz(log: Path) -> None:
    follower = Follower(log)
    append(log, "1" * 2000, "2")          # longer than the head the position keeps
    assert follower.run() == ["1" * 2000, "2"]
    append(log, "3")                     # the analytics stop reading here
    logrotate(log)
    append(log, "4")
    logrotate(log)                       # the file read last is compressed, with "3" unread
    append(log, "5")
    assert follower.run() == ["3", "4", "5"]
    assert follower.run() == []
    logrotate(log)
    logrotate(log)
    append(log, "6")
    assert follower.run() == ["6"]
    assert follower.warnings == []


def test_compressed_files_rotated_after_the_last_one_read_are_read_whole(log: Path) -> None:
    follower = Follower(log)
    append(log, "a")
    assert follower.run() == ["a"]
    append(log, "b")
    for line in ["c", "d", "e"]:
        logrotate(log)
        append(log, line)
    logrotate(log)
    append(log, "f")
    assert sorted(path.name for path in log.parent.iterdir()) == [
        log.name, f"{log.name}.1", f"{log.name}.2.gz", f"{log.name}.3.gz", f"{log.name}.4.gz"]
    assert follower.run() == ["b", "c", "d", "e", "f"]
    assert follower.run() == []


def test_a_file_read_to_its_end_is_not_read_again_once_compressed(log: Path) -> None:
    follower = Follower(log)
    append(log, "a")
    assert follower.run() == ["a"]
    logrotate(log)
    append(log, "b")
    assert follower.run() == ["b"]
    logrotate(log)
    append(log, "c")
    assert follower.run() == ["c"]
    assert follower.run() == []
    assert follower.warnings == []


def test_a_run_stopped_midway_in_a_compressed_file_resumes_where_it_stopped(log: Path) -> None:
    lines = [f"old {number}" for number in range(100)]
    append(log, "seen")
    follower = Follower(log)
    assert follower.run() == ["seen"]
    append(log, *lines)
    logrotate(log)
    append(log, "middle")
    logrotate(log)
    append(log, "live")

    # The first block only, then the positions are saved, as hls_analytics does between slices.
    known = [Position.from_json(p) for p in json.loads(follower.saved or "[]")]
    reader = LogReader(log, known, block_bytes=64)
    first = next(iter(reader)).decode()
    follower.saved = json.dumps([position.to_json() for position in reader.positions()])
    assert (first + "\n".join(follower.run()) + "\n").splitlines() == [*lines, "middle", "live"]


def test_a_damaged_compressed_file_keeps_what_was_read_and_is_not_retried(log: Path) -> None:
    follower = Follower(log, block_bytes=64)
    append(log, "seen")
    assert follower.run() == ["seen"]
    append(log, *(f"lost {number:04d} {'x' * 40}" for number in range(2000)))
    logrotate(log)
    logrotate(log)
    packed = log.with_name(f"{log.name}.2.gz")
    data = packed.read_bytes()
    packed.write_bytes(data[:len(data) // 2] + data[-8:])  # cut in the middle, trailer kept
    append(log, "live")
    read = follower.run()
    assert read[-1] == "live" and 0 < len(read) - 1 < 2000
    assert all(line.startswith("lost ") and len(line) == 50 for line in read[:-1])
    assert any("its rest is skipped" in warning for warning in follower.warnings)
    assert follower.run() == []


def test_a_file_being_compressed_right_now_is_read_from_its_plain_copy(log: Path) -> None:
    follower = Follower(log)
    append(log, "a")
    assert follower.run() == ["a"]
    append(log, "b")
    logrotate(log)
    append(log, "c")
    rotated(log).rename(log.with_name(f"{log.name}.2"))  # logrotate: .1 -> .2, then compress .2
    log.rename(rotated(log))
    log.with_name(f"{log.name}.2.gz").write_bytes(b"\x1f\x8b")  # the compressed copy, just begun
    append(log, "d")
    assert follower.run() == ["b", "c", "d"]
    assert follower.warnings == []


def test_a_gone_file_without_its_compressed_copy_is_said(log: Path) -> None:
    follower = Follower(log)
    append(log, "a")
    assert follower.run() == ["a"]
    for line in ["unread", "y", "z"]:
        append(log, line)
        logrotate(log)
    log.with_name(f"{log.name}.3.gz").unlink()  # the file read last: rotated out of the kept ones
    append(log, "b")
    assert follower.run() == ["z", "b"]
    assert any("not among the compressed ones" in warning for warning in follower.warnings)
