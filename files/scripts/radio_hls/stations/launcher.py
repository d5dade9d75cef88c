"""Start one station: read its env file, pick copy or transcode from the upstream codec, exec FFmpeg.

Run by hls@<slug>.service. After exec, FFmpeg is the unit's main PID, so systemd sees its crashes directly.

The station URL never reaches a command line, where any local user could read it (`systemctl status`, `ps`):
the probe and FFmpeg read it, its options and its credentials from an ffconcat document on their standard input
(input_document). Credentials reach only their origin: a station URL with user:password is followed through its
redirects here (upstream.open_upstream), FFmpeg gets the URL where they led, and the Authorization only when
that URL is on the credentials' origin, with max_redirects 0 (FFmpeg re-sends its headers on every hop).

FFmpeg's segment muxer writes the segments and their list; hls-playlists, one process for the whole host, turns
the lists into the playlists (runs.py has the files). Each start is a run whose timeline continues where the last
one ended, or at the wall clock when that is later: segment timestamps are Unix time x 90 kHz (modulo 2^33), so
they never go back across a restart, and players that ignore EXT-X-DISCONTINUITY play on across it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
from dotenv import dotenv_values

from radio_hls.common.contract import USER_AGENT
from radio_hls.common.files import read_json_object
from radio_hls.stations import facts, probe
from radio_hls.stations.runs import LIST_SIZE, MAX_BURST_SECONDS, Run, Timeline, last_timeline
from radio_hls.stations.station import (
    CONTROL_CHARS,
    InvalidStation,
    basic_authorization,
    origin,
    redact_url,
    validate_slug,
    validate_stream_url,
)
from radio_hls.stations.variants import InvalidVariants, Variant, parse_variants

# The upstream may only come from the network: never file:, concat:, subfile:, pipe: and the like.
PROTOCOL_WHITELIST = "http,https,tcp,tls"
# FFmpeg's input, and its probe's: the ffconcat document on standard input, the only thing pipe: may open; the
# document holds the one upstream URL, with PROTOCOL_WHITELIST for it.
STDIN_INPUT = "pipe:0"
INPUT_OPTIONS: dict[str, object] = {"f": "concat", "safe": 0, "protocol_whitelist": "pipe"}
# What hides a URL's user:password, query string and fragment in a log line; REDACT_AWK does the same to FFmpeg's
# standard error (mawk: bytes, [[:space:]] is ASCII whitespace), redact_urls to the launcher's own text.
URL_USERINFO = re.compile(r"(://)[^/@\s]*@")
URL_QUERY = re.compile(r"(://[^?#\s]*)([?#])\S*")
# It also drops two lines FFmpeg 5.1's segment muxer prints that say nothing about the station: one per segment
# ("frame size not set", the inner MPEG-TS muxer of every segment) and one per start (initial_offset, which
# build_command needs, is deprecated), and FFmpeg's "Last message repeated N times" after one of them (its log
# repeats the first when malloc gives the next segment's muxer the same address), so `hlsctl status <slug>` shows
# the station's real last lines.
# mawk rather than GNU sed: the same work in 0.16 MiB of private memory instead of 0.7 (sed's regex DFA builds a
# 2 KiB table for each state the two long noise patterns walk through), on every station (docs/benchmarks.md,
# "Memory per station"). -W interactive: each line is read and written as it comes (sed -u).
REDACT_AWK = ("mawk", "-W", "interactive", r"""
/^ +Last message repeated [0-9]+ times$/ { if (dropped) next }
/^\[mpegts @ 0x[0-9a-f]+\] frame size not set$/ { dropped = 1; next }
/^\[segment @ 0x[0-9a-f]+\] NOTE: the option initial_offset is deprecated/ { dropped = 1; next }
{
    dropped = 0
    line = $0
    gsub(/:\/\/[^\/@[:space:]]*@/, "://***@", line)
    kept = ""
    while (match(line, /:\/\/[^?#[:space:]]*[?#]/)) {
        kept = kept substr(line, 1, RSTART + RLENGTH - 1) "***"
        line = substr(line, RSTART + RLENGTH)
        sub(/^[^[:space:]]+/, "", line)
    }
    print kept line
}
""")
GLOBAL_OPTIONS = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning")
CODEC_CHOICES = ("auto", "copy", "transcode")
# FFmpeg's native AAC encoder: "fast" (constant quantizer) costs about two thirds of "twoloop" (FFmpeg's
# default, a little better at low bitrates); see docs/benchmarks.md.
AAC_CODERS = ("fast", "twoloop")
# A live upstream arrives in small reads (about 13 a second from Icecast), and each one woke the encoder for its
# 2-3 frames with cold caches: 1.2x the CPU of the same transcoding done in one go. The encoder gets its audio in
# batches of this many samples instead (16 AAC frames: 0.37 s at 44.1 kHz, 1 s at 16 kHz): the same frames and
# timestamps, byte for byte the same segments, each at most one batch later; see docs/benchmarks.md.
ENCODE_BATCH_SAMPLES = 16 * 1024
# Bytes read to recognise the upstream's format. FFmpeg's default keeps reading until it is sure, which
# for an MP3 stream means 128 KiB: 8 s of a 128k stream (4 s of it after Icecast's 64 KiB burst) before the
# first segment can even start, on every start and restart.
FORMAT_PROBE_BYTES = 32768
ASCII_DIGITS = re.compile(r"[0-9]+")
BITRATE = re.compile(r"[0-9]+k")
# A run shorter than this counts as a failed start and lengthens the wait before the next one.
HEALTHY_RUN_SECONDS = 30
# (default, lowest, highest) of each whole-number setting; roles/hls/tasks/assert.yml checks the same bounds
# on hls_<name in lower case> before a deployment writes them.
NUMBER_SETTINGS = {
    "HLS_SEGMENT_SECONDS": (6, 1, 60),
    "HLS_READ_TIMEOUT_SECONDS": (15, 1, 600),
    "HLS_RESTART_MAX_SECONDS": (60, 1, 3600),
}
BACKOFF_FILE = ".backoff.json"
# A run starts at least this long after the last one's listed end: more than the AAC encoder's priming (1024
# samples: 23 ms at 44.1 kHz, 64 ms at 16 kHz), which puts a transcoded run's first packet before its start, so
# the old run's last frame and the new run's first never overlap.
RUN_GAP_SECONDS = 0.1
# The most audio one MPEG-TS PES carries (FFmpeg's default muxdelay): fewer, fuller packets on the wire.
PES_SECONDS = 0.7
# Codecs that HLS players take as they are inside MPEG-TS.
COPYABLE_CODECS = ("aac",)


class LaunchError(RuntimeError):
    """The station cannot be started as configured."""


@dataclass(frozen=True)
class StationSettings:
    slug: str
    stream_url: str
    segment_seconds: int = 6
    aac_bitrate: str = "128k"
    codec: str = "auto"
    read_timeout_seconds: int = 15
    restart_max_seconds: int = 60
    aac_coder: str = "fast"
    variants: tuple[Variant, ...] = ()

    @classmethod
    def from_env(cls, values: Mapping[str, str | None]) -> StationSettings:
        def number(key: str) -> int:
            default, low, high = NUMBER_SETTINGS[key]
            raw = values.get(key) or str(default)
            if not ASCII_DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
                raise LaunchError(f"{key}={raw!r} is not a whole number from {low} to {high}")
            return int(raw)

        try:
            slug = validate_slug(values.get("HLS_STATION_SLUG"))
            url = validate_stream_url(values.get("HLS_STREAM_URL"))
        except InvalidStation as error:
            raise LaunchError(str(error)) from None
        codec = values.get("HLS_CODEC") or "auto"
        if codec not in CODEC_CHOICES:
            raise LaunchError(f"HLS_CODEC={codec!r} is not one of {', '.join(CODEC_CHOICES)}")
        bitrate = values.get("HLS_AAC_BITRATE") or "128k"
        if not BITRATE.fullmatch(bitrate):
            raise LaunchError(f"HLS_AAC_BITRATE={bitrate!r} is not like 128k")
        coder = values.get("HLS_AAC_CODER") or "fast"
        if coder not in AAC_CODERS:
            raise LaunchError(f"HLS_AAC_CODER={coder!r} is not one of {', '.join(AAC_CODERS)}")
        try:
            variants = parse_variants(values.get("HLS_VARIANTS"))
        except InvalidVariants as error:
            raise LaunchError(f"HLS_VARIANTS: {error}") from None
        return cls(
            slug=slug,
            stream_url=url,
            segment_seconds=number("HLS_SEGMENT_SECONDS"),
            aac_bitrate=bitrate,
            codec=codec,
            read_timeout_seconds=number("HLS_READ_TIMEOUT_SECONDS"),
            restart_max_seconds=number("HLS_RESTART_MAX_SECONDS"),
            aac_coder=coder,
            variants=variants,
        )


@dataclass(frozen=True)
class Upstream:
    """What the probe and FFmpeg open: a URL without credentials, and the Authorization to send with it."""

    url: str
    authorization: str | None = None


def resolve_upstream(settings: StationSettings) -> Upstream:
    """The station URL as FFmpeg may open it.

    Without credentials FFmpeg follows the URL's redirects itself: it has nothing to leak. With them, the redirects
    are followed here, with the credentials on same-origin hops only (upstream.CredentialsStayHome), and FFmpeg
    gets the final URL, with the Authorization only when that URL is on the credentials' origin.
    """
    bare, authorization = basic_authorization(settings.stream_url)
    if authorization is None:
        return Upstream(bare)
    shown = redact_url(settings.stream_url)
    from radio_hls.stations import upstream  # only for stations with credentials (its module says why)

    try:
        # No certificate check, as FFmpeg 5.1 does not check one (tls_verify 0): a station FFmpeg can play is not
        # refused here.
        final = upstream.where_it_leads(settings.stream_url, {"User-Agent": USER_AGENT},
                                        settings.read_timeout_seconds, verify_tls=False)
    except upstream.Unreachable as error:
        raise LaunchError(f"cannot probe {shown}: {printable(str(error))}") from None
    if final == bare:
        return Upstream(bare, authorization)
    try:
        final = validate_stream_url(final)
    except InvalidStation as error:
        raise LaunchError(f"{shown} redirects to a URL FFmpeg must not open: {error}") from None
    same_origin = origin(final) == origin(bare)
    say(f"{settings.slug}: {shown} redirects to {redact_url(final)}"
        f"{'' if same_origin else ', another origin: the credentials are not sent there'}")
    return Upstream(final, authorization if same_origin else None)


def upstream_options(settings: StationSettings, upstream: Upstream, input_format: str | None = None
                     ) -> dict[str, object]:
    """The options the probe and FFmpeg open the upstream with; `input_format` holds FFmpeg to that demuxer (facts.py).

    In-stream reconnection (`reconnect_streamed`) stays off on purpose: on a live stream it would loop
    forever against an upstream that accepts and then sends nothing, and would feed a changed codec into
    the old decoder. A dropped or silent upstream ends FFmpeg after `rw_timeout`; systemd starts it again,
    the launcher probes again, and the playlist marks the gap with a discontinuity.
    """
    options: dict[str, object] = {
        "protocol_whitelist": PROTOCOL_WHITELIST,
        "formatprobesize": FORMAT_PROBE_BYTES,
        "reconnect": 1,
        "reconnect_on_network_error": 1,
        "reconnect_delay_max": 10,
        "rw_timeout": settings.read_timeout_seconds * 1_000_000,
        "user_agent": USER_AGENT,
    }
    if upstream.authorization is not None:
        # FFmpeg sends its custom headers again on every redirect, to any host: with credentials it follows none.
        # (An ffconcat line cannot hold the header's CRLF; FFmpeg adds it, with a warning line.)
        options["headers"] = f"Authorization: {upstream.authorization}"
        options["max_redirects"] = 0
    if input_format is not None:
        options["format_whitelist"] = input_format
    return options


def concat_quote(value: str) -> str:
    """A token of an ffconcat line: single-quoted, a quote written as '\\'' (as in a shell)."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise LaunchError("an upstream value holds a line break")  # validated URLs never do; a line is a directive
    return "'" + value.replace("'", "'\\''") + "'"


def input_document(upstream: Upstream, options: Mapping[str, object]) -> str:
    """The ffconcat document the probe and FFmpeg read on their standard input: the upstream, and its options."""
    lines = ["ffconcat version 1.0", f"file {concat_quote(upstream.url)}"]
    lines += [f"option {key} {concat_quote(str(value))}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def redact_urls(text: str) -> str:
    """Every URL in the text without user:password, query string and fragment."""
    return URL_QUERY.sub(r"\1\2***", URL_USERINFO.sub(r"\1***@", text))


def printable(text: str) -> str:
    """Outside text (an upstream's reason phrase, the probe's error) fit for one log line, any URL in it redacted."""
    return CONTROL_CHARS.sub("?", redact_urls(text)).strip()[:300]


def probe_error(stderr: bytes) -> str:
    """The probing FFmpeg's last line, without the input's name (the document's pipe:0) and with URLs redacted wherever
    FFmpeg printed one in full."""
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return printable(lines[-1].removeprefix(f"{STDIN_INPUT}: ") if lines else "no output")


def probe_upstream(settings: StationSettings, upstream: Upstream, with_burst: bool = True) -> probe.Probe:
    """The codec of the upstream's first audio stream (e.g. 'aac' or 'mp3') and its burst on connect."""
    options = {**upstream_options(settings, upstream), "probesize": 65536, "analyzeduration": 1_000_000}
    arguments = [*(argument for key, value in INPUT_OPTIONS.items() for argument in (f"-{key}", str(value))),
                 "-i", STDIN_INPUT]
    try:
        # FFmpeg's own rw_timeout ends a silent upstream first; the margin covers its start and the burst's end.
        return probe.measure(arguments, input_document(upstream, options), settings.read_timeout_seconds + 5,
                             MAX_BURST_SECONDS, with_burst)
    except probe.ProbeFailed as failed:
        url = redact_url(settings.stream_url)
        if not failed.has_audio_stream and b"matches no streams" in failed.stderr:
            raise LaunchError(f"{url} has no audio stream") from None
        raise LaunchError(f"cannot probe {url}: {probe_error(failed.stderr)}") from None


def choose_mode(settings: StationSettings, upstream_codec: str | None) -> str:
    """'copy' or 'transcode'."""
    if settings.codec != "auto":
        return settings.codec
    return "copy" if upstream_codec in COPYABLE_CODECS else "transcode"


def backoff_seconds(output_dir: Path, now: float, maximum: int) -> int:
    """How long to wait before this start: 0 after a healthy run, then 1, 2, 4 ... up to `maximum`.

    systemd 252 restarts at a fixed RestartSec, so the growing part of the wait lives here. The state
    sits in the runtime directory, which systemd keeps across restarts and removes on stop.
    """
    state_file = output_dir / BACKOFF_FILE
    previous = read_json_object(state_file)
    try:
        failures = int(previous["failures"]) + 1 if now - float(previous["ran_from"]) < HEALTHY_RUN_SECONDS else 0
    except (ValueError, KeyError, TypeError):
        failures = 0
    delay = 0 if failures == 0 else min(maximum, 2 ** (failures - 1))
    try:
        state_file.write_text(json.dumps({"failures": failures, "ran_from": now + delay}), encoding="utf-8")
    except OSError:
        pass  # a full output filesystem: start without a wait rather than not at all
    return delay


def read_env_file(env_file: Path) -> Mapping[str, str | None]:
    if not env_file.is_file():
        raise LaunchError("the file does not exist")
    try:
        return dotenv_values(env_file, interpolate=False)
    except OSError as error:
        raise LaunchError(f"cannot read it: {error.strerror}") from None


def longest_wait(values: Mapping[str, str | None]) -> int:
    """HLS_RESTART_MAX_SECONDS when it is valid, else its default: settings that are refused still get a ceiling."""
    default, low, high = NUMBER_SETTINGS["HLS_RESTART_MAX_SECONDS"]
    raw = values.get("HLS_RESTART_MAX_SECONDS") or ""
    return int(raw) if ASCII_DIGITS.fullmatch(raw) and low <= int(raw) <= high else default


def wait_before_start(output_dir: Path, values: Mapping[str, str | None], name: str) -> bool:
    """Sleep for this start's backoff (see backoff_seconds); whether the last start failed."""
    delay = backoff_seconds(output_dir, time.time(), longest_wait(values))
    if delay:
        say(f"{name}: the last start failed; waiting {delay} s")
        time.sleep(delay)
    return delay > 0


def prepare_directories(output_dir: Path, run: Run) -> None:
    """Make each rendition's directory, and remove the half-written segment lists (<run>.csv.tmp) a killed FFmpeg
    left behind in the station's and the renditions' directories: nothing will ever finish them."""
    directories = [run.variant_dir(output_dir, variant.name) for variant in run.variants]
    for directory in directories:
        try:
            directory.mkdir(mode=0o755, exist_ok=True)
        except OSError as error:  # FFmpeg then fails to open its first segment there, and says so
            say(f"cannot make {directory}: {error.strerror}")
    for directory in [output_dir, *directories]:
        for leftover in directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)


def begin_run(previous: Timeline | None, settings: StationSettings, mode: str, upstream_codec: str | None,
              now: float, burst: float = 0.0) -> Run:
    """This start's run: its timeline starts at the wall clock, early by the burst the upstream sends on connect
    (the last run's, measured by its list, or for a first run `burst`, measured by the probe), so that it is on
    the clock once its burst is in; and never before the last run's end.

    A restart sooner than that lead gets audio the last run already listed: the burst repeats the seconds before
    the connection. FFmpeg skips that much of it, so the timeline stays on the clock however often the station
    restarts (without the skip, each quick restart put it one burst further ahead).
    """
    if previous is None:
        return Run.begin(now - burst, settings.segment_seconds, mode, upstream_codec, now,
                         variants=settings.variants)
    early = now - previous.burst
    start = max(early, previous.end + RUN_GAP_SECONDS)
    # Never more than a burst can be: a timeline ahead for another reason (the clock stepped back) is not audio
    # the upstream repeats.
    skip = min(start - early, MAX_BURST_SECONDS)
    return Run.begin(start, settings.segment_seconds, mode, upstream_codec, now, skip, settings.variants)


def keep_facts(state_dir: Path, settings: StationSettings, probed: probe.Probe, burst: float) -> None:
    """Keep what the probe found for the next starts, when its format can be held to (facts.py)."""
    try:
        if (input_format := facts.pinned(probed.input_format)) is not None:
            facts.save(state_dir, settings.slug, facts.UpstreamFacts(
                facts.url_digest(settings.stream_url), input_format, burst, time.time()))
        else:
            facts.forget(state_dir, settings.slug)
    except OSError as error:  # the next start probes again
        say(f"cannot record the upstream's facts in {state_dir}: {error.strerror}")


def record_run(output_dir: Path, run: Run) -> None:
    """Tell hls-playlists and the status programs about the run (copy or transcode, the upstream codec)."""
    try:
        run.write(output_dir)
    except OSError as error:  # a full output filesystem: start without it rather than not at all
        say(f"cannot record the run in {output_dir}: {error.strerror}")


def build_command(settings: StationSettings, output_dir: Path, run: Run) -> list[str]:
    """FFmpeg's command line: no URL in it, FFmpeg reads its input document on standard input (hand_over).

    The segment muxer cuts where the timeline reaches a multiple of the segment length: output_ts_offset puts the
    first audio at the run's offset into its first segment. initial_offset then moves every timestamp onto the
    wall clock (modulo 2^33, the MPEG-TS clock), after the cut is decided. mpegts_copyts and muxpreload 0: a
    segment's timestamps are its audio's time, not 1.4 s later. muxdelay lets the MPEG-TS muxer pack up to that
    much audio into one PES: at 0 every AAC frame was a PES of its own, padded to whole TS packets, and the
    overhead doubled a 48 kbit/s rendition on the wire (96 kbit/s; 63 with the packing). The output's ss drops
    the run's skip (copy and transcode alike, to the frame); the first audio kept is still at the run's offset.

    Each rendition of the ladder is one more output of the same process, with the same cutting options: its
    segments are cut at the same times (to the AAC frame) and get the same names, in its own directory.
    """
    stream = ffmpeg.input(STDIN_INPUT, **INPUT_OPTIONS)
    main_audio: dict[str, object] = {"c:a": "copy"}
    if run.mode == "transcode":
        main_audio = aac_options(settings, settings.aac_bitrate)
    outputs = [segment_output(stream, settings, run, output_dir, main_audio)]
    for variant in run.variants:
        audio = {**aac_options(settings, variant.bitrate), "ac": variant.channels, "ar": variant.sample_rate}
        outputs.append(segment_output(stream, settings, run, run.variant_dir(output_dir, variant.name), audio))
    command = ffmpeg.merge_outputs(*outputs).compile()
    # Global options go first: FFmpeg may ignore options that trail the output file.
    return [command[0], *GLOBAL_OPTIONS, *command[1:]]


def aac_options(settings: StationSettings, bitrate: str) -> dict[str, object]:
    # Debian's FFmpeg has no libfdk_aac: the native encoder makes AAC-LC. p=0: the last batch is not padded.
    return {"c:a": "aac", "profile:a": "aac_low", "b:a": bitrate, "aac_coder": settings.aac_coder,
            "af": f"asetnsamples=n={ENCODE_BATCH_SAMPLES}:p=0"}


def segment_output(stream: ffmpeg.nodes.FilterableStream, settings: StationSettings, run: Run, directory: Path,
                   audio_options: Mapping[str, object]) -> ffmpeg.nodes.OutputStream:
    """One segment-muxer output of the run (see build_command): the station's, or a rendition's into its directory."""
    segment_options: dict[str, object] = {
        "map": "0:a:0",
        **({"ss": f"{run.skip:.3f}"} if run.skip else {}),
        "output_ts_offset": f"{run.offset:.3f}",
        "muxdelay": PES_SECONDS,
        "muxpreload": 0,
        "format": "segment",
        "segment_time": settings.segment_seconds,
        "segment_format": "mpegts",
        "segment_format_options": "mpegts_copyts=1",
        "segment_list": str(run.list_path(directory)),
        "segment_list_type": "csv",
        "segment_list_size": LIST_SIZE,
        "initial_offset": f"{run.pts_base:.6f}",
    }
    return stream.output(run.segment_pattern(directory), **audio_options, **segment_options)


def hand_over(document: str) -> None:
    """Make `document` the standard input FFmpeg will read it from (pipe:0).

    A memfd rather than a pipe: a pipe could hold as little as 4 KiB (when the user's pipe buffers run short), and
    the write would block before FFmpeg ever starts. It is never on disk, goes with FFmpeg, and /proc/<pid>/fd of
    FFmpeg is closed to other users.
    """
    fd = os.memfd_create("hls-input")
    try:
        data = document.encode()
        while data:
            data = data[os.write(fd, data):]
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
    finally:
        os.close(fd)


def redact_stderr() -> None:
    """From here on, standard error (FFmpeg's, after the exec) goes to the station's log through mawk (REDACT_AWK).

    FFmpeg prints the URL it opens when the open fails: the concat demuxer's "Impossible to open '<url>'", also when
    a stop interrupts the open. mawk costs about 0.16 MiB (private) and one task per station. It ignores SIGTERM
    and SIGINT, so a stop loses none of FFmpeg's last lines: it ends when FFmpeg, gone, closes the pipe. Should
    mawk fail, FFmpeg's lines are lost, never its stream: FFmpeg ignores SIGPIPE (as Python left it).
    """
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        try:
            os.dup2(read_end, 0)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.execvp(REDACT_AWK[0], REDACT_AWK)
        finally:
            os._exit(127)
    os.dup2(write_end, 2)
    os.close(read_end)
    os.close(write_end)


def say(message: str) -> None:
    """One line to the station's log; a full log filesystem must not keep the station off the air."""
    try:
        print(f"hls-launcher: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start one station's FFmpeg (used by hls@.service).")
    parser.add_argument("env_file", type=Path, help="the station's env file, e.g. /etc/hls/stations/<slug>.env")
    parser.add_argument("--output-dir", type=Path, default=os.environ.get("RUNTIME_DIRECTORY"),
                        help="where the playlist goes (default: $RUNTIME_DIRECTORY, set by systemd)")
    parser.add_argument("--state-dir", type=Path, default=os.environ.get("STATE_DIRECTORY"),
                        help="where the last probe's facts are kept (default: $STATE_DIRECTORY, set by systemd; "
                             "none: probe at every start that needs to)")
    parser.add_argument("--upstream-wake-bytes", type=int, default=0, metavar="BYTES",
                        help="FFmpeg reads a live upstream only once this many bytes wait (recv_low_water: the "
                             "stations' FFmpeg build, files/ffmpeg/patches); default 0: on every packet")
    parser.add_argument("--dry-run", action="store_true", help="print the FFmpeg command instead of running it")
    args = parser.parse_args(argv)
    try:
        if args.output_dir is None:
            raise LaunchError("no output directory: pass --output-dir or run under systemd")
        values: Mapping[str, str | None] = {}
        last_start_failed = False
        try:
            values = read_env_file(args.env_file)
            settings = StationSettings.from_env(values)
        finally:
            # Every start waits out its backoff first, also one whose env file is refused: a setting out of range
            # must not become one Python start per RestartSec, forever.
            if not args.dry_run:
                last_start_failed = wait_before_start(args.output_dir, values, args.env_file.stem)
        upstream = resolve_upstream(settings)
        previous = last_timeline(args.output_dir)
        # The codec decides the mode; a first run also needs the upstream's burst (a later one goes by its last
        # run's). Both come from the last probe's facts when they hold (facts.py), else from a probe now. A dry run
        # only shows the command: it probes for nothing the mode does not need, and records nothing.
        needs_burst = previous is None and not args.dry_run
        known = None
        if args.state_dir is not None and not last_start_failed:
            known = facts.load(args.state_dir, settings.slug, settings.stream_url)
        probed = None
        if known is None and (settings.codec == "auto" or needs_burst):
            probed = probe_upstream(settings, upstream, needs_burst)
            if args.state_dir is not None and not args.dry_run:
                keep_facts(args.state_dir, settings, probed, probed.burst if needs_burst else
                           previous.burst if previous else 0.0)
        upstream_codec = probed.codec if probed else known.codec if known else None
        burst = probed.burst if probed else known.burst if known else 0.0
        mode = choose_mode(settings, upstream_codec)
        run = begin_run(previous, settings, mode, upstream_codec, time.time(), burst)
        command = build_command(settings, args.output_dir, run)
        pinned = known.input_format if known else facts.pinned(probed.input_format) if probed else None
        options = upstream_options(settings, upstream, pinned)
        if args.upstream_wake_bytes > 0:
            # The station's FFmpeg only: the probe times the upstream's burst as it arrives.
            options["recv_low_water"] = args.upstream_wake_bytes
        document = input_document(upstream, options)
    except LaunchError as error:
        say(f"{args.env_file}: {error}")
        return 1
    source = "probed" if probed else "as last probed" if known else "not probed"
    first = f", a first run: the upstream's burst {burst:.2f} s" if needs_burst else ""
    say(f"{settings.slug}: upstream {redact_url(settings.stream_url)} codec {upstream_codec or 'unknown'} "
        f"({source}), mode {mode}{first}")
    if args.dry_run:
        print(shlex.join(command))
        return 0
    prepare_directories(args.output_dir, run)
    record_run(args.output_dir, run)
    hand_over(document)
    redact_stderr()
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
