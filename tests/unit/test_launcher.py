"""Tests of files/scripts/hls_launcher.py: settings from the env file, the FFmpeg command, and main()."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from pathlib import Path

import pytest

import hls_launcher
from hls_launcher import (
    GLOBAL_OPTIONS,
    LaunchError,
    StationSettings,
    build_command,
    choose_mode,
    remove_partial_segments,
    start_number,
)
from hls_station import Station, station_env

NOW = 1_700_000_000.123
OUTPUT = Path("/run/hls/radio-joy")
BASE = {"HLS_STATION_SLUG": "radio-joy", "HLS_STREAM_URL": "http://user:s3cret@joy.example:8000/live.mp3"}


def settings(**overrides: str) -> StationSettings:
    return StationSettings.from_env({**BASE, **overrides})


def option(command: list[str], name: str) -> str:
    """The value following `name` (which must appear exactly once)."""
    assert command.count(name) == 1, f"{name} appears {command.count(name)} times in {command}"
    return command[command.index(name) + 1]


@pytest.fixture
def no_ffprobe(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may probe a real upstream."""
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("ffmpeg.probe called")

    monkeypatch.setattr(hls_launcher.ffmpeg, "probe", forbidden)


# --- StationSettings.from_env ------------------------------------------------------------------------------

def test_from_env_defaults() -> None:
    assert settings() == StationSettings(slug="radio-joy", stream_url=BASE["HLS_STREAM_URL"], segment_seconds=6,
                                         playlist_size=10, aac_bitrate="128k", codec="auto",
                                         read_timeout_seconds=15, aac_coder="fast")


def test_from_env_values() -> None:
    got = settings(HLS_SEGMENT_SECONDS="4", HLS_PLAYLIST_SIZE="5", HLS_AAC_BITRATE="96k", HLS_CODEC="transcode",
                   HLS_READ_TIMEOUT_SECONDS="30", HLS_AAC_CODER="twoloop")
    assert (got.segment_seconds, got.playlist_size, got.aac_bitrate, got.codec, got.read_timeout_seconds,
            got.aac_coder) == (4, 5, "96k", "transcode", 30, "twoloop")


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
    ({"HLS_PLAYLIST_SIZE": "2"}, "HLS_PLAYLIST_SIZE='2' is not a whole number from 3 to 100"),
    ({"HLS_READ_TIMEOUT_SECONDS": "601"}, "HLS_READ_TIMEOUT_SECONDS='601' is not a whole number from 1 to 600"),
])
def test_from_env_refuses(overrides: dict[str, str | None], message: str) -> None:
    with pytest.raises(LaunchError) as caught:
        StationSettings.from_env({**BASE, **overrides})
    assert message in str(caught.value)


def test_from_env_refuses_unicode_digits() -> None:
    with pytest.raises(LaunchError, match="HLS_SEGMENT_SECONDS"):
        settings(HLS_SEGMENT_SECONDS="²")


# --- choose_mode, start_number -----------------------------------------------------------------------------

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


def test_start_number(tmp_path: Path) -> None:
    assert start_number(tmp_path, NOW) == 1_700_000_000
    (tmp_path / "index.m3u8").write_text("#EXTM3U\n")
    assert start_number(tmp_path, NOW) is None


# --- build_command -----------------------------------------------------------------------------------------

def test_global_and_input_options_come_before_the_input() -> None:
    command = build_command(settings(), OUTPUT, "copy", NOW)
    first_input = command.index("-i")
    assert command[0] == "ffmpeg"
    assert command[1 : 1 + len(GLOBAL_OPTIONS)] == list(GLOBAL_OPTIONS)
    assert command.index("-nostdin") < first_input
    assert command.index("-loglevel") < first_input and option(command, "-loglevel") == "warning"
    assert option(command, "-protocol_whitelist") == "http,https,tcp,tls"
    assert command.index("-protocol_whitelist") < first_input
    assert command.count("-i") == 1
    # Credentials travel in a header, never in the URL that FFmpeg prints in its errors.
    assert option(command, "-i") == "http://joy.example:8000/live.mp3"
    assert option(command, "-headers") == "Authorization: Basic dXNlcjpzM2NyZXQ=\r\n"  # user:s3cret
    assert command.index("-headers") < first_input
    assert not any("s3cret" in argument for argument in command)
    for name, value in [("-reconnect", "1"), ("-reconnect_on_network_error", "1"),
                        ("-reconnect_delay_max", "10"), ("-rw_timeout", "15000000"),
                        ("-user_agent", "radio-hls/1.0"), ("-formatprobesize", "32768")]:
        assert option(command, name) == value
        assert command.index(name) < first_input, name


def test_rw_timeout_is_in_microseconds() -> None:
    command = build_command(settings(HLS_READ_TIMEOUT_SECONDS="7"), OUTPUT, "copy", NOW)
    assert option(command, "-rw_timeout") == "7000000"


def test_copy_mode() -> None:
    command = build_command(settings(), OUTPUT, "copy", NOW)
    assert option(command, "-c:a") == "copy"
    assert "-b:a" not in command and "-profile:a" not in command and "-aac_coder" not in command


def test_transcode_mode() -> None:
    command = build_command(settings(HLS_AAC_BITRATE="96k"), OUTPUT, "transcode", NOW)
    assert option(command, "-c:a") == "aac"
    assert option(command, "-profile:a") == "aac_low"
    assert option(command, "-b:a") == "96k"
    assert option(command, "-aac_coder") == "fast"
    assert command.index("-i") < command.index("-aac_coder")
    assert option(build_command(settings(HLS_AAC_CODER="twoloop"), OUTPUT, "transcode", NOW), "-aac_coder") == "twoloop"


def test_hls_output_options(tmp_path: Path) -> None:
    command = build_command(settings(HLS_SEGMENT_SECONDS="4", HLS_PLAYLIST_SIZE="8"), tmp_path, "copy", NOW)
    assert set(option(command, "-hls_flags").split("+")) == {"delete_segments", "append_list", "omit_endlist",
                                                             "temp_file"}
    assert option(command, "-f") == "hls"
    assert option(command, "-map") == "0:a:0"
    assert option(command, "-hls_time") == "4"
    assert option(command, "-hls_list_size") == "8"
    assert option(command, "-hls_segment_type") == "mpegts"
    assert option(command, "-hls_segment_filename") == f"{tmp_path}/1700000000123-%d.ts"
    assert command[-1] == f"{tmp_path}/index.m3u8"
    # every output option sits between the input and the playlist
    for name in ("-c:a", "-f", "-hls_flags", "-hls_segment_filename", "-map", "-start_number"):
        assert command.index("-i") < command.index(name) < len(command) - 1, name


def test_start_number_passed_only_without_a_playlist(tmp_path: Path) -> None:
    command = build_command(settings(), tmp_path, "copy", NOW)
    assert option(command, "-start_number") == "1700000000"

    (tmp_path / "index.m3u8").write_text("#EXTM3U\n")
    command = build_command(settings(), tmp_path, "copy", NOW + 5)
    assert "-start_number" not in command
    assert option(command, "-hls_segment_filename") == f"{tmp_path}/1700000005123-%d.ts"


# --- probe_codec -------------------------------------------------------------------------------------------

def test_probe_codec_reads_the_first_audio_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_probe(url: str, **kwargs: object) -> dict:
        seen.update(kwargs, url=url)
        return {"streams": [{"codec_name": "aac"}, {"codec_name": "mp3"}]}

    monkeypatch.setattr(hls_launcher.ffmpeg, "probe", fake_probe)
    assert hls_launcher.probe_codec(settings()) == "aac"
    assert seen["url"] == "http://joy.example:8000/live.mp3"
    assert seen["headers"] == "Authorization: Basic dXNlcjpzM2NyZXQ=\r\n"
    assert seen["protocol_whitelist"] == "http,https,tcp,tls"
    assert seen["select_streams"] == "a:0"
    assert seen["formatprobesize"] == 32768  # an MP3 upstream is recognised in 32 KiB, not 128


def test_probe_codec_errors_are_launch_errors_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_probe(url: str, **kwargs: object) -> dict:
        raise hls_launcher.ffmpeg.Error("ffprobe", b"", b"first line\nConnection refused\n")

    monkeypatch.setattr(hls_launcher.ffmpeg, "probe", failing_probe)
    with pytest.raises(LaunchError) as caught:
        hls_launcher.probe_codec(settings())
    assert str(caught.value) == "cannot probe http://***@joy.example:8000/live.mp3: Connection refused"

    monkeypatch.setattr(hls_launcher.ffmpeg, "probe", lambda url, **kwargs: {"streams": []})
    with pytest.raises(LaunchError, match=r"^http://\*\*\*@joy\.example:8000/live\.mp3 has no audio stream$"):
        hls_launcher.probe_codec(settings())


# --- remove_partial_segments -------------------------------------------------------------------------------

def test_remove_partial_segments_deletes_tmp_only(tmp_path: Path) -> None:
    names = ["index.m3u8", "index.m3u8.tmp", "1700000000123-5.ts", "1700000000123-6.ts.tmp", "notes.tmpx",
             "tmp", "a.TMP"]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.tmp").write_text("x")
    remove_partial_segments(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["index.m3u8", "1700000000123-5.ts", "notes.tmpx", "tmp", "a.TMP", "sub"])
    assert (tmp_path / "sub" / "deep.tmp").exists()


# --- main --------------------------------------------------------------------------------------------------

def write_env(path: Path, url: str = BASE["HLS_STREAM_URL"], **settings_values: str) -> Path:
    """An env file exactly as hls-sync writes it."""
    path.write_text(station_env(Station("radio-joy", url, 'Radio "Joy"', 3), settings_values), encoding="utf-8")
    return path


def test_main_dry_run_prints_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch, no_ffprobe: None) -> None:
    monkeypatch.setattr(hls_launcher.time, "time", lambda: NOW)
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy", HLS_SEGMENT_SECONDS="4")
    output = tmp_path / "out"
    assert hls_launcher.main([str(env_file), "--output-dir", str(output), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    printed = shlex.split(out)
    assert printed == build_command(settings(HLS_CODEC="copy", HLS_SEGMENT_SECONDS="4"), output, "copy", NOW)
    assert option(printed, "-c:a") == "copy"
    assert err == ("hls-launcher: radio-joy: upstream http://***@joy.example:8000/live.mp3 codec not probed, "
                   "mode copy\n")
    assert "s3cret" not in err


def test_main_dry_run_uses_runtime_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, no_ffprobe: None) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "runtime"))
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="transcode")
    assert hls_launcher.main([str(env_file), "--dry-run"]) == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed[-1] == f"{tmp_path}/runtime/index.m3u8"
    assert option(printed, "-c:a") == "aac"


def test_main_auto_probes_and_picks_the_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hls_launcher.ffmpeg, "probe", lambda url, **kwargs: {"streams": [{"codec_name": "mp3"}]})
    env_file = write_env(tmp_path / "radio-joy.env")
    assert hls_launcher.main([str(env_file), "--output-dir", str(tmp_path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert option(shlex.split(out), "-c:a") == "aac"
    assert "codec mp3, mode transcode" in err


def test_main_missing_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_ffprobe: None) -> None:
    missing = tmp_path / "nope.env"
    assert hls_launcher.main([str(missing), "--output-dir", str(tmp_path), "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"hls-launcher: {missing}: the file does not exist\n"


def test_main_unreadable_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, no_ffprobe: None) -> None:
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


def test_main_invalid_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_ffprobe: None) -> None:
    env_file = tmp_path / "radio-joy.env"
    env_file.write_text('HLS_STATION_SLUG="radio-joy"\nHLS_STREAM_URL="file:///etc/passwd"\n')
    assert hls_launcher.main([str(env_file), "--output-dir", str(tmp_path), "--dry-run"]) == 1
    assert capsys.readouterr().err == (
        f"hls-launcher: {env_file}: stream_url scheme 'file' is not http or https\n")


def test_main_without_output_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch, no_ffprobe: None) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")
    assert hls_launcher.main([str(env_file), "--dry-run"]) == 1
    assert "no output directory: pass --output-dir or run under systemd" in capsys.readouterr().err


def test_main_execs_ffmpeg_after_removing_partial_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           no_ffprobe: None) -> None:
    (tmp_path / "1-1.ts.tmp").write_text("half")
    (tmp_path / "1-0.ts").write_text("whole")
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")
    execs: list[tuple[str, list[str]]] = []

    def fake_execvp(file: str, args: list[str]) -> None:
        execs.append((file, list(args)))
        assert not (tmp_path / "1-1.ts.tmp").exists()

    monkeypatch.setattr(hls_launcher.os, "execvp", fake_execvp)
    hls_launcher.main([str(env_file), "--output-dir", str(tmp_path)])
    assert len(execs) == 1
    file, args = execs[0]
    assert file == "ffmpeg" and args[0] == "ffmpeg"
    assert option(args, "-i") == "http://joy.example:8000/live.mp3"
    assert (tmp_path / "1-0.ts").exists()


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
    assert "-reconnect_streamed" not in build_command(settings, Path("/run/hls/joy"), "copy", 1.0)


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

def test_main_records_the_codec_and_mode_before_exec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hls_launcher.ffmpeg, "probe", lambda url, **kwargs: {"streams": [{"codec_name": "mp3"}]})
    monkeypatch.setattr(hls_launcher.time, "time", lambda: NOW)
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(hls_launcher.os, "execvp", lambda file, args: seen.append(
        json.loads((tmp_path / ".launch.json").read_text())))
    hls_launcher.main([str(write_env(tmp_path / "radio-joy.env")), "--output-dir", str(tmp_path)])
    assert seen == [{"upstream_codec": "mp3", "mode": "transcode", "started_at": NOW}]
    info = tmp_path / ".launch.json"
    assert stat.S_IMODE(info.stat().st_mode) == 0o644  # the status programs run as other users
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_main_records_an_unprobed_codec_as_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                no_ffprobe: None) -> None:
    monkeypatch.setattr(hls_launcher.os, "execvp", lambda file, args: None)
    hls_launcher.main([str(write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")), "--output-dir", str(tmp_path)])
    info = json.loads((tmp_path / ".launch.json").read_text())
    assert (info["upstream_codec"], info["mode"]) == (None, "copy")


def test_dry_run_records_nothing(tmp_path: Path, no_ffprobe: None, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")
    output = tmp_path / "out"
    output.mkdir()
    assert hls_launcher.main([str(env_file), "--output-dir", str(output), "--dry-run"]) == 0
    assert list(output.iterdir()) == []


def test_a_full_output_filesystem_does_not_stop_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], no_ffprobe: None) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hls_launcher, "write_atomically", full)
    execs: list[str] = []
    monkeypatch.setattr(hls_launcher.os, "execvp", lambda file, args: execs.append(file))
    hls_launcher.main([str(write_env(tmp_path / "radio-joy.env", HLS_CODEC="copy")), "--output-dir", str(tmp_path)])
    assert execs == ["ffmpeg"]
    assert "cannot record the launch" in capsys.readouterr().err


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
    ({"HLS_PLAYLIST_SIZE": "101"}, {"HLS_RESTART_MAX_SECONDS": "4"}),
    ({"HLS_CODEC": "bogus"}, {"HLS_RESTART_MAX_SECONDS": "4"}),
    ({"HLS_RESTART_MAX_SECONDS": "0"}, {}),  # refused itself: the default ceiling (60 s) holds
])
def test_a_refused_setting_waits_out_the_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], no_ffprobe: None,
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
                                                      no_ffprobe: None) -> None:
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
    ({"hls_playlist_size": 100, "hls_segment_seconds": 60, "hls_stall_seconds": 3600,
      "hls_health_max_playlist_age": 3600}, True),
    ({"hls_playlist_size": 101}, False),
    ({"hls_read_timeout_seconds": "7.5"}, False),
])
def test_the_role_refuses_what_the_launcher_refuses(tmp_path: Path, variables: dict[str, object],
                                                    accepted: bool) -> None:
    from test_role_input import check_input

    result = check_input(tmp_path, "hls", variables)
    assert (result.returncode == 0) == accepted, result.stdout
    if not accepted:
        assert "the stream settings are out of range" in result.stdout, result.stdout
