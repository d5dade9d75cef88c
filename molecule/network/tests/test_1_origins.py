"""Two origins that run one station publish the same segments: the same names, media sequence numbers,
PROGRAM-DATE-TIMEs and durations for the same interval of the clock (docs/design.md, "A network"), so an edge can
take the playlist from one and the next segment from the other. And how far apart their audio is there: the
glitch a listener hears when the edge switches."""

from __future__ import annotations

import m3u8  # type: ignore[import-untyped]
import pytest
from audio.beeps import beeps
from conftest import SEGMENT_SECONDS, SLUGS, http, wait_for


def whole_segments(host, slug: str) -> dict[str, tuple[int, str, float]]:
    """name -> (media sequence number, PROGRAM-DATE-TIME, EXTINF) of each listed segment that fills its slot (a
    run's first begins with its audio, mid-slot)."""
    status, text = http(host, f"/hls/{slug}/index.m3u8")
    if status != 200:
        return {}
    playlist = m3u8.loads(text)
    return {segment.uri: (playlist.media_sequence + number, segment.program_date_time.isoformat(), segment.duration)
            for number, segment in enumerate(playlist.segments)
            if abs(segment.duration - SEGMENT_SECONDS) < 1e-6}


@pytest.mark.parametrize("slug", SLUGS)
def test_both_origins_run_the_station(origins, slug):
    # Two origins and hls_station_replicas' default: each station on both.
    for origin in origins:
        assert origin.service(f"hls@{slug}").is_running, origin.backend.hostname
        wait_for(lambda origin=origin: whole_segments(origin, slug), what=f"{slug} on {origin.backend.hostname}")


@pytest.mark.parametrize("slug", SLUGS)
def test_origins_publish_the_same_segments(origins, slug):
    def shared():
        first, second = (whole_segments(origin, slug) for origin in origins)
        names = first.keys() & second.keys()
        return (first, second, sorted(names)) if len(names) >= 5 else None

    first, second, names = wait_for(shared, timeout=180, what=f"5 whole segments of {slug} listed by both origins")
    assert [first[name] for name in names] == [second[name] for name in names]
    # One number per slot, the same on both: the name is the number.
    assert all(first[name][0] == int(name.removesuffix(".ts")) for name in names), names


@pytest.mark.parametrize("slug", SLUGS)
def test_the_audio_at_a_switch(origins, slug, record_property):
    """The same slot's audio on both origins is the same audio, a little apart: that difference is the jump a
    listener hears when an edge takes one segment from one origin and the next from the other. Each origin puts the
    upstream's audio on the clock as it arrives (less the upstream's burst on connect), so the two differ by their
    network paths and burst measurements: reported (record_property and the output), not bounded: the beeps come
    every second, so the nearest one is taken for the same one, and a difference of half a second or more would
    be misread."""
    def shared():
        first, second = (whole_segments(origin, slug) for origin in origins)
        names = sorted(first.keys() & second.keys())
        return names[-4:] if len(names) >= 4 else None

    names = wait_for(shared, timeout=180, what=f"4 segments of {slug} on both origins")
    heard = [[at for name in names for at in beeps(origin, f"/run/hls/{slug}/{name}")] for origin in origins]
    assert heard[0] and heard[1], heard
    # Each beep of the first origin's inner seconds against the nearest of the second's (at the span's edges the
    # nearest one may lie outside the segments read).
    inner = [at for at in heard[0] if heard[0][0] + 0.5 <= at <= heard[0][-1] - 0.5] or heard[0]
    offsets = sorted(min((other - at for other in heard[1]), key=abs) for at in inner)
    glitch = offsets[len(offsets) // 2]
    record_property(f"{slug}_switch_glitch_s", round(glitch, 3))
    print(f"{slug}: the second origin's audio is {glitch * 1000:+.0f} ms from the first's "
          f"(spread {offsets[-1] - offsets[0]:.3f} s over {len(offsets)} beeps) in {names[0]}-{names[-1]}")
