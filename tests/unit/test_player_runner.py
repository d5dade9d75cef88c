"""Tests of the player matrix's accounting (tests/players/runner.py): what counts as played, skipped, going back."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "players"))

from runner import Account  # noqa: E402 (the runners are scripts, not a package)


def play(readings: list[float], every: float = 0.5) -> Account:
    """An account of `readings`, one every `every` s, after a first one that begins the window."""
    account = Account("http://x/hls/a/index.m3u8", window=1000.0)
    account.read(0.0, 0.0)
    account.read(every, every)
    for index, position in enumerate(readings, start=2):
        account.read(index * every, position)
    return account


def steady(start: float, count: int, every: float = 0.5) -> list[float]:
    return [start + index * every for index in range(count)]


def test_a_position_that_lies_for_a_while_and_comes_back_is_neither_skipped_nor_back() -> None:
    # Six readings 117 s ahead (longer than the median of three smooths), then back on the timeline.
    readings = steady(1.0, 10) + [117 + p for p in steady(6.0, 6)] + steady(9.0, 10)
    account = play(readings)
    assert (account.went_back, account.skipped) == (0, 0.0)


def test_a_timeline_that_really_goes_back_is_reported() -> None:
    # mpv's "Invalid audio PTS: 35.99 -> 95269.7": the position starts again near zero and stays there.
    account = play(steady(1.0, 40) + steady(0.2, 10))
    assert account.went_back >= 1


def test_a_jump_forward_that_stays_is_skipped() -> None:
    account = play(steady(1.0, 10) + steady(60.0, 10))
    assert account.skipped > 50 and account.went_back == 0
