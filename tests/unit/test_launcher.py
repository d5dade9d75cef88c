"""Tests of radio_hls/stations/launcher.py: settings from the env file, the FFmpeg command and its input document,
where a station URL with credentials leads (against local HTTP servers), and main()."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from patience import PATIENCE, wait_for

from radio_hls.stations import launcher as hls_launcher
from radio_hls.stations import station as hls_station
from radio_hls.stations import upstream as hls_upstream
from radio_hls.stations.facts import url_digest
from radio_hls.stations.launcher import (
    GLOBAL_OPTIONS,
    LaunchError,
    StationSettings,
    Upstream,
    begin_run,
    build_command,
    choose_mode,
    input_document,
    prepare_directories,
    upstream_options,
)
from radio_hls.stations.probe import Probe, ProbeFailed
from radio_hls.stations.runs import Run, last_timeline, read_run
from radio_hls.stations.station import Station, station_env
from radio_hls.stations.variants import Variant

NOW = 1_700_000_000.123
# The autouse fixture below replaces it; the redirect tests put it back.
real_open_upstream = hls_upstream.open_upstream
OUTPUT = Path("/run/hls/radio-joy")
BASE = {"HLS_STATION_SLUG": "radio-joy", "HLS_STREAM_URL": "http://user:s3cret@joy.example:8000/live.mp3"}
BARE_URL = "http://joy.example:8000/live.mp3"
AUTHORIZATION = "Basic dXNlcjpzM2NyZXQ="  # user:s3cret


def settings(**overrides: str) -> StationSettings:
    return StationSettings.from_env({**BASE, **overrides})


def run_of(mode: str = "copy", segment_seconds: int = 6, start: float = NOW) -> Run:
    return Run.begin(start, segment_seconds, mode, None, start)


def option(command: list[str], name: str) -> str:
    """The value following `name` (which must appear exactly once)."""
    assert command.count(name) == 1, f"{name} appears {command.count(name)} times in {command}"
    return command[command.index(name) + 1]


def read_document(document: str) -> tuple[str, dict[str, str]]:
    """(the file's URL, its options) of an ffconcat document; its quoting is a shell's, so shlex reads it."""
    lines = [shlex.split(line) for line in document.splitlines()]
    assert lines[0] == ["ffconcat", "version", "1.0"]
    assert lines[1][0] == "file" and len(lines[1]) == 2
    assert all(line[0] == "option" and len(line) == 3 for line in lines[2:]), lines
    return lines[1][1], {key: value for _, key, value in lines[2:]}


def document_of(settings_: StationSettings, upstream: Upstream | None = None) -> tuple[str, dict[str, str]]:
    upstream = upstream or Upstream(BARE_URL, AUTHORIZATION)
    return read_document(input_document(upstream, upstream_options(settings_, upstream)))


@dataclass
class FakeResponse:
    url: str

    def geturl(self) -> str:
        return self.url

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture(autouse=True)
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No test reaches a real upstream unless it says so: open_upstream answers without a redirect."""
    urls: list[str] = []

    def fake_open_upstream(url: str, headers: object, timeout: float, verify_tls: bool = True) -> FakeResponse:
        urls.append(url)
        return FakeResponse(hls_station.basic_authorization(url)[0])

    monkeypatch.setattr(hls_upstream, "open_upstream", fake_open_upstream)
    return urls


@dataclass
class FakeProbe:
    """probe.measure: records each input (its arguments and the document on standard input) and answers `probe`, or
    raises `failure`."""

    probe: Probe = field(default_factory=lambda: Probe("aac", 3.5, "aac"))
    failure: ProbeFailed | None = None
    calls: list[tuple[list[str], str]] = field(default_factory=list)
    with_burst: list[bool] = field(default_factory=list)

    def __call__(self, arguments: list[str], document: str, timeout: float, max_burst: float,
                 with_burst: bool) -> Probe:
        self.calls.append((list(arguments), document))
        self.with_burst.append(with_burst)
        assert max_burst == hls_launcher.MAX_BURST_SECONDS
        if self.failure is not None:
            raise self.failure
        return self.probe


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> FakeProbe:
    fake = FakeProbe()
    monkeypatch.setattr(hls_launcher.probe, "measure", fake)
    return fake


@pytest.fixture
def no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may probe a real upstream."""
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the upstream was probed")

    monkeypatch.setattr(hls_launcher.probe, "measure", forbidden)


@dataclass
class Exec:
    file: str
    args: list[str]
    stdin: str  # what FFmpeg would read as pipe:0


@pytest.fixture(autouse=True)
def stdin_handed_over(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What hand_over puts on standard input, recorded instead (pytest's own standard input stays)."""
    handed: list[str] = []
    real_dup2 = os.dup2

    def fake_dup2(fd: int, target: int, inheritable: bool = True) -> int:
        if target != 0:  # os is everyone's module: pytest's own output capture dup2()s too
            return real_dup2(fd, target, inheritable)
        handed.append(os.pread(fd, 1 << 20, 0).decode())
        return target

    monkeypatch.setattr(hls_launcher.os, "dup2", fake_dup2)
    return handed


@pytest.fixture(autouse=True)
def stderr_redacted(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """redact_stderr recorded instead of run (it forks sed onto standard error); the real one runs in a subprocess."""
    calls: list[bool] = []
    monkeypatch.setattr(hls_launcher, "redact_stderr", lambda: calls.append(True))
    return calls


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch, stdin_handed_over: list[str]) -> list[Exec]:
    """os.execvp recorded instead of run, with the document that was handed over on standard input."""
    done: list[Exec] = []
    monkeypatch.setattr(hls_launcher.os, "execvp", lambda file, args: done.append(
        Exec(file, list(args), stdin_handed_over[-1] if stdin_handed_over else "")))
    return done


# --- StationSettings.from_env ------------------------------------------------------------------------------

def test_from_env_defaults() -> None:
    assert settings() == StationSettings(slug="radio-joy", stream_url=BASE["HLS_STREAM_URL"], segment_seconds=6,
                                         aac_bitrate="128k", codec="auto",
                                         read_timeout_seconds=15, aac_coder="fast")


def test_from_env_values() -> None:
    got = settings(HLS_SEGMENT_SECONDS="4", HLS_AAC_BITRATE="96k", HLS_CODEC="transcode",
                   HLS_READ_TIMEOUT_SECONDS="30", HLS_AAC_CODER="twoloop")
    assert (got.segment_seconds, got.aac_bitrate, got.codec, got.read_timeout_seconds,
            got.aac_coder) == (4, "96k", "transcode", 30, "twoloop")


def test_from_env_reads_the_ladder() -> None:
    assert settings(HLS_VARIANTS="low:48k:1:22050, mid:64k").variants == (
        Variant("low", "48k", 1, 22050), Variant("mid", "64k", 2, 44100))
    assert settings(HLS_VARIANTS="").variants == settings().variants == ()


def test_from_env_empty_values_mean_defaults() -> None:
    got = settings(HLS_SEGMENT_SECONDS="", HLS_CODEC="", HLS_AAC_BITRATE="", HLS_AAC_CODER="")
    assert (got.segment_seconds, got.codec, got.aac_bitrate, got.aac_coder) == (6, "auto", "128k", "fast")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"HLS_STATION_SLUG": "../etc"}, "slug '../etc' does not match"),
    ({"HLS_STATION_SLUG": "Radio-Joy"}, "slug 'Radio-Joy' does not match"),
    ({"HLS_STATION_SLUG": None}, "slug None does not match"),
    ({"HLS_STREAM_URL": "file:///etc/passwd"}, "stream_url scheme 'file' is not http or https"),
    ({"HLS_STREAM_URL": "concat:a|b"}, "stream_url scheme 'concat' is not http or https"),
    ({"HLS_STREAM_URL": None}, "stream_url is missing"),
    ({"HLS_CODEC": "bogus"}, "HLS_CODEC='bogus' is not one of auto, copy, transcode"),
    ({"HLS_CODEC": "COPY"}, "HLS_CODEC='COPY' is not one of"),
    ({"HLS_AAC_CODER": "anmr"}, "HLS_AAC_CODER='anmr' is not one of fast, twoloop"),
    ({"HLS_AAC_BITRATE": "12"}, "HLS_AAC_BITRATE='12' is not like 128k"),
    ({"HLS_AAC_BITRATE": "k"}, "HLS_AAC_BITRATE='k' is not like 128k"),
    ({"HLS_AAC_BITRATE": "128K"}, "HLS_AAC_BITRATE='128K' is not like 128k"),
    ({"HLS_AAC_BITRATE": "-1k"}, "HLS_AAC_BITRATE='-1k' is not like 128k"),
    ({"HLS_SEGMENT_SECONDS": "0"}, "HLS_SEGMENT_SECONDS='0' is not a whole number from 1 to 60"),
    ({"HLS_SEGMENT_SECONDS": "abc"}, "HLS_SEGMENT_SECONDS='abc' is not a whole number from 1 to 60"),
    ({"HLS_SEGMENT_SECONDS": "61"}, "HLS_SEGMENT_SECONDS='61' is not a whole number from 1 to 60"),
    ({"HLS_SEGMENT_SECONDS": "-1"}, "HLS_SEGMENT_SECONDS='-1' is not a whole number"),
    ({"HLS_SEGMENT_SECONDS": "1.5"}, "HLS_SEGMENT_SECONDS='1.5' is not a whole number"),
    ({"HLS_SEGMENT_SECONDS": "61"}, "HLS_SEGMENT_SECONDS='61' is not a whole number from 1 to 60"),
    ({"HLS_READ_TIMEOUT_SECONDS": "601"}, "HLS_READ_TIMEOUT_SECONDS='601' is not a whole number from 1 to 600"),
    ({"HLS_VARIANTS": "master:48k"}, "HLS_VARIANTS: rendition name 'master' does not match"),
    ({"HLS_VARIANTS": "low:8k"}, "HLS_VARIANTS: low: bitrate '8k' is not 16k to 320k"),
    ({"HLS_VARIANTS": "low:48k:3"}, "HLS_VARIANTS: low: channels '3' is not 1 or 2"),
    ({"HLS_VARIANTS": "low:48k:2:44000"}, "HLS_VARIANTS: low: sample rate '44000' is not one the AAC encoder"),
    ({"HLS_VARIANTS": "low:48k,low:64k"}, "HLS_VARIANTS: rendition name 'low' is used more than once"),
])
def test_from_env_refuses(overrides: dict[str, str | None], message: str) -> None:
    with pytest.raises(LaunchError) as caught:
        StationSettings.from_env({**BASE, **overrides})
    assert message in str(caught.value)


def test_from_env_refuses_unicode_digits() -> None:
    with pytest.raises(LaunchError, match="HLS_SEGMENT_SECONDS"):
        settings(HLS_SEGMENT_SECONDS="²")


# --- choose_mode, begin_run --------------------------------------------------------------------------------

@pytest.mark.parametrize(("codec_setting", "upstream", "mode"), [
    ("auto", "aac", "copy"),
    ("auto", "mp3", "transcode"),
    ("auto", "opus", "transcode"),
    ("auto", None, "transcode"),
    ("copy", "mp3", "copy"),
    ("copy", None, "copy"),
    ("transcode", "aac", "transcode"),
])
def test_choose_mode(codec_setting: str, upstream: str | None, mode: str) -> None:
    assert choose_mode(settings(HLS_CODEC=codec_setting), upstream) == mode


def test_the_first_run_starts_at_the_wall_clock(tmp_path: Path) -> None:
    run = begin_run(last_timeline(tmp_path), settings(HLS_SEGMENT_SECONDS="4"), "copy", "aac", NOW)
    assert (run.run, run.start, run.base, run.segment_seconds) == (1_700_000_000_123, 1_700_000_000.123,
                                                                   1_700_000_000 - 1_700_000_000 % 4, 4)
    assert run.offset == round(run.start - run.base, 3) and 0 <= run.offset < 4
    # Early by the burst the probe measured: on the clock once the burst is in, as a later run is (two origins
    # that start a station, one of them after a reboot, put the same audio in the same slot).
    assert begin_run(None, settings(HLS_SEGMENT_SECONDS="4"), "copy", "aac", NOW, 3.5).start == NOW - 3.5


def test_a_run_starts_after_the_last_runs_timeline(tmp_path: Path) -> None:
    # The last run cut its last whole segment at NOW + 7.877 (Icecast's burst put it ahead of the clock), then
    # stopped at NOW + 8.5: the segment it cut short there is never published, so the next run starts after the cut.
    previous = run_of(segment_seconds=2, start=NOW - 20)
    previous.write(tmp_path)
    cut, end = previous.base + 28.0, previous.start - previous.base + 28.5
    previous.list_path(tmp_path).write_text(f"{previous.run}-0.ts,0.000000,1.0\n{previous.run}-13.ts,26.0,28.0\n"
                                            f"{previous.run}-14.ts,28.0,{end:.6f}\n")
    run = begin_run(last_timeline(tmp_path), settings(HLS_SEGMENT_SECONDS="2"), "copy", "aac", NOW)
    assert run.start == pytest.approx(cut + hls_launcher.RUN_GAP_SECONDS, abs=0.002)
    # What the upstream sends from the clock up to there, the last run published: FFmpeg skips it.
    assert run.skip == pytest.approx(cut - NOW + hls_launcher.RUN_GAP_SECONDS, abs=0.002)
    # Once the clock is ahead again, the wall clock wins: timestamps follow it, with the outage as their gap.
    later = begin_run(last_timeline(tmp_path), settings(), "copy", "aac", NOW + 60)
    assert (later.start, later.skip) == (pytest.approx(NOW + 60, abs=0.001), 0)


def test_a_run_starts_early_by_the_burst_the_last_one_got(tmp_path: Path) -> None:
    # The last run began at NOW - 100 (decided 0.5 s before), and its last segment, listed at NOW - 30.2, ends at
    # the cut NOW - 26.123: its timeline ran 4.077 s ahead of the clock, 0.5 s of which it began ahead. The
    # upstream's burst on connect was 3.577 s: this run starts that much before the clock, to be on it once its own
    # burst is in.
    previous = Run.begin(NOW - 100, 2, "copy", "aac", NOW - 100.5)
    previous.write(tmp_path)
    cut = NOW - 26.123  # a multiple of 2
    end = cut - previous.base
    previous.list_path(tmp_path).write_text(f"{previous.run}-36.ts,{end - 2:.6f},{end:.6f}\n")
    os.utime(previous.list_path(tmp_path), (NOW - 30.2, NOW - 30.2))
    run = begin_run(last_timeline(tmp_path), settings(HLS_SEGMENT_SECONDS="2"), "copy", "aac", NOW)
    assert run.start == pytest.approx(NOW - 3.577, abs=0.002)
    # Never more than an upstream's burst can be, and never before the last run's end.
    os.utime(previous.list_path(tmp_path), (NOW - 130, NOW - 130))
    later = begin_run(last_timeline(tmp_path), settings(), "copy", "aac", NOW)
    assert later.start == pytest.approx(NOW - 15, abs=0.002)
    os.utime(previous.list_path(tmp_path), (NOW - 30.2, NOW - 30.2))
    soon = begin_run(last_timeline(tmp_path), settings(), "copy", "aac", NOW - 25)
    assert soon.start == pytest.approx(cut + hls_launcher.RUN_GAP_SECONDS, abs=0.002)
    # Its burst repeats what the last run listed from NOW - 28.577 on: FFmpeg skips that.
    assert soon.skip == pytest.approx(2.454 + hls_launcher.RUN_GAP_SECONDS, abs=0.002)
    # Never more than a burst can be: a timeline far ahead (the clock stepped back) is no audio the upstream repeats.
    stepped_back = begin_run(last_timeline(tmp_path), settings(), "copy", "aac", NOW - 90)
    assert stepped_back.skip == hls_launcher.MAX_BURST_SECONDS


@dataclass
class BurstyUpstream:
    """Runs of FFmpeg against an upstream that sends `burst` seconds of audio at once on connect, restarted every
    `every` seconds, as the segment muxer lists them (segments cut on the timeline, the list replaced as each ends)."""

    directory: Path
    burst: float
    segment_seconds: int = 2

    def play(self, run: Run, connected: float, stopped: float) -> None:
        """The run's list once it stopped: every segment it finished before `stopped`."""
        first = run.start - run.skip  # the timeline position of the first audio received
        reached = run.start + (stopped - connected + self.burst - run.skip)  # the timeline at the stop
        t = self.segment_seconds
        lines, begin, end = [], run.offset, (math.floor(run.offset / t) + 1) * t
        while run.base + end <= reached:
            lines.append(f"{run.run}-{len(lines)}.ts,{begin if lines else 0:.6f},{end:.6f}\n")
            begin, end = end, end + t
        run.list_path(self.directory).write_text("".join(lines[-50:]))
        finished = connected + (run.base + begin) - first - self.burst  # the wall time its last segment ended
        os.utime(run.list_path(self.directory), (finished, finished))


@pytest.mark.parametrize("mode", ["copy", "transcode"])
def test_quick_restarts_keep_the_timeline_on_the_clock(tmp_path: Path, mode: str) -> None:
    # Restarts every 10 s against an upstream that bursts 4 s: each new connection repeats 4 s the last run already
    # listed. Without the skip each restart put the timeline another burst ahead (the first run's 4 s, then 8, 12...).
    upstream = BurstyUpstream(tmp_path, burst=4.0)
    ahead = []
    for restart in range(6):
        now = NOW + 10 * restart
        run = begin_run(last_timeline(tmp_path), settings(HLS_SEGMENT_SECONDS="2"), mode, "aac", now,
                        upstream.burst)  # the probe's measure, which only a first run goes by
        run.write(tmp_path)
        # Where the timeline stands 9 s into the run, against the clock.
        ahead.append(run.start - run.skip + 9 + upstream.burst - (now + 9))
        upstream.play(run, now, now + 9.9)
    assert ahead == [pytest.approx(0, abs=0.01)] * 6


def test_a_run_that_listed_nothing_still_moves_the_next_one_on(tmp_path: Path) -> None:
    run_of(start=NOW + 5).write(tmp_path)  # its start is ahead of the clock, and it never finished a segment
    assert begin_run(last_timeline(tmp_path), settings(), "copy", "aac", NOW).start > NOW + 5


# --- build_command and the input document ---------------------------------------------------------------

def test_the_command_line_holds_no_url_and_reads_its_input_on_stdin() -> None:
    command = build_command(settings(), OUTPUT, run_of())
    first_input = command.index("-i")
    assert command[0] == "ffmpeg"
    assert command[1 : 1 + len(GLOBAL_OPTIONS)] == list(GLOBAL_OPTIONS)
    assert command.index("-nostdin") < first_input
    assert command.index("-loglevel") < first_input and option(command, "-loglevel") == "warning"
    assert command.count("-i") == 1 and option(command, "-i") == "pipe:0"
    # The top level may open its standard input only; the document names the one upstream.
    assert option(command, "-protocol_whitelist") == "pipe"
    assert set(command[first_input - 6 : first_input]) == {"-f", "concat", "-protocol_whitelist", "pipe", "-safe", "0"}
    # Any local user can read a command line: no URL, host, credential or token in it.
    assert not any(secret in argument for argument in command for secret in ("s3cret", "joy.example", "http"))
    assert "-headers" not in command


def test_the_input_document_holds_the_upstream_and_its_options() -> None:
    url, options = document_of(settings())
    assert url == BARE_URL
    assert options == {"protocol_whitelist": "http,https,tcp,tls", "formatprobesize": "32768", "reconnect": "1",
                       "reconnect_on_network_error": "1", "reconnect_delay_max": "10", "rw_timeout": "15000000",
                       "user_agent": "radio-hls/1.0", "headers": f"Authorization: {AUTHORIZATION}",
                       "max_redirects": "0"}


def test_without_credentials_ffmpeg_follows_redirects_itself() -> None:
    url, options = document_of(settings(HLS_STREAM_URL="http://joy.example/live"), Upstream("http://joy.example/live"))
    assert url == "http://joy.example/live"
    assert "headers" not in options and "max_redirects" not in options


@pytest.mark.parametrize("url", ["http://joy.example/it's?q='a'&b=1#x", "http://joy.example/'", "http://x/''''"])
def test_quotes_in_the_url_stay_in_the_url(url: str) -> None:
    assert document_of(settings(), Upstream(url))[0] == url


@pytest.mark.parametrize("value", ["a\nfile 'http://evil/'", "a\roption x y", "a\0"])
def test_a_line_break_can_never_add_a_directive(value: str) -> None:
    with pytest.raises(LaunchError, match="line break"):
        input_document(Upstream(f"http://joy.example/{value}"), {})


def test_rw_timeout_is_in_microseconds() -> None:
    assert document_of(settings(HLS_READ_TIMEOUT_SECONDS="7"))[1]["rw_timeout"] == "7000000"


def test_copy_mode() -> None:
    command = build_command(settings(), OUTPUT, run_of())
    assert option(command, "-c:a") == "copy"
    assert "-b:a" not in command and "-profile:a" not in command and "-aac_coder" not in command


def test_transcode_mode() -> None:
    command = build_command(settings(HLS_AAC_BITRATE="96k"), OUTPUT, run_of("transcode"))
    assert option(command, "-c:a") == "aac"
    assert option(command, "-profile:a") == "aac_low"
    assert option(command, "-b:a") == "96k"
    assert option(command, "-aac_coder") == "fast"
    assert command.index("-i") < command.index("-aac_coder")
    twoloop = build_command(settings(HLS_AAC_CODER="twoloop"), OUTPUT, run_of("transcode"))
    assert option(twoloop, "-aac_coder") == "twoloop"


def test_segment_output_options(tmp_path: Path) -> None:
    run = run_of(segment_seconds=4)
    command = build_command(settings(HLS_SEGMENT_SECONDS="4"), tmp_path, run)
    output = command[command.index("-i") + 2 :]  # every output option sits between the input and the segments
    assert option(output, "-f") == "segment"
    assert option(output, "-map") == "0:a:0"
    assert option(output, "-segment_time") == "4"
    assert option(output, "-segment_format") == "mpegts"
    assert option(output, "-segment_list") == f"{tmp_path}/1700000000123.csv"
    assert option(output, "-segment_list_type") == "csv"
    assert option(output, "-segment_list_size") == "50"
    assert option(output, "-c:a") == "copy"
    assert command[-1] == f"{tmp_path}/1700000000123-%d.ts"
    # Cut on the clock: the first audio sits at the start's place in its 4-second cell.
    assert option(output, "-output_ts_offset") == "0.123"
    # Timestamps as they are (copyts, no preload); up to 0.7 s of audio per PES, not one frame each.
    assert option(output, "-muxdelay") == "0.7" and option(output, "-muxpreload") == "0"
    assert option(output, "-segment_format_options") == "mpegts_copyts=1"
    assert "-ss" not in command  # a run that repeats nothing skips nothing


def test_a_run_skips_what_the_last_one_listed_as_an_output_option(tmp_path: Path) -> None:
    # After the input, FFmpeg's -ss drops that much of the audio (before it, it would seek the live input).
    run = Run.begin(NOW + 4.1, 6, "copy", "aac", NOW, skip=8.1234)
    output = build_command(settings(), tmp_path, run)
    assert output.index("-ss") > output.index("-i") and option(output, "-ss") == "8.123"


def outputs_of(command: list[str]) -> list[list[str]]:
    """Each output's options and file, in order: what follows the input, split after each segment pattern."""
    outputs, current = [], []
    for argument in command[command.index("-i") + 2:]:
        current.append(argument)
        if argument.endswith("-%d.ts"):
            outputs.append(current)
            current = []
    assert not current
    return outputs


@pytest.mark.parametrize("mode", ["copy", "transcode"])
def test_each_rendition_is_one_more_output_cut_like_the_main_one(tmp_path: Path, mode: str) -> None:
    station = settings(HLS_VARIANTS="low:48k:1:22050,mid:64k", HLS_AAC_CODER="twoloop")
    run = Run.begin(NOW + 4.1, 6, mode, None, NOW, skip=2.5, variants=station.variants)
    main, low, mid = outputs_of(build_command(station, tmp_path, run))
    assert main[-1] == f"{tmp_path}/{run.run}-%d.ts"
    assert low[-1] == f"{tmp_path}/low/{run.run}-%d.ts" and mid[-1] == f"{tmp_path}/mid/{run.run}-%d.ts"
    assert option(low, "-segment_list") == f"{tmp_path}/low/{run.run}.csv"
    assert option(mid, "-segment_list") == f"{tmp_path}/mid/{run.run}.csv"
    for name in ("-map", "-ss", "-output_ts_offset", "-initial_offset", "-muxdelay", "-muxpreload", "-f",
                 "-segment_format_options",
                 "-segment_time", "-segment_format", "-segment_list_type", "-segment_list_size"):
        assert option(low, name) == option(mid, name) == option(main, name), name
    assert [option(low, name) for name in ("-c:a", "-profile:a", "-b:a", "-ac", "-ar", "-aac_coder")] == [
        "aac", "aac_low", "48k", "1", "22050", "twoloop"]
    assert [option(mid, name) for name in ("-b:a", "-ac", "-ar")] == ["64k", "2", "44100"]
    assert option(main, "-c:a") == ("copy" if mode == "copy" else "aac") and "-ac" not in main


def test_no_ladder_is_one_output() -> None:
    assert len(outputs_of(build_command(settings(HLS_VARIANTS=""), OUTPUT, run_of()))) == 1


def test_a_run_records_its_renditions(tmp_path: Path) -> None:
    station = settings(HLS_VARIANTS="low:48k:1:22050")
    run = begin_run(last_timeline(tmp_path), station, "copy", "aac", NOW)
    run.write(tmp_path)
    document = json.loads((tmp_path / ".launch.json").read_text())
    assert document["variants"] == [{"name": "low", "bitrate": "48k", "channels": 1, "sample_rate": 22050}]
    assert read_run(tmp_path) == run and run.variants == station.variants
    assert Run.variant_dir(tmp_path, "low") == tmp_path / "low"


def test_a_run_file_without_renditions_still_reads(tmp_path: Path) -> None:
    # .launch.json of the version before the ladder.
    document = {"run": 1700000000123, "start": 1700000000.123, "base": 1699999998, "segment_seconds": 6,
                "mode": "copy", "upstream_codec": "aac", "started_at": 1700000000.0, "skip": 0.0}
    (tmp_path / ".launch.json").write_text(json.dumps(document))
    run = read_run(tmp_path)
    assert run is not None and run.variants == () and run.run == 1700000000123


@pytest.mark.parametrize("listed", ["low:48k", [{"name": "index", "bitrate": "48k", "channels": 2,
                                                 "sample_rate": 44100}], [{"name": "low"}], [1]])
def test_a_run_file_with_renditions_it_cannot_use_is_no_run(tmp_path: Path, listed: object) -> None:
    document = {"run": 1700000000123, "start": 1700000000.123, "base": 1699999998, "segment_seconds": 6,
                "mode": "copy", "upstream_codec": "aac", "started_at": 1700000000.0, "variants": listed}
    (tmp_path / ".launch.json").write_text(json.dumps(document))
    assert read_run(tmp_path) is None


def test_timestamps_are_the_wall_clock_on_the_33_bit_mpeg_ts_clock() -> None:
    command = build_command(settings(), OUTPUT, run_of())
    initial, offset = float(option(command, "-initial_offset")), float(option(command, "-output_ts_offset"))
    assert 0 <= initial < 2**33 / 90000
    # The first packet's timestamp (initial + offset, 90 kHz) is the run's start, modulo 2^33.
    assert round((initial + offset) * 90000) % 2**33 == round(NOW * 90000) % 2**33


# --- probe_upstream -------------------------------------------------------------------------------------------

def test_the_probe_reads_the_document_with_the_upstreams_options(probed: FakeProbe) -> None:
    assert hls_launcher.probe_upstream(settings(), Upstream(BARE_URL, AUTHORIZATION)) == Probe("aac", 3.5, "aac")
    [(arguments, document)] = probed.calls
    assert option(arguments, "-i") == "pipe:0" and option(arguments, "-protocol_whitelist") == "pipe"
    assert not any("s3cret" in argument or "joy.example" in argument for argument in arguments)
    url, options = read_document(document)
    assert url == BARE_URL
    assert options["headers"] == f"Authorization: {AUTHORIZATION}" and options["max_redirects"] == "0"
    assert options["protocol_whitelist"] == "http,https,tcp,tls"
    assert options["formatprobesize"] == "32768"  # an MP3 upstream is recognised in 32 KiB, not 128
    assert (options["probesize"], options["analyzeduration"]) == ("65536", "1000000")


def test_probe_errors_are_launch_errors_without_secrets(probed: FakeProbe) -> None:
    upstream = Upstream("http://joy.example:8000/live.mp3?token=t0ken", AUTHORIZATION)
    probed.failure = ProbeFailed(b"[concat @ 0x1] Impossible to open 'http://joy.example:8000/live.mp3?token=t0ken'\n"
                                 b"pipe:0: Connection refused\n", has_audio_stream=False)
    with pytest.raises(LaunchError) as caught:
        hls_launcher.probe_upstream(settings(), upstream)
    assert str(caught.value) == "cannot probe http://***@joy.example:8000/live.mp3: Connection refused"

    probed.failure = ProbeFailed(b"http://joy.example:8000/live.mp3?token=t0ken: Server returned 404 Not Found"
                                 b"\x1b[2J\n", has_audio_stream=False)
    with pytest.raises(LaunchError) as caught:
        hls_launcher.probe_upstream(settings(), upstream)
    assert str(caught.value) == ("cannot probe http://***@joy.example:8000/live.mp3: "
                                 "http://joy.example:8000/live.mp3?*** Server returned 404 Not Found?[2J")

    probed.failure = ProbeFailed(b"Stream map '0:a:0' matches no streams.\nTo ignore this, add a trailing '?' to "
                                 b"the map.\n", has_audio_stream=False)
    with pytest.raises(LaunchError, match=r"^http://\*\*\*@joy\.example:8000/live\.mp3 has no audio stream$"):
        hls_launcher.probe_upstream(settings(), upstream)


# --- hand_over ---------------------------------------------------------------------------------------------

def test_hand_over_puts_the_document_on_stdin(execs: list[Exec]) -> None:
    document = "ffconcat version 1.0\nfile 'http://joy.example/" + "x" * 70000 + "'\n"  # more than a pipe holds
    hls_launcher.hand_over(document)
    hls_launcher.os.execvp("ffmpeg", ["ffmpeg"])
    assert execs[0].stdin == document


# --- prepare_directories -------------------------------------------------------------------------------

def test_prepare_directories_deletes_tmp_only(tmp_path: Path) -> None:
    names = ["1700000000123.csv", "1700000000123.csv.tmp", "1700000000123-5.ts", "1700000000123-6.ts.tmp",
             "notes.tmpx", "tmp", "a.TMP"]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.tmp").write_text("x")
    prepare_directories(tmp_path, run_of())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["1700000000123.csv", "1700000000123-5.ts", "notes.tmpx", "tmp", "a.TMP", "sub"])
    assert (tmp_path / "sub" / "deep.tmp").exists()


def test_prepare_directories_makes_each_renditions_and_cleans_it(tmp_path: Path) -> None:
    run = Run.begin(NOW, 6, "copy", None, NOW, variants=settings(HLS_VARIANTS="low:48k,mid:64k").variants)
    (tmp_path / "low").mkdir()
    (tmp_path / "low" / "1700000000123.csv.tmp").write_text("x")
    (tmp_path / "low" / "1700000000123-1.ts").write_text("x")
    prepare_directories(tmp_path, run)
    assert sorted(p.name for p in (tmp_path / "low").iterdir()) == ["1700000000123-1.ts"]
    assert (tmp_path / "mid").is_dir()


# --- main --------------------------------------------------------------------------------------------------

def write_env(path: Path, url: str = BASE["HLS_STREAM_URL"], **settings_values: str) -> Path:
    """An env file exactly as hls-sync writes it."""
    path.write_text(station_env(Station("radio-joy", url, 'Radio "Joy"', 3), settings_values), encoding="utf-8")
    return path


def test_main_dry_run_prints_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, no_probe: None) -> None:
    monkeypatch.setattr(hls_launcher.time, "time", lambda: NOW)
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy", HLS_SEGMENT_SECONDS="4")
    output = tmp_path / "out"
    assert hls_launcher.main([str(env_file), "--output-dir", str(output), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    printed = shlex.split(out)
    assert printed == build_command(settings(HLS_CODEC="copy", HLS_SEGMENT_SECONDS="4"), output,
                                    run_of(segment_seconds=4))
    assert option(printed, "-c:a") == "copy"
    assert err == ("hls-launcher: radio-joy: upstream http://***@joy.example:8000/live.mp3 codec unknown (not probed), "
                   "mode copy\n")
    assert "s3cret" not in err


def test_main_dry_run_uses_runtime_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, no_probe: None) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "runtime"))
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="transcode")
    assert hls_launcher.main([str(env_file), "--dry-run"]) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed[-1].startswith(f"{tmp_path}/runtime/") and printed[-1].endswith("-%d.ts")
    assert option(printed, "-c:a") == "aac"


def test_main_auto_probes_and_picks_the_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             probed: FakeProbe) -> None:
    probed.probe = Probe("mp3", 4.0)
    env_file = write_env(tmp_path / "radio-joy.env")
    assert hls_launcher.main([str(env_file), "--output-dir", str(tmp_path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert option(shlex.split(out), "-c:a") == "aac"
    assert "codec mp3 (probed), mode transcode" in err
    assert probed.with_burst == [False]  # a dry run starts nothing: the codec is all it needs


def test_main_probes_a_restart_only_for_its_codec(tmp_path: Path, probed: FakeProbe, execs: list[Exec]) -> None:
    run_of(start=NOW - 100).write(tmp_path)  # the last run: its list measures the burst
    hls_launcher.main([str(write_env(tmp_path / "radio-joy.env")), "--output-dir", str(tmp_path)])
    assert probed.with_burst == [False] and len(execs) == 1


def start(tmp_path: Path, *extra: str, **env: str) -> int:
    """One start of radio-joy as hls@.service runs it: its output and state directories in tmp_path."""
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "state").mkdir(exist_ok=True)
    return hls_launcher.main([str(write_env(tmp_path / "radio-joy.env", **env)), "--output-dir", str(tmp_path / "out"),
                              "--state-dir", str(tmp_path / "state"), *extra])


def test_a_first_run_records_the_probes_facts_without_the_url(tmp_path: Path, probed: FakeProbe,
                                                               execs: list[Exec]) -> None:
    probed.probe = Probe("aac", 4.25, "aac")
    start(tmp_path)
    recorded = tmp_path / "state" / "radio-joy.json"
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o600
    found = json.loads(recorded.read_text())
    assert (found["input_format"], found["burst"]) == ("aac", 4.25)
    assert "joy.example" not in recorded.read_text() and "s3cret" not in recorded.read_text()


def test_a_first_run_after_a_reboot_goes_by_the_last_probes_facts(tmp_path: Path, probed: FakeProbe,
                                                                  execs: list[Exec],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    probed.probe = Probe("mp3", 4.25, "mp3")
    start(tmp_path)
    shutil.rmtree(tmp_path / "out")  # the reboot: the output directory is gone, the state directory stays
    later = NOW + 30 * 86400
    monkeypatch.setattr(hls_launcher.time, "time", lambda: later)
    start(tmp_path)
    assert len(probed.calls) == 1 and len(execs) == 2
    run = read_run(tmp_path / "out")
    assert run is not None and run.mode == "transcode" and run.upstream_codec == "mp3"
    assert run.start == pytest.approx(later - 4.25, abs=0.002)  # early by the recorded burst


def test_a_restart_goes_by_the_facts_and_holds_ffmpeg_to_their_format(tmp_path: Path, probed: FakeProbe,
                                                                      execs: list[Exec],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for offset in (0, 100):
        monkeypatch.setattr(hls_launcher.time, "time", lambda offset=offset: NOW + offset)
        start(tmp_path)
    assert probed.with_burst == [True]
    assert [read_document(done.stdin)[1]["format_whitelist"] for done in execs] == ["aac", "aac"]


def test_the_stations_ffmpeg_waits_for_full_reads_of_its_upstream_and_the_probe_does_not(
        tmp_path: Path, probed: FakeProbe, execs: list[Exec]) -> None:
    """--upstream-wake-bytes (hls@.service with the FFmpeg build) reaches FFmpeg's http as recv_low_water; the probe,
    which times the upstream's burst as it arrives, reads as before, and so does a launcher without the option."""
    start(tmp_path, "--upstream-wake-bytes", "8192")
    [(_, probe_document)] = probed.calls
    assert "recv_low_water" not in read_document(probe_document)[1]
    assert read_document(execs[-1].stdin)[1]["recv_low_water"] == "8192"
    start(tmp_path)
    assert "recv_low_water" not in read_document(execs[-1].stdin)[1]


def test_an_upstream_whose_format_does_not_decide_the_codec_is_probed_at_every_start(
        tmp_path: Path, probed: FakeProbe, execs: list[Exec], monkeypatch: pytest.MonkeyPatch) -> None:
    probed.probe = Probe("aac", 1.0, "mpegts")  # MPEG-TS may carry MP3 just as well
    for offset in (0, 100, 200):
        monkeypatch.setattr(hls_launcher.time, "time", lambda offset=offset: NOW + offset)
        start(tmp_path)
    assert probed.with_burst == [True, False, False]
    assert not (tmp_path / "state" / "radio-joy.json").exists()
    assert all("format_whitelist" not in read_document(done.stdin)[1] for done in execs)


@pytest.mark.parametrize("recorded", [
    "not json", "[]", '{"codec": "aac"}',
    '{"url_digest": "0", "input_format": "aac", "burst": 1.0, "measured_at": 1}',  # another URL's
    # this URL's, in a format that cannot be held to
    f'{{"url_digest": "{url_digest(BASE["HLS_STREAM_URL"])}", "input_format": "ogg", "burst": 1.0, "measured_at": 1}}',
])
def test_facts_that_do_not_hold_are_probed_again(tmp_path: Path, probed: FakeProbe, execs: list[Exec],
                                                 recorded: str) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "radio-joy.json").write_text(recorded)
    start(tmp_path)
    assert probed.with_burst == [True]
    assert json.loads((tmp_path / "state" / "radio-joy.json").read_text())["input_format"] == "aac"


def test_facts_of_another_url_or_after_a_failed_start_are_probed_again(tmp_path: Path, probed: FakeProbe,
                                                                        execs: list[Exec],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hls_launcher.time, "sleep", lambda seconds: None)
    other = "http://joy.example:8000/other.aac"
    for offset, url, probes in ((0, BASE["HLS_STREAM_URL"], 1), (100, other, 2), (200, other, 2),
                                (205, other, 3),  # the run before lasted 5 s: a failed start
                                (300, other, 3)):
        monkeypatch.setattr(hls_launcher.time, "time", lambda offset=offset: NOW + offset)
        start(tmp_path, url=url)
        assert len(probed.calls) == probes, f"{offset} s"
    assert len(execs) == 5


def test_main_missing_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_probe: None) -> None:
    missing = tmp_path / "nope.env"
    assert hls_launcher.main([str(missing), "--output-dir", str(tmp_path), "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"hls-launcher: {missing}: the file does not exist\n"


def test_main_unreadable_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, no_probe: None) -> None:
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")
    env_file.chmod(0)
    if os.geteuid() == 0:  # root reads a mode-0 file anyway: make the open fail as it would for the hls user
        import dotenv.main

        real_open = open

        def denying_open(file: object, *args: object, **kwargs: object) -> object:
            if Path(str(file)) == env_file:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(dotenv.main, "open", denying_open, raising=False)
    assert hls_launcher.main([str(env_file), "--output-dir", str(tmp_path), "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"hls-launcher: {env_file}: cannot read it: Permission denied\n"


def test_main_invalid_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_probe: None) -> None:
    env_file = tmp_path / "radio-joy.env"
    env_file.write_text('HLS_STATION_SLUG="radio-joy"\nHLS_STREAM_URL="file:///etc/passwd"\n')
    assert hls_launcher.main([str(env_file), "--output-dir", str(tmp_path), "--dry-run"]) == 1
    assert capsys.readouterr().err == (
        f"hls-launcher: {env_file}: stream_url scheme 'file' is not http or https\n")


def test_main_without_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch, no_probe: None) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")
    assert hls_launcher.main([str(env_file), "--dry-run"]) == 1
    assert "no output directory: pass --output-dir or run under systemd" in capsys.readouterr().err


def test_main_execs_ffmpeg_after_removing_partial_segments(tmp_path: Path, probed: FakeProbe,
                                                           execs: list[Exec]) -> None:
    (tmp_path / "1-1.ts.tmp").write_text("half")
    (tmp_path / "1-0.ts").write_text("whole")
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")
    hls_launcher.main([str(env_file), "--output-dir", str(tmp_path)])
    [done] = execs
    assert done.file == "ffmpeg" and done.args[0] == "ffmpeg"
    assert option(done.args, "-i") == "pipe:0"
    assert read_document(done.stdin)[0] == "http://joy.example:8000/live.mp3"
    assert read_document(done.stdin)[1]["headers"] == f"Authorization: {AUTHORIZATION}"
    assert not (tmp_path / "1-1.ts.tmp").exists() and (tmp_path / "1-0.ts").exists()


def test_backoff_grows_after_short_runs_and_resets_after_a_healthy_one(tmp_path: Path) -> None:
    # Each failed start runs briefly; the wait before the next one doubles up to the maximum.
    now, delays = 1000.0, []
    for _ in range(6):
        delay = hls_launcher.backoff_seconds(tmp_path, now, maximum=8)
        delays.append(delay)
        now += delay + 3  # the start fails 3 s after FFmpeg began
    assert delays == [0, 1, 2, 4, 8, 8]
    # A run longer than HEALTHY_RUN_SECONDS counts as healthy: no wait next time.
    assert hls_launcher.backoff_seconds(tmp_path, now + hls_launcher.HEALTHY_RUN_SECONDS, maximum=8) == 0


def test_backoff_survives_a_damaged_state_file(tmp_path: Path) -> None:
    (tmp_path / hls_launcher.BACKOFF_FILE).write_text("{not json", encoding="utf-8")
    assert hls_launcher.backoff_seconds(tmp_path, 50.0, maximum=60) == 0
    assert hls_launcher.backoff_seconds(tmp_path, 51.0, maximum=60) == 1


def test_no_in_stream_reconnect() -> None:
    # A silent upstream must end FFmpeg (systemd restarts it and the codec is probed again).
    settings = StationSettings(slug="joy", stream_url="http://joy.example/s")
    assert "-reconnect_streamed" not in build_command(settings, Path("/run/hls/joy"), run_of())


def test_a_full_log_does_not_stop_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    class FullDisk:
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(hls_launcher.sys, "stderr", FullDisk())
    hls_launcher.say("still here")  # must not raise


def test_backoff_without_a_writable_state_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone"  # e.g. a full or vanished output directory
    assert hls_launcher.backoff_seconds(missing, 10.0, maximum=60) == 0


# --- launch info -------------------------------------------------------------------------------------------

def test_main_records_the_codec_and_mode_before_exec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     probed: FakeProbe) -> None:
    probed.probe = Probe("mp3", 3.5)
    monkeypatch.setattr(hls_launcher.time, "time", lambda: NOW)
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(hls_launcher.os, "execvp", lambda file, args: seen.append(
        json.loads((tmp_path / ".launch.json").read_text())))
    hls_launcher.main([str(write_env(tmp_path / "radio-joy.env")), "--output-dir", str(tmp_path)])
    # A first run: early by the burst the probe measured, so that it is on the clock once its burst is in.
    assert probed.with_burst == [True]
    assert seen == [{"run": 1_699_999_996_623, "start": 1_699_999_996.623, "base": 1_699_999_992,
                     "segment_seconds": 6, "mode": "transcode", "upstream_codec": "mp3", "started_at": NOW,
                     "skip": 0.0, "variants": []}]
    info = tmp_path / ".launch.json"
    assert stat.S_IMODE(info.stat().st_mode) == 0o644  # the status programs run as other users
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_main_records_an_unprobed_codec_as_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                no_probe: None) -> None:
    # A set codec and a run before this one (its burst known): nothing to probe.
    run_of(start=NOW - 100).write(tmp_path)
    monkeypatch.setattr(hls_launcher.os, "execvp", lambda file, args: None)
    hls_launcher.main([str(write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")), "--output-dir", str(tmp_path)])
    info = json.loads((tmp_path / ".launch.json").read_text())
    assert (info["upstream_codec"], info["mode"]) == (None, "copy")


def test_dry_run_records_nothing(tmp_path: Path, no_probe: None, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")
    output = tmp_path / "out"
    output.mkdir()
    assert hls_launcher.main([str(env_file), "--output-dir", str(output), "--dry-run"]) == 0
    assert list(output.iterdir()) == []


def test_a_full_output_filesystem_does_not_stop_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], no_probe: None) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    run_of(start=NOW - 100).write(tmp_path)  # not a first run: nothing to probe
    monkeypatch.setattr(Run, "write", full)
    execs: list[str] = []
    monkeypatch.setattr(hls_launcher.os, "execvp", lambda file, args: execs.append(file))
    hls_launcher.main([str(write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")), "--output-dir", str(tmp_path)])
    assert execs == ["ffmpeg"]
    assert "cannot record the run" in capsys.readouterr().err


# --- refused settings back off too -------------------------------------------------------------------------

class FakeClock:
    """time.time and time.sleep of the launcher: sleeping moves the clock on, and records how long."""

    def __init__(self, now: float = NOW) -> None:
        self.now, self.sleeps = now, []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("bad_setting", "ceiling"), [
    ({"HLS_SEGMENT_SECONDS": "61"}, {"HLS_RESTART_MAX_SECONDS": "4"}),
    ({"HLS_CODEC": "bogus"}, {"HLS_RESTART_MAX_SECONDS": "4"}),
    ({"HLS_RESTART_MAX_SECONDS": "0"}, {}),  # refused itself: the default ceiling (60 s) holds
])
def test_a_refused_setting_waits_out_the_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], no_probe: None,
                                                 bad_setting: dict[str, str], ceiling: dict[str, str]) -> None:
    clock = FakeClock()
    monkeypatch.setattr(hls_launcher.time, "time", clock.time)
    monkeypatch.setattr(hls_launcher.time, "sleep", clock.sleep)
    monkeypatch.setattr(hls_launcher.os, "execvp", lambda file, args: pytest.fail("FFmpeg started"))
    env_file = write_env(tmp_path / "radio-joy.env", **bad_setting, **ceiling)
    output = tmp_path / "out"
    output.mkdir()
    for _ in range(9):  # systemd starts it again RestartSec (1 s) after each exit
        assert hls_launcher.main([str(env_file), "--output-dir", str(output)]) == 1
        clock.now += 1
    limit = int(ceiling.get("HLS_RESTART_MAX_SECONDS", "60"))
    assert clock.sleeps == [min(limit, 2 ** n) for n in range(8)]
    err = capsys.readouterr().err
    assert "radio-joy: the last start failed; waiting 1 s" in err
    assert f"{next(iter(bad_setting))}=" in err


def test_an_unreadable_env_file_waits_out_the_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      no_probe: None) -> None:
    clock = FakeClock()
    monkeypatch.setattr(hls_launcher.time, "time", clock.time)
    monkeypatch.setattr(hls_launcher.time, "sleep", clock.sleep)
    for _ in range(3):
        assert hls_launcher.main([str(tmp_path / "gone.env"), "--output-dir", str(tmp_path)]) == 1
    assert clock.sleeps == [1, 2]


def role_assert_bounds() -> dict[str, tuple[int, int]]:
    """(lowest, highest) that roles/hls/tasks/assert.yml accepts for each `hls_<name> | int` it bounds."""
    text = (Path(__file__).resolve().parents[2] / "roles/hls/tasks/assert.yml").read_text(encoding="utf-8")
    found: dict[str, dict[str, int]] = {}
    for name, operator, value in re.findall(r"- (hls_[a-z_]+) \| int (>=|<=) ([0-9]+)$", text, re.MULTILINE):
        found.setdefault(name, {})[operator] = int(value)
    return {name: (bounds.get(">=", -1), bounds.get("<=", -1)) for name, bounds in found.items()}


def test_the_role_checks_the_launchers_bounds() -> None:
    # A deployment must refuse what every station's launcher would refuse, instead of writing it to every env file.
    bounds = role_assert_bounds()
    for key, (_default, low, high) in hls_launcher.NUMBER_SETTINGS.items():
        assert bounds.get(key.lower()) == (low, high), key


@pytest.mark.parametrize(("variables", "accepted"), [
    ({"hls_window_minutes": 120, "hls_segment_seconds": 60, "hls_stall_seconds": 3600,
      "hls_health_max_playlist_age": 3600}, True),
    ({"hls_window_minutes": 121}, False),
    ({"hls_read_timeout_seconds": "7.5"}, False),
])
def test_the_role_refuses_what_the_launcher_refuses(tmp_path: Path, variables: dict[str, object],
                                                    accepted: bool) -> None:
    from test_role_input import check_input

    result = check_input(tmp_path, "hls", variables)
    assert (result.returncode == 0) == accepted, result.stdout
    if not accepted:
        assert "the stream settings are out of range" in result.stdout, result.stdout


# --- where a station URL with credentials leads: real redirects on loopback ---------------------------------

class Hop(ThreadingHTTPServer):
    """One origin (127.0.0.1:<port>) that answers by path and records every request's Authorization header."""

    daemon_threads = True

    def __init__(self, log: list[tuple[str, str, str | None]]) -> None:
        super().__init__(("127.0.0.1", 0), HopHandler)
        self.log = log
        self.redirects: dict[str, str] = {}

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class HopHandler(BaseHTTPRequestHandler):
    server: Hop

    def do_GET(self) -> None:
        self.server.log.append((f"{self.server.origin}{self.path}", self.headers.get("Authorization"),
                                self.headers.get("User-Agent")))
        if self.path in self.server.redirects:
            self.send_response(302)
            self.send_header("Location", self.server.redirects[self.path])
            self.end_headers()
        elif self.path.startswith("/live"):
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.end_headers()
            self.wfile.write(b"\xff\xfb" * 512)  # the client closes after the headers
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@dataclass
class Hops:
    """Two origins: `home`, which the station's credentials are for, and `elsewhere` (another port)."""

    home: Hop
    elsewhere: Hop
    log: list[tuple[str, str | None, str | None]]

    def station_url(self, path: str) -> str:
        return self.home.origin.replace("http://", "http://user:s3cret@") + path

    def authorizations(self) -> list[tuple[str, str | None]]:
        return [(url, authorization) for url, authorization, _ in self.log]


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hops]:
    monkeypatch.setattr(hls_upstream, "open_upstream", real_open_upstream)  # the real one, for these tests
    log: list[tuple[str, str | None, str | None]] = []
    servers = Hops(Hop(log), Hop(log), log)
    threads = [threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
               for server in (servers.home, servers.elsewhere)]
    for thread in threads:
        thread.start()
    yield servers
    for server in (servers.home, servers.elsewhere):
        server.shutdown()
        server.server_close()


def resolve(url: str) -> Upstream:
    return hls_launcher.resolve_upstream(settings(HLS_STREAM_URL=url, HLS_READ_TIMEOUT_SECONDS="30"))


def test_credentials_follow_a_redirect_on_their_origin(hops: Hops) -> None:
    hops.home.redirects["/old"] = "/live?moved=1"
    upstream = resolve(hops.station_url("/old"))
    assert upstream == Upstream(f"{hops.home.origin}/live?moved=1", AUTHORIZATION)
    assert hops.authorizations() == [(f"{hops.home.origin}/old", AUTHORIZATION),
                                     (f"{hops.home.origin}/live?moved=1", AUTHORIZATION)]
    assert {user_agent for _, _, user_agent in hops.log} == {"radio-hls/1.0"}


def test_credentials_never_reach_another_origin(hops: Hops, capsys: pytest.CaptureFixture[str]) -> None:
    hops.home.redirects["/moved"] = f"{hops.elsewhere.origin}/live?token=t0ken"
    upstream = resolve(hops.station_url("/moved"))
    # FFmpeg opens the final URL without credentials (and, having none, may follow redirects itself).
    assert upstream == Upstream(f"{hops.elsewhere.origin}/live?token=t0ken", None)
    assert hops.authorizations() == [(f"{hops.home.origin}/moved", AUTHORIZATION),
                                     (f"{hops.elsewhere.origin}/live?token=t0ken", None)]
    err = capsys.readouterr().err
    assert f"redirects to {hops.elsewhere.origin}/live?***, another origin: the credentials are not sent there" in err
    assert "s3cret" not in err and "t0ken" not in err


def test_another_host_name_for_the_same_address_is_another_origin(hops: Hops) -> None:
    port = hops.home.server_port
    hops.home.redirects["/by-name"] = f"http://localhost:{port}/live"
    assert resolve(hops.station_url("/by-name")) == Upstream(f"http://localhost:{port}/live", None)
    assert hops.authorizations()[-1] == (f"{hops.home.origin}/live", None)  # the same server, asked by another name


def test_credentials_come_back_when_a_redirect_returns_to_their_origin(hops: Hops) -> None:
    hops.home.redirects["/away"] = f"{hops.elsewhere.origin}/back"
    hops.elsewhere.redirects["/back"] = f"{hops.home.origin}/live"
    assert resolve(hops.station_url("/away")) == Upstream(f"{hops.home.origin}/live", AUTHORIZATION)
    assert hops.authorizations() == [(f"{hops.home.origin}/away", AUTHORIZATION),
                                     (f"{hops.elsewhere.origin}/back", None),
                                     (f"{hops.home.origin}/live", AUTHORIZATION)]


def test_credentials_in_a_location_are_not_used(hops: Hops) -> None:
    hops.home.redirects["/creds"] = hops.elsewhere.origin.replace("http://", "http://other:pw@") + "/live"
    assert resolve(hops.station_url("/creds")) == Upstream(f"{hops.elsewhere.origin}/live", None)
    assert hops.authorizations()[-1] == (f"{hops.elsewhere.origin}/live", None)


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/x", "file:///etc/passwd", "data:,x"])
def test_a_redirect_off_http_is_refused(hops: Hops, target: str) -> None:
    hops.home.redirects["/off"] = target
    with pytest.raises(LaunchError, match=r"cannot probe http://\*\*\*@127\.0\.0\.1:\d+/off: the upstream answered"
                                          r" 302 .*(scheme other than http or https|is not allowed)"):
        resolve(hops.station_url("/off"))
    assert len(hops.log) == 1


def test_a_redirect_loop_ends(hops: Hops) -> None:
    hops.home.redirects["/loop"] = "/loop"
    with pytest.raises(LaunchError, match="cannot probe .*: the upstream answered 302"):
        resolve(hops.station_url("/loop"))
    assert len(hops.log) <= hls_upstream.MAX_REDIRECTS + 1


def test_an_upstream_error_is_a_launch_error_without_secrets(hops: Hops) -> None:
    with pytest.raises(LaunchError) as caught:
        resolve(hops.station_url("/missing?token=t0ken"))
    assert str(caught.value) == (f"cannot probe http://***@127.0.0.1:{hops.home.server_port}/missing?***: "
                                 "the upstream answered 404 Not Found")


def test_an_upstream_that_refuses_connections_is_a_launch_error(hops: Hops) -> None:
    port = hops.elsewhere.server_port
    hops.elsewhere.shutdown()
    hops.elsewhere.server_close()
    with pytest.raises(LaunchError, match=rf"^cannot probe http://\*\*\*@127\.0\.0\.1:{port}/live: .*refused"):
        resolve(f"http://user:s3cret@127.0.0.1:{port}/live")


def test_no_request_is_made_for_a_url_without_credentials(hops: Hops) -> None:
    hops.home.redirects["/moved"] = f"{hops.elsewhere.origin}/live"
    assert resolve(f"{hops.home.origin}/moved?token=t") == Upstream(f"{hops.home.origin}/moved?token=t")
    assert hops.log == []  # FFmpeg follows it alone: it has no credentials to carry


def test_main_gives_ffmpeg_the_final_url_and_no_credentials_for_another_origin(
        tmp_path: Path, hops: Hops, execs: list[Exec], no_probe: None) -> None:
    hops.home.redirects["/moved"] = f"{hops.elsewhere.origin}/live"
    env_file = write_env(tmp_path / "radio-joy.env", url=hops.station_url("/moved"), HLS_CODEC="copy")
    run_of(start=NOW - 100).write(tmp_path)  # not a first run: nothing to probe
    hls_launcher.main([str(env_file), "--output-dir", str(tmp_path)])
    [done] = execs
    url, options = read_document(done.stdin)
    assert url == f"{hops.elsewhere.origin}/live"
    assert "headers" not in options and "s3cret" not in done.stdin and AUTHORIZATION not in done.stdin


# --- what reaches the station's log --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("[concat @ 0x1] Impossible to open 'http://127.0.0.1:8000/live?token=t0ken'",
     "[concat @ 0x1] Impossible to open 'http://127.0.0.1:8000/live?***"),
    ("http://dj:s3cret@joy.example/x#t0ken and https://joy.example:1/a?t0ken rest",
     "http://***@joy.example/x#*** and https://joy.example:1/a?*** rest"),
    ("Connection to tcp://127.0.0.2:8023 failed: Connection timed out",
     "Connection to tcp://127.0.0.2:8023 failed: Connection timed out"),
    ("http://joy.example/x?mail=a@b.example", "http://joy.example/x?***"),
    ("is this a question? no URL here", "is this a question? no URL here"),
])
def test_redact_urls(text: str, expected: str) -> None:
    assert hls_launcher.redact_urls(text) == expected


FAKE_FFMPEG = """#!/bin/bash
# Prints what FFmpeg prints when a stop interrupts its open: the URL of its input document.
url=$(sed -n "s/^file '\\\\(.*\\\\)'$/\\\\1/p")
echo "fake ffmpeg started, reading $url" >&2
echo "[segment @ 0x55e1] NOTE: the option initial_offset is deprecated,you can use output_ts_offset instead of it" >&2
echo "[mpegts @ 0x55e2] frame size not set" >&2
echo "[mpegts @ 0x55e3] frame size not set, and something else" >&2
trap 'echo "[concat @ 0x1] Impossible to open '"'"'$url'"'"'" >&2
      echo "pipe:0: Immediate exit requested" >&2; exit 255' TERM
sleep 60 & wait
"""


def test_ffmpegs_lines_reach_the_log_without_tokens_even_on_a_stop(tmp_path: Path) -> None:
    # The real exec: hand_over, redact_stderr (sed) and an FFmpeg stand-in, stopped as systemd stops a unit (SIGTERM
    # to every process of the unit at once).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").write_text(FAKE_FFMPEG)
    (bin_dir / "ffmpeg").chmod(0o755)
    env_file = write_env(tmp_path / "radio-joy.env", url="http://127.0.0.1:9/live?token=t0ken", HLS_CODEC="copy")
    (tmp_path / "out").mkdir()
    run_of(start=time.time() - 100).write(tmp_path / "out")  # not a first run: the stand-in is no probe
    log = tmp_path / "radio-joy.log"
    entry_point = Path(sys.executable).with_name("hls-launcher")  # what hls@.service runs
    with log.open("ab") as log_file:
        launcher = subprocess.Popen(
            [str(entry_point), str(env_file), "--output-dir", str(tmp_path / "out")],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True,
            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    try:
        wait_for(lambda: "fake ffmpeg started" in log.read_text(), what="the FFmpeg stand-in to start")
        os.killpg(launcher.pid, signal.SIGTERM)
        assert launcher.wait(PATIENCE) == 255
        text = wait_for(lambda: "Immediate exit requested" in (logged := log.read_text()) and logged,
                        what="FFmpeg's last lines, after sed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
    assert "fake ffmpeg started, reading http://127.0.0.1:9/live?***" in text
    assert "Impossible to open 'http://127.0.0.1:9/live?***" in text
    assert "hls-launcher: radio-joy: upstream http://127.0.0.1:9/live?*** codec unknown (not probed), mode copy" in text
    assert "t0ken" not in text
    # The segment muxer's noise is gone, and only it.
    assert "initial_offset" not in text and "] frame size not set\n" not in text
    assert "[mpegts @ 0x55e3] frame size not set, and something else" in text


# --- the units' firewall -------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
UNITS_THAT_OPEN_STATION_URLS = ("hls@.service.j2", "hls-nowplaying.service.j2")
SANDBOX = REPO / "templates/macros/sandbox.j2"
# What systemd's IPAddressDeny= keywords stand for (systemd.resource-control(5)).
SYSTEMD_KEYWORDS = {"localhost": ("127.0.0.0/8", "::1/128"), "link-local": ("169.254.0.0/16", "fe80::/64"),
                    "multicast": ("224.0.0.0/4", "ff00::/8")}


def test_the_units_deny_every_network_the_sync_refuses() -> None:
    # The sync refuses a URL naming an internal address; the units refuse the same networks whatever a redirect or a
    # DNS answer leads to: both call the sandbox with network 'stations', whose IPAddressDeny= is checked here.
    import ipaddress

    for template in UNITS_THAT_OPEN_STATION_URLS:
        text = (REPO / "templates/etc/systemd/system" / template).read_text(encoding="utf-8")
        assert "{{ sandbox('stations'" in text, template
    stations = SANDBOX.read_text(encoding="utf-8").split("{% if network == 'stations' %}", 1)[1]
    line = next(line for line in stations.splitlines() if line.startswith("IPAddressDeny="))
    items = line.removeprefix("IPAddressDeny=").split()
    denied = [ipaddress.ip_network(network) for item in items for network in SYSTEMD_KEYWORDS.get(item, (item,))]
    for network in hls_station.INTERNAL_NETWORKS:
        assert any(network.subnet_of(wider) for wider in denied if wider.version == network.version), network


@pytest.mark.parametrize(("networks", "accepted"), [
    (["127.0.0.1", "10.20.0.0/16", "fd00::/8"], True),
    (["127.0.0.1\nExecStartPre=/bin/sh -c id"], False),  # would add a line to the unit
    (["127.0.0.1 any"], False),
    (["localhost"], False),
    ("127.0.0.1", False),
])
def test_the_allowed_networks_must_be_addresses(tmp_path: Path, networks: object, accepted: bool) -> None:
    from test_role_input import check_input

    result = check_input(tmp_path, "hls", {"hls_upstream_allowed_networks": networks})
    assert (result.returncode == 0) == accepted, result.stdout
    if not accepted:
        assert "hls_upstream_allowed_networks must be a list of IP addresses" in result.stdout, result.stdout


@pytest.mark.parametrize("ladder", [
    [{"name": "low", "bitrate": "48k"}, {"name": "mid", "bitrate": "64k", "channels": 1, "sample_rate": 22050}],
    [{"name": "master", "bitrate": "48k"}],
    [{"name": "Low", "bitrate": "48k"}],
    [{"name": "low", "bitrate": "8k"}],
    [{"name": "low", "bitrate": "48k", "channels": 3}],
    [{"name": "low", "bitrate": "48k", "sample_rate": 44000}],
    [{"name": "low", "bitrate": "48k"}, {"name": "low", "bitrate": "64k"}],
])
def test_the_role_refuses_the_ladders_the_launcher_refuses(tmp_path: Path, ladder: list[dict[str, object]]) -> None:
    from test_role_input import check_input

    from radio_hls.stations.variants import InvalidVariants, variants_from_objects

    try:
        variants_from_objects(ladder)
        launcher_accepts = True
    except InvalidVariants:
        launcher_accepts = False
    for variables in ({"hls_variants": ladder},
                      {"hls_stations": [{"slug": "joy", "stream_url": "http://joy.example/", "variants": ladder}]}):
        result = check_input(tmp_path, "hls", variables)
        # Later checks (the output's filesystem) depend on the machine: only the ladder's verdict counts here.
        refused = re.search(r"rendition \S+ is invalid|lists the same rendition name", result.stdout) is not None
        assert refused != launcher_accepts and (refused <= (result.returncode != 0)), result.stdout


def test_the_encoder_gets_its_audio_in_batches_when_transcoding(tmp_path: Path) -> None:
    station = settings(HLS_VARIANTS="low:48k:1:22050")
    run = Run.begin(NOW, 6, "transcode", "mp3", NOW, variants=station.variants)
    for output in outputs_of(build_command(station, tmp_path, run)):  # the station's and each rendition's
        assert option(output, "-af") == "asetnsamples=n=16384:p=0"
    copy = Run.begin(NOW, 6, "copy", "aac", NOW)
    assert "-af" not in build_command(settings(), tmp_path, copy)  # FFmpeg refuses a filter on a copied stream


def test_batching_leaves_the_segments_byte_for_byte_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tone = tmp_path / "tone.mp3"
    # 20 s: not a whole number of batches, so the last one is short (and must not be padded).
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:duration=20",
                    "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k", str(tone)], check=True)
    document = f"ffconcat version 1.0\nfile 'file:{tone}'\noption protocol_whitelist file\n"

    def segments(batch: int) -> dict[str, bytes]:
        monkeypatch.setattr(hls_launcher, "ENCODE_BATCH_SAMPLES", batch)
        directory = tmp_path / str(batch)
        directory.mkdir()
        command = build_command(settings(HLS_AAC_BITRATE="96k"), directory, run_of("transcode"))
        subprocess.run(command, input=document.encode(), check=True, capture_output=True)
        return {path.name: path.read_bytes() for path in directory.iterdir()}

    batched = segments(hls_launcher.ENCODE_BATCH_SAMPLES)
    one_frame = segments(1024)  # what the encoder takes at a time anyway: no batching
    assert len(one_frame) == 5  # 4 segments and their list
    assert batched == one_frame


# --- the filter of FFmpeg's standard error (REDACT_AWK) ---------------------------------------------------------

def filtered(data: bytes, locale: str = "C.UTF-8") -> bytes:
    """What the filter redact_stderr runs writes for `data`, in the given locale."""
    return subprocess.run(hls_launcher.REDACT_AWK, input=data, capture_output=True, check=True, timeout=PATIENCE,
                          env={**os.environ, "LC_ALL": locale}).stdout


def test_the_log_filter_redacts_as_the_launcher_redacts_its_own_lines() -> None:
    # Lines made of what the patterns turn on, in every order up to the length that covers each case (a URL's
    # userinfo, query, fragment, several URLs, separators between them); the launcher's redact_urls is the reference.
    import random

    pieces = ["a", ":", "/", "@", "?", "#", " ", "\t", "://", "é"]
    rng = random.Random(15)
    lines = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 14))) for _ in range(5000)]
    lines += ["[concat @ 0x1] Impossible to open 'http://dj:s3cret@127.0.0.1:8000/live?token=t0ken'",
              "[mpegts @ 0x55e3] frame size not set, and something else"]
    expected = "".join(f"{hls_launcher.redact_urls(line)}\n" for line in lines)
    assert filtered("".join(f"{line}\n" for line in lines).encode()).decode() == expected


def test_the_log_filter_drops_the_segment_muxers_noise_and_only_it() -> None:
    noise = (b"[segment @ 0x55e1] NOTE: the option initial_offset is deprecated,you can use output_ts_offset instead\n"
             b"[mpegts @ 0x55e2] frame size not set\n    Last message repeated 2 times\n")
    kept = (b"[mpegts @ 0x55e3] frame size not set, and something else\n[mpegts @ 0x55e4] frame size not set \n"
            b"    Last message repeated 1 times\n")  # a line that is kept keeps its repeat count too
    assert filtered(noise + kept + noise) == kept


@pytest.mark.parametrize("locale", ["C", "C.UTF-8"])
def test_the_log_filter_redacts_urls_that_are_not_utf8(locale: str) -> None:
    # FFmpeg prints an upstream's URL as it got it; GNU sed in a UTF-8 locale matched no [^...] across a byte that
    # is not UTF-8, and let such a URL's token through.
    line = b"[concat @ 0x1] Impossible to open 'http://d\xffj:s3cret@joy.example/x?t\xff0ken' and http://j/?\xfft0ken\n"
    assert filtered(line, locale) == b"[concat @ 0x1] Impossible to open 'http://***@joy.example/x?*** and http://j/?***\n"
