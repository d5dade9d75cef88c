"""The bitrate ladder (hls_variants: one rendition `low` at 48k in molecule.yml): each station's FFmpeg writes it next
to the main rendition, cut at the same times with the same names, and nginx serves it."""

from __future__ import annotations

import json
import shlex

import pytest
from audio.beeps import beeps
from conftest import http, parse_playlist, wait_for

OUTPUT = "/run/hls"
PLAYLIST_DIR = f"{OUTPUT}/_playlists"  # contract.json: playlists_dir_name
SLUGS = ["demo-mp3", "demo-aac"]
# Both renditions cut at the first AAC frame past the same clock-aligned time: a frame apart at most (1024 samples,
# 23 ms at 44.1 kHz; an upstream at 32 kHz has 32 ms frames).
FRAME_SECONDS = 0.05


def launch(host, slug: str) -> dict:
    return json.loads(host.file(f"{OUTPUT}/{slug}/.launch.json").content_string)


def listed(host, path: str) -> dict[str, tuple[float, float]]:
    """A run's segment list: name -> (start, end) on the cutting timeline."""
    result = host.run(f"cat {path}")
    rows = [line.split(",") for line in result.stdout.splitlines() if line.count(",") == 2]
    return {name: (float(start), float(end)) for name, start, end in rows}


def published(host, slug: str) -> list[str]:
    """The segments both renditions' playlists list (hls-playlists publishes each under its slot, <slot>.ts)."""
    def both() -> list[str] | None:
        main, low = (http(host, f"/hls/{slug}/{path}index.m3u8") for path in ("", "low/"))
        if main[0] != 200 or low[0] != 200:
            return None
        common = set(parse_playlist(main[2]).segments) & set(parse_playlist(low[2]).segments)
        return sorted(common, key=lambda name: int(name.removesuffix(".ts"))) if len(common) >= 3 else None

    return wait_for(both, timeout=120, what=f"3 segments of {slug} listed in both renditions")


@pytest.mark.parametrize("slug", SLUGS)
def test_the_run_lists_the_rendition(host, slug):
    assert launch(host, slug)["variants"] == [{"name": "low", "bitrate": "48k", "channels": 2, "sample_rate": 44100}]


@pytest.mark.parametrize("slug", SLUGS)
def test_the_rendition_is_cut_like_the_main_one(host, slug):
    def both():
        run = launch(host, slug)["run"]
        main, low = listed(host, f"{OUTPUT}/{slug}/{run}.csv"), listed(host, f"{OUTPUT}/{slug}/low/{run}.csv")
        common = sorted(set(main) & set(low), key=lambda name: int(name.split("-")[1][:-3]))
        return (run, main, low, common) if len(common) >= 3 else None

    run, main, low, common = wait_for(both, timeout=120, what=f"3 segments of {slug} in both renditions")
    # The older of the two lists (rewritten after each segment) names no segment the other lacks but its newest.
    assert len(set(main) ^ set(low)) <= 1
    for name in common:
        assert name.startswith(f"{run}-")
        assert abs(main[name][0] - low[name][0]) <= FRAME_SECONDS, (name, main[name], low[name])
        assert abs(main[name][1] - low[name][1]) <= FRAME_SECONDS, (name, main[name], low[name])
    # And the audio in them: the same span of the station's timeline (the lists count from each output's start;
    # the timestamps say where on the wall clock the audio is), published under the same name.
    for name in published(host, slug)[-2:]:
        assert abs(span(host, f"{OUTPUT}/{slug}/{name}")[0] - span(host, f"{OUTPUT}/{slug}/low/{name}")[0]) \
            <= FRAME_SECONDS, name
        assert abs(span(host, f"{OUTPUT}/{slug}/{name}")[1] - span(host, f"{OUTPUT}/{slug}/low/{name}")[1]) \
            <= FRAME_SECONDS, name


@pytest.mark.parametrize("slug", SLUGS)
def test_the_rendition_holds_the_same_audio_at_the_same_time(host, slug):
    # Cut at the same times is not enough: each output's timeline could hold other audio (a wrong offset or skip).
    for name in published(host, slug)[-2:]:
        main, low = beeps(host, f"{OUTPUT}/{slug}/{name}"), beeps(host, f"{OUTPUT}/{slug}/low/{name}")
        assert main, f"no beep found in {name}"
        assert all(any(abs(at - other) <= FRAME_SECONDS for other in low) for at in main), (name, main, low)


def span(host, path: str) -> tuple[float, float]:
    """(first packet's PTS, last packet's PTS plus its duration) of a segment, in seconds."""
    packets = json.loads(host.check_output(f"ffprobe -v error -select_streams a:0 -show_entries "
                                           f"packet=pts_time,duration_time -of json {path}"))["packets"]
    return float(packets[0]["pts_time"]), float(packets[-1]["pts_time"]) + float(packets[-1]["duration_time"])


@pytest.mark.parametrize("slug", SLUGS)
def test_the_rendition_is_aac_lc_at_about_48k(host, slug):
    path = f"{OUTPUT}/{slug}/low/{published(host, slug)[-1]}"
    probe = json.loads(host.check_output(
        f"ffprobe -v error -select_streams a:0 -show_entries stream=codec_name,profile,sample_rate,channels "
        f"-show_entries packet=size,duration_time -of json {path}"))
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["profile"], stream["sample_rate"], stream["channels"]) == (
        "aac", "LC", "44100", 2)
    # The audio's own rate (the packets), not the file's: MPEG-TS adds its packet headers on top.
    bits = sum(int(packet["size"]) for packet in probe["packets"]) * 8
    seconds = sum(float(packet["duration_time"]) for packet in probe["packets"])
    assert 36_000 <= bits / seconds <= 60_000, bits / seconds


@pytest.mark.parametrize("slug", SLUGS)
def test_nginx_serves_the_renditions_segments(host, slug):
    name = published(host, slug)[-1]
    status, headers, _ = http(host, f"/hls/{slug}/low/{name}?s=ladder-probe", "-o", "/dev/null")
    assert status == 200
    assert headers["content-type"] == "video/mp2t"
    assert "immutable" in headers["cache-control"]
    assert headers["access-control-allow-origin"] == "*"
    assert http(host, f"/hls/{slug}/low/{name}.tmp", "-o", "/dev/null")[0] == 404
    assert http(host, f"/hls/{slug}/master/{name}", "-o", "/dev/null")[0] == 404  # no rendition has that name


def test_the_multivariant_playlist_carries_the_session_onto_its_renditions(host):
    # A playlist written here for a station directory made here, so the check does not wait for hls-playlists.
    slug = "ladder-probe"
    text = ('#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n'
            '#EXT-X-STREAM-INF:BANDWIDTH=140000,AVERAGE-BANDWIDTH=130000,CODECS="mp4a.40.2"\nindex.m3u8\n'
            '#EXT-X-STREAM-INF:BANDWIDTH=60000,AVERAGE-BANDWIDTH=50000,CODECS="mp4a.40.2"\nlow/index.m3u8\n')
    media = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\n100.ts\n"
    host.run(f"mkdir -p {OUTPUT}/{slug} && printf %s {shlex.quote(text)} > {PLAYLIST_DIR}/{slug}.master.m3u8 && "
             f"printf %s {shlex.quote(media)} > {PLAYLIST_DIR}/{slug}.low.m3u8")
    try:
        status, headers, body = http(host, f"/hls/{slug}/master.m3u8?s=abc-123")
        assert status == 200 and headers["content-type"] == "application/vnd.apple.mpegurl"
        assert headers["cache-control"] == "no-cache" and headers["access-control-allow-origin"] == "*"
        assert body.splitlines()[4] == "index.m3u8?s=abc-123" and body.splitlines()[6] == "low/index.m3u8?s=abc-123"
        assert http(host, f"/hls/{slug}/master.m3u8")[2] == text  # without s= as it is
        status, _, body = http(host, f"/hls/{slug}/low/index.m3u8?s=abc-123")
        assert status == 200 and body.splitlines()[-1] == "100.ts?s=abc-123"
        host.run(f"rmdir {OUTPUT}/{slug}")
        assert http(host, f"/hls/{slug}/master.m3u8", "-o", "/dev/null")[0] == 404  # a stopped station
        assert http(host, f"/hls/{slug}/low/index.m3u8", "-o", "/dev/null")[0] == 404
    finally:
        host.run(f"rm -f {PLAYLIST_DIR}/{slug}.master.m3u8 {PLAYLIST_DIR}/{slug}.low.m3u8; rmdir {OUTPUT}/{slug}")
