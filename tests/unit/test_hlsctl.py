"""Tests of hlsctl.py: the status table, colours only on a terminal, one station with its log, the verbs."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from radio_hls.operations import hlsctl
from radio_hls.operations import snapshot as hls_snapshot

if TYPE_CHECKING:
    from conftest import StatusTree


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def live(tree: StatusTree, monkeypatch: pytest.MonkeyPatch) -> StatusTree:
    """hlsctl reading the tree instead of the host."""
    monkeypatch.setattr(hlsctl, "collect", lambda config: tree.snapshot())
    monkeypatch.delenv("NO_COLOR", raising=False)
    tree.station("joy", restarts=2, uptime=3725, playlist_age=3, now_playing={"title": "Artist - Song"})
    tree.station("aac", launch={"upstream_codec": "aac", "mode": "copy", "started_at": 0}, uptime=59)
    tree.station("down", active=False, restarts=7)
    tree.station("off", enabled=False, active=False)
    tree.write_json(tree.config.listeners_file, {"updated_at": "2023-11-14T22:13:10Z", "stations": {"joy": 42}})
    return tree


def table(text: str) -> dict[str, list[str]]:
    """Rows split on runs of two or more spaces, keyed by station."""
    import re

    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in text.splitlines()[1:])}


def test_status_table_plain_when_piped(live: StatusTree) -> None:
    out = io.StringIO()
    assert hlsctl.status(live.config, None, out) == 0
    text = out.getvalue()
    assert "\033[" not in text
    header = text.splitlines()[0].split()
    assert header[:3] == ["STATION", "STATE", "UPTIME"]
    rows = table(text)
    assert rows["joy"] == ["joy", "active (running)", "1h02m", "2", "3s", "mp3 transcode", "42", "Artist - Song"]
    assert rows["aac"] == ["aac", "active (running)", "59s", "0", "2s", "aac copy", "0", "-"]
    assert rows["down"] == ["down", "inactive (dead)", "-", "7", "-", "-", "0", "-"]
    assert rows["off"][1] == "inactive (dead), disabled"


def test_status_table_coloured_on_a_terminal(live: StatusTree) -> None:
    out = Terminal()
    hlsctl.status(live.config, None, out)
    lines = {line.split()[0].removeprefix(hlsctl.GREEN).removeprefix(hlsctl.RED).removeprefix(hlsctl.YELLOW): line
             for line in out.getvalue().splitlines()[1:]}
    assert lines["joy"].startswith(hlsctl.GREEN) and lines["joy"].endswith(hlsctl.RESET)
    assert lines["down"].startswith(hlsctl.RED)
    assert lines["off"].startswith(hlsctl.YELLOW)


def test_no_color_wins_over_a_terminal(live: StatusTree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = Terminal()
    hlsctl.status(live.config, None, out)
    assert "\033[" not in out.getvalue()


def test_status_of_one_station_adds_its_log(live: StatusTree) -> None:
    (live.config.log_dir / "joy.log").write_text("".join(f"line {n}\n" for n in range(1, 31)))
    out = io.StringIO()
    assert hlsctl.status(live.config, "joy", out) == 0
    text = out.getvalue()
    assert list(table(text.split("\n\n")[0])) == ["joy"]
    log = text.split("\n\n")[1].splitlines()
    assert log[0] == f"--- last lines of {live.config.log_dir / 'joy.log'}"
    assert log[1:] == [f"line {n}" for n in range(11, 31)]


def test_status_of_one_station_without_a_log(live: StatusTree) -> None:
    out = io.StringIO()
    assert hlsctl.status(live.config, "aac", out) == 0
    assert "(cannot read" in out.getvalue()


def test_status_of_an_unknown_station(live: StatusTree, capsys: pytest.CaptureFixture[str]) -> None:
    assert hlsctl.status(live.config, "nope", io.StringIO()) == 1
    assert "no station 'nope'" in capsys.readouterr().err


def test_long_titles_are_cut(live: StatusTree) -> None:
    live.station("long", now_playing={"title": "x" * 80})
    out = io.StringIO()
    hlsctl.status(live.config, "long", out)
    assert table(out.getvalue().split("\n\n")[0])["long"][-1] == "x" * 47 + "…"


def test_no_stations(tree: StatusTree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hlsctl, "collect", lambda config: tree.snapshot())
    out = io.StringIO()
    assert hlsctl.status(tree.config, None, out) == 0
    assert out.getvalue().startswith("no stations")


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m00s"),
                                               (3599, "59m59s"), (3600, "1h00m"), (86399, "23h59m"),
                                               (90000, "1d01h")])
def test_duration(seconds: float | None, text: str) -> None:
    assert hlsctl.duration(seconds) == text


@pytest.mark.parametrize("verb", ["start", "stop", "restart"])
def test_verbs_call_systemctl(verb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(hlsctl, "subprocess", SimpleNamespace(
        run=lambda command, check: seen.append(command) or SimpleNamespace(returncode=3)))
    assert hlsctl.main(["--config", "/nonexistent/status.env", verb, "radio-joy"]) == 3  # the verbs read none
    assert seen == [["systemctl", verb, "hls@radio-joy.service"]]


@pytest.mark.parametrize("argv", [["stop", "../etc"], ["status", "Radio"], ["start", "-x"], ["reload", "joy"], []])
def test_bad_arguments_never_reach_systemctl(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(hlsctl, "subprocess", None)
    with pytest.raises(SystemExit) as caught:
        hlsctl.main(argv)
    assert caught.value.code == 2


def test_main_status(live: StatusTree, capsys: pytest.CaptureFixture[str]) -> None:
    assert hlsctl.main(["--config", str(live.settings_file()), "status"]) == 0
    assert "joy" in capsys.readouterr().out


def test_main_status_needs_the_settings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        hlsctl.main(["status"])
    assert caught.value.code == 2
    assert "--config" in capsys.readouterr().err
    assert hlsctl.main(["--config", str(tmp_path / "missing.env"), "status"]) == 1
    assert capsys.readouterr().err.startswith(f"hlsctl: cannot read the settings file {tmp_path}/missing.env")


def test_status_says_why_it_cannot_read_the_stations(tree: StatusTree, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def failing(config: object) -> None:
        raise hls_snapshot.SnapshotError("cannot read the station list /etc/hls/stations: Permission denied")

    monkeypatch.setattr(hlsctl, "collect", failing)
    assert hlsctl.status(tree.config, None, io.StringIO()) == 1
    assert "Permission denied" in capsys.readouterr().err
