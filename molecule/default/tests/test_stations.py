"""hls@ units on a real systemd: running, serving AAC, surviving kills and restarts without breaking listeners."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from conftest import ffmpeg_pid, main_pid, new_run_in, playlist, segment_of_a_new_run, station_ready, wait_for

SLUGS = ["demo-mp3", "demo-aac"]


@pytest.mark.parametrize("slug", SLUGS)
def test_station_is_enabled_and_running_as_the_hls_user(host, slug):
    unit = host.service(f"hls@{slug}")
    assert unit.is_enabled
    assert unit.is_running
    pid = main_pid(host, slug)
    # FFmpeg itself is the main PID (the launcher exec'd it), without privileges.
    assert host.file(f"/proc/{pid}/comm").content_string.strip() == "ffmpeg"
    assert host.check_output(f"stat -c %U /proc/{pid}") == "hls"


@pytest.mark.parametrize("slug", SLUGS)
def test_station_runs_the_build_of_debians_own_ffmpeg(host, slug):
    """hls_ffmpeg_build (the default): Debian's source of the installed ffmpeg, with only what a station uses."""
    debian = host.check_output("dpkg-query --show --showformat='${Version}' ffmpeg")  # e.g. 7:5.1.9-0+deb12u1
    pid = ffmpeg_pid(host, slug)
    # As the station's user: root in this container may not read another user's /proc/<pid>/exe.
    binary = host.check_output(f"runuser -u hls -- readlink /proc/{pid}/exe")
    assert binary.startswith("/usr/local/lib/hls-ffmpeg/"), binary
    version = host.check_output(f"{binary} -version").splitlines()[0]
    assert version.startswith(f"ffmpeg version {debian.split(':')[-1]}+radio-hls "), version
    assert "--disable-everything" in host.check_output(f"{binary} -hide_banner -buildconf")
    # What the build is for: Debian's binary loads 214 libraries, each station's private copy of their relocations.
    libraries = host.check_output(f"ldd {binary}").splitlines()
    assert len(libraries) < 20, libraries
    # The host's own apt sources are as they were: the build fetched its source with an apt index of its own.
    assert "deb-src" not in host.check_output("cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true")


# One recvfrom(2) line of strace: the size asked for and the bytes it returned.
RECVFROM = re.compile(r"recvfrom\(\d+, .*, (\d+), [^,]+, [^,]+, [^,]+\) = (\d+)$", re.MULTILINE)
WAKE_BYTES = 8192  # __hls_station_upstream_wake_bytes


def upstream_reads(host, binary: str, wake_bytes: int) -> list[tuple[int, int]]:
    """(asked, returned) of each read of the demo's MP3 mount by the stations' FFmpeg, 10 s of it, recv_low_water as
    given: the launcher's ffconcat document, as hls@ hands it over."""
    document = ("ffconcat version 1.0\nfile http://127.0.0.1:8000/demo-mp3\n"
                f"option protocol_whitelist http,tcp\noption recv_low_water {wake_bytes}\n")
    trace = f"/tmp/upstream-reads-{wake_bytes}"
    host.check_output(f"printf %s {shlex.quote(document)} | timeout 120 strace -f -e trace=recvfrom -o {trace} "
                      f"{binary} -hide_banner -nostdin -loglevel error -f concat -safe 0 -protocol_whitelist pipe "
                      "-i pipe:0 -t 10 -c copy -f null -")
    return [(int(asked), int(got)) for asked, got in RECVFROM.findall(host.file(trace).content_string)]


def test_the_stations_ffmpeg_reads_a_live_upstream_in_full_reads(host):
    """hls@ passes --upstream-wake-bytes: the build's http (files/ffmpeg/patches/http-recv-low-water.patch) sets
    SO_RCVLOWAT once the live body starts, so a read returns what it asked for or at least 8 KiB, never one of
    Icecast's 1.4 KB writes; the same build without the option reads those one by one."""
    assert f"--upstream-wake-bytes {WAKE_BYTES}" in host.check_output("systemctl cat hls@demo-mp3")
    [binary] = host.check_output("ls /usr/local/lib/hls-ffmpeg/*/ffmpeg").split()  # the build hls@ starts now
    _headers, *body = upstream_reads(host, binary, WAKE_BYTES)  # the response's headers come before the mark is set
    assert len(body) > 10, body
    assert [(asked, got) for asked, got in body if got < min(asked, WAKE_BYTES)] == []
    _, *unmarked = upstream_reads(host, binary, 0)
    assert [(asked, got) for asked, got in unmarked if got < min(asked, WAKE_BYTES)] != []


@pytest.mark.parametrize("slug", SLUGS)
def test_playlist_advances_and_newest_segment_is_aac_audio(host, slug):
    first = station_ready(host, slug)
    later = wait_for(lambda: (p := playlist(host, slug)) and p.segments[-1] != first.segments[-1] and p,
                     what=f"{slug}'s playlist to advance")
    assert later.sequence >= first.sequence
    newest = later.segments[-1]
    host.check_output(f"curl -fsS -o /tmp/{slug}-newest.ts http://127.0.0.1/hls/{slug}/{newest}")
    probe = json.loads(host.check_output(
        f"ffprobe -v error -show_streams -of json /tmp/{slug}-newest.ts"))
    audio = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert [s["codec_name"] for s in audio] == ["aac"]
    assert float(probe["streams"][0].get("duration", "0")) > 1.0


@pytest.mark.parametrize(("slug", "expected"), [("demo-aac", ["-c:a", "copy"]), ("demo-mp3", ["-c:a", "aac"])])
def test_aac_upstream_is_copied_and_mp3_is_transcoded(host, slug, expected):
    argv = host.file(f"/proc/{main_pid(host, slug)}/cmdline").content_string.split("\0")
    # The station's own output: its options end at its segment pattern; the ladder's renditions follow.
    main_output = argv[:next(index for index, arg in enumerate(argv) if arg.endswith("-%d.ts")) + 1]
    assert main_output[-1].startswith(f"/run/hls/{slug}/")
    position = main_output.index(expected[0])
    assert main_output[position:position + 2] == expected
    if expected[1] == "copy":
        assert "-b:a" not in main_output
    # The input is the launcher's ffconcat document on standard input and nothing else: the stream URL (and its
    # credentials) never reach the command line, and its own protocols are limited inside that document.
    assert argv[argv.index("-protocol_whitelist") + 1] == "pipe"
    assert argv[argv.index("-i") + 1] == "pipe:0"
    assert not [arg for arg in argv if "http" in arg or "127.0.0.1" in arg], argv


def assert_continues(before, after) -> None:
    """The playlist after a restart continues the one before it, as a listener needs."""
    old, new = before.numbered(), after.numbered()
    kept = set(old) & set(new)
    assert kept, "the restart lost every segment the listeners knew"
    # Segments listed on both sides keep their sequence numbers: no jump, nothing backwards.
    assert all(old[name] == new[name] for name in kept), (before.text, after.text)
    # The new process's first segment is marked as a discontinuity (the old one may still have closed its last
    # segment). Every segment is named after its slot, never two in one; a slot missed (the audio the restart
    # lost) is a discontinuity too.
    assert new_run_in(before, after) is not None, after.text
    slots = [int(name.removesuffix(".ts")) for name in after.segments]
    assert all(later > earlier for earlier, later in zip(slots, slots[1:], strict=False)), after.text
    assert all(index in after.discontinuities for index in range(1, len(slots)) if slots[index] > slots[index - 1] + 1)


@pytest.mark.parametrize("how", ["kill -9", "systemctl restart"])
def test_restart_continues_the_playlist(host, how):
    slug = "demo-aac"
    before = station_ready(host, slug)
    old_pid = main_pid(host, slug)
    if how == "kill -9":
        host.check_output(f"kill -9 {old_pid}")
    else:
        host.check_output(f"systemctl restart hls@{slug}")
    wait_for(lambda: main_pid(host, slug) not in (0, old_pid), what="a new FFmpeg")
    after = segment_of_a_new_run(host, slug, before)
    assert_continues(before, after)


def test_stop_removes_the_files_and_a_fresh_start_never_reuses_names(host):
    slug = "demo-mp3"
    before = station_ready(host, slug)
    host.check_output(f"systemctl stop hls@{slug}")
    assert not host.file(f"/run/hls/{slug}").exists
    # At once: nginx answers 404 for a station without its directory, before hls-playlists' next poll removes the
    # playlist file (every 0.5 s).
    assert playlist(host, slug) is None
    wait_for(lambda: not host.file(f"/run/hls/_playlists/{slug}.m3u8").exists, what="the playlist file to go")
    host.check_output(f"systemctl start hls@{slug}")
    after = station_ready(host, slug, min_segments=1)
    # The playlist was gone, yet the sequence still moves forward and no name comes back.
    assert after.sequence > max(before.numbered().values())
    assert not set(after.segments) & set(before.segments)


def test_ffmpeg_logs_go_to_a_file_per_station(host):
    log = host.file("/var/log/hls/demo-aac.log")
    assert log.exists
    assert "mode copy" in log.content_string
    assert "mode transcode" in host.file("/var/log/hls/demo-mp3.log").content_string


def test_logrotate_bounds_the_logs(host):
    assert host.run("logrotate --debug /etc/logrotate.d/hls").rc == 0
    assert host.run("logrotate --debug /etc/logrotate.d/nginx").rc == 0
    # A log past the size limit is rotated at the next logrotate run, not the next day.
    host.check_output("head -c 11M /dev/zero | tr '\\0' x >> /var/log/hls/demo-mp3.log")
    host.check_output("logrotate /etc/logrotate.d/hls")
    assert host.file("/var/log/hls/demo-mp3.log").size < 1024 * 1024
    calendar = host.check_output("systemctl show -p TimersCalendar --value logrotate.timer")
    assert "*:00/10" in calendar or "*:0/10" in calendar, calendar


def test_station_config_files_are_private(host):
    sync_env = host.file("/etc/hls/sync.env")
    assert (sync_env.user, sync_env.group, sync_env.mode) == ("root", "root", 0o600)
    env = host.file("/etc/hls/stations/demo-aac.env")
    assert (env.user, env.group, env.mode) == ("root", "hls", 0o640)
    # systemd never shows the stream URL: the launcher reads it from the file.
    assert "127.0.0.1:8000" not in host.check_output("systemctl show hls@demo-aac.service")
