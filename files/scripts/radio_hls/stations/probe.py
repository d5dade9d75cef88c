"""What an upstream sends when a station connects: its codec, and how much audio it sends at once (its burst).

Icecast sends the last seconds it holds (burst-size: 64 KiB by default, 4 s of a 128 kbit/s stream, 11 s of a 48
kbit/s one) as fast as the network carries them, then the live audio as it comes. A run whose timeline started
at the wall clock would run that far ahead of it, and two origins would put the same audio in different slots
(docs/design.md, "The audio at a switch"). A later run knows its last run's burst from that run's list
(runs.last_timeline); a first run (a new station, after a reboot) measures it here, before it starts.

FFmpeg copies the upstream to nowhere and reports every 0.1 s how much audio it has read (-progress). What it has
read beyond the time since it started is the burst; the burst is over once that lead stops growing. FFmpeg names
the input's codec on its standard error as it opens it ("Stream #0:0: Audio: aac (LC), ..."), the name ffprobe
gives, so one connection tells both.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

REPORT_SECONDS = 0.1
# The lead has not grown for this long: the burst is in (the upstream sends the rest as it is made).
SETTLED_SECONDS = 0.5
# A lead this much larger is more burst coming in, not a report's jitter.
GROWTH_SECONDS = 0.05
# FFmpeg logs at "debug" for the one line that names the demuxer it picked for the upstream ("[aac @ 0x...] [debug]
# Format aac probed with size=2048 ..."), or at "warning" when its score was low (an MP3 stream joined mid-frame:
# "Format mp3 detected only with low score of 25"); its lines carry their level, so the rest is read as at "info".
LOG_LEVEL = "level+debug"
HIDDEN_LEVELS = (b"[debug] ", b"[verbose] ", b"[trace] ")
LEVEL_TAG = re.compile(rb"\[(?:panic|fatal|error|warning|info)\] ")
INPUT_FORMAT = re.compile(rb"\[(?:debug|warning)\] Format ([A-Za-z0-9_,]+) "
                          rb"(?:probed with size=|detected only with low)")
# At debug FFmpeg adds the stream's id and time base ("Stream #0:0, 1, 1/28224000: Audio: aac (LC), ...").
AUDIO_STREAM = re.compile(rb"^\s*Stream #0:\d+[^:\n]*: Audio: ([A-Za-z0-9_]+)", re.MULTILINE)


@dataclass(frozen=True)
class Probe:
    codec: str
    burst: float  # seconds of audio the upstream sent at once on connect
    input_format: str | None = None  # the demuxer FFmpeg picked for the upstream (aac, mp3, ogg ...)


class ProbeFailed(RuntimeError):
    """FFmpeg read no audio from the upstream."""

    def __init__(self, stderr: bytes, has_audio_stream: bool) -> None:
        super().__init__("no audio read")
        self.stderr = stderr
        self.has_audio_stream = has_audio_stream


def measure(input_arguments: Sequence[str], document: str, timeout: float, max_burst: float,
            with_burst: bool = True) -> Probe:
    """Open the input FFmpeg's `input_arguments` name (its document on standard input) and measure it; at most
    `timeout` seconds, the burst at most `max_burst`. Without `with_burst` it ends at the first audio, the codec
    known (a restart: the last run measured the burst), and its burst is 0."""
    command = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", LOG_LEVEL, *input_arguments,
               "-map", "0:a:0", "-c", "copy", "-f", "null", "-", "-progress", "pipe:1",
               "-stats_period", str(REPORT_SECONDS)]
    with tempfile.TemporaryFile() as errors:
        started = time.monotonic()
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors) as ffmpeg:
            assert ffmpeg.stdin is not None and ffmpeg.stdout is not None
            try:
                ffmpeg.stdin.write(document.encode())
                ffmpeg.stdin.close()
            except BrokenPipeError:
                pass  # FFmpeg ended at once: its standard error says why
            lead = read_lead(ffmpeg.stdout, started, started + timeout, SETTLED_SECONDS if with_burst else 0.0)
            ffmpeg.kill()
        errors.seek(0)
        logged = errors.read()
    input_format = INPUT_FORMAT.search(logged)
    stderr = shown_lines(logged)
    codec = AUDIO_STREAM.search(stderr)
    if lead is None or codec is None:
        raise ProbeFailed(stderr, codec is not None)
    return Probe(codec.group(1).decode(), round(min(max(lead, 0.0), max_burst), 3) if with_burst else 0.0,
                 input_format.group(1).decode() if input_format else None)


def shown_lines(logged: bytes) -> bytes:
    """FFmpeg's lines as it prints them at "info": no debug lines, no level tags."""
    lines = (line for line in logged.split(b"\n") if not any(level in line for level in HIDDEN_LEVELS))
    return b"\n".join(LEVEL_TAG.sub(b"", line, count=1) for line in lines)


def read_lead(progress: IO[bytes], started: float, deadline: float, settled: float) -> float | None:
    """How far the audio FFmpeg read ran ahead of the time since `started` once it stopped gaining for `settled`
    seconds, or None when it read none before the deadline or its end."""
    lead: float | None = None
    grown_at = started
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(progress, selectors.EVENT_READ)
        while (now := time.monotonic()) < deadline:
            if lead is not None and now - grown_at >= settled:
                return lead
            if not selector.select(min(2 * REPORT_SECONDS, deadline - now)):
                continue
            chunk = os.read(progress.fileno(), 4096)
            if not chunk:
                break  # FFmpeg ended: the upstream closed, or failed
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                key, _, value = line.partition(b"=")
                if key != b"out_time_us" or not value.strip().isdigit() or int(value) == 0:
                    continue
                here = int(value) / 1e6 - (time.monotonic() - started)
                if lead is None or here > lead + GROWTH_SECONDS:
                    lead, grown_at = here, time.monotonic()
    return lead
