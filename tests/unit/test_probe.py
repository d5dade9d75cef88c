"""The launcher's probe (radio_hls/stations/probe.py) with the real FFmpeg against a local upstream that sends a
burst on connect, as Icecast does, then the rest at the stream's own pace."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from radio_hls.stations import launcher as hls_launcher
from radio_hls.stations.launcher import LaunchError, StationSettings, Upstream

BYTES_PER_SECOND = 16_000  # a 128 kbit/s constant-bitrate MP3
PACE_SECONDS = 0.1


@pytest.fixture(scope="module")
def mp3(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("probe") / "tone.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=40",
                    "-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", str(path)], check=True)
    return path.read_bytes()


def serve(audio: bytes, burst_seconds: float) -> type[BaseHTTPRequestHandler]:
    class Upstream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path != "/live.mp3":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.end_headers()
            sent = int(burst_seconds * BYTES_PER_SECOND)
            try:
                self.wfile.write(audio[:sent])
                while sent < len(audio):
                    time.sleep(PACE_SECONDS)
                    self.wfile.write(audio[sent:sent + int(PACE_SECONDS * BYTES_PER_SECOND)])
                    sent += int(PACE_SECONDS * BYTES_PER_SECOND)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the probe has what it needs

        def log_message(self, *args: object) -> None:
            pass

    return Upstream


@pytest.fixture
def upstream(mp3: bytes, request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), serve(mp3, request.param))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def probe(url: str) -> hls_launcher.probe.Probe:
    settings = StationSettings(slug="radio-joy", stream_url=url, read_timeout_seconds=10)
    return hls_launcher.probe_upstream(settings, Upstream(url, None))


# How long FFmpeg takes to start and connect counts against the burst, so the measure may fall short of it by that
# much (generously: a busy machine), never exceed it by more than a report's period.
@pytest.mark.parametrize("upstream", [4.0], indirect=True)
def test_the_probe_measures_the_burst_and_names_the_codec(upstream: str) -> None:
    probed = probe(f"{upstream}/live.mp3")
    assert (probed.codec, probed.input_format) == ("mp3", "mp3")
    assert 2.0 <= probed.burst <= 4.0 + 2 * hls_launcher.probe.REPORT_SECONDS, probed


@pytest.mark.parametrize("upstream", [4.0], indirect=True)
def test_a_restart_probes_for_the_codec_alone(upstream: str) -> None:
    url = f"{upstream}/live.mp3"
    settings = StationSettings(slug="radio-joy", stream_url=url, read_timeout_seconds=10)
    assert hls_launcher.probe_upstream(settings, Upstream(url, None), with_burst=False) == hls_launcher.probe.Probe(
        "mp3", 0.0, "mp3")


@pytest.mark.parametrize("upstream", [0.0], indirect=True)
def test_an_upstream_without_a_burst_measures_none(upstream: str) -> None:
    assert probe(f"{upstream}/live.mp3").burst <= 1.0


@pytest.mark.parametrize("upstream", [4.0], indirect=True)
def test_an_upstream_that_fails_is_a_clear_launch_error(upstream: str) -> None:
    with pytest.raises(LaunchError, match=r"^cannot probe http://127\.0\.0\.1:\d+/gone\.mp3: .*404 Not Found"):
        probe(f"{upstream}/gone.mp3")


def test_an_upstream_that_sends_no_audio_is_a_clear_launch_error(tmp_path: Path) -> None:
    class Text(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"no radio here\n" * 1000)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Text)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(LaunchError, match="^cannot probe http://127.0.0.1:"):
            probe(f"http://127.0.0.1:{server.server_address[1]}/live.mp3")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("upstream", [4.0], indirect=True)
def test_ffmpeg_held_to_another_format_refuses_the_upstream(upstream: str) -> None:
    # What makes a start from facts safe (facts.py): an upstream now in another format fails that start at once.
    url = f"{upstream}/live.mp3"
    settings = StationSettings(slug="radio-joy", stream_url=url, read_timeout_seconds=10)
    input_arguments = [argument for key, value in hls_launcher.INPUT_OPTIONS.items()
                       for argument in (f"-{key}", str(value))]
    for held_to, refused in (("aac", True), ("mp3", False)):
        document = hls_launcher.input_document(Upstream(url), hls_launcher.upstream_options(
            settings, Upstream(url), held_to))
        result = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", *input_arguments,
                                 "-i", hls_launcher.STDIN_INPUT, "-t", "0.5", "-c", "copy", "-f", "null", "-"],
                                input=document.encode(), capture_output=True, timeout=30, check=False)
        assert (result.returncode != 0, b"Format not on whitelist" in result.stderr) == (refused, refused), \
            result.stderr


@pytest.mark.parametrize(("line", "input_format"), [
    (b"[aac @ 0x55] [debug] Format aac probed with size=2048 and score=75", "aac"),
    # Icecast's MP3, joined mid-stream: FFmpeg settles on it with a low score, and says so as a warning
    (b"[mp3 @ 0x56] [warning] Format mp3 detected only with low score of 25, misdetection possible!", "mp3"),
    (b"[info] Input #0, concat, from 'pipe:0':", None),
])
def test_the_demuxer_is_read_from_ffmpegs_log(line: bytes, input_format: str | None) -> None:
    found = hls_launcher.probe.INPUT_FORMAT.search(line)
    assert (found.group(1).decode() if found else None) == input_format
