"""A station's multivariant playlist (master.m3u8): one EXT-X-STREAM-INF per rendition, measured from its segments.

hls-playlists measures each rendition over the segments its media playlist lists (measure) and probes the codec of
a run's first segment once (probe_codecs); this module turns that into the playlist text. Nothing here reads a
station's files but probe_codecs.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# RFC 6381 CODECS of AAC in MPEG-TS by ffprobe's profile name (libavcodec's profile names): the object type of
# the MPEG-4 audio object the stream carries. Debian's FFmpeg encodes only LC; an upstream copied as it is may
# carry HE-AAC (SBR) or HE-AACv2 (SBR and parametric stereo).
AAC_CODECS = {"LC": "mp4a.40.2", "HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29"}
PROBE_TIMEOUT_SECONDS = 10


def codecs_from_profile(profile: str) -> str | None:
    """The CODECS value of an AAC stream of this ffprobe profile; None for one an HLS player may not take."""
    return AAC_CODECS.get(profile)


def probe_codecs(segment: Path) -> str | None:
    """The CODECS value of a segment's first audio stream; None when ffprobe fails or times out, or for a stream
    that is no AAC of a profile AAC_CODECS knows."""
    command = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=profile",
               "-of", "json", str(segment)]
    try:
        result = subprocess.run(command, capture_output=True, timeout=PROBE_TIMEOUT_SECONDS, check=False)
        streams = json.loads(result.stdout).get("streams") if result.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        return None
    if not isinstance(streams, list) or not streams or not isinstance(streams[0], dict):
        return None
    # Only AAC has these profile names (MP3 and MP2 have none: "unknown").
    return codecs_from_profile(str(streams[0].get("profile")))


@dataclass(frozen=True)
class Rendition:
    uri: str  # relative to the multivariant playlist: index.m3u8, <name>/index.m3u8
    codecs: str
    peak_bps: int
    average_bps: int


def measure(sizes_and_durations: Iterable[tuple[int, float]]) -> tuple[int, int]:
    """(peak, average) bit rate of segments given as (file bytes, EXTINF seconds), in whole bit/s rounded up.

    RFC 8216 4.3.4.2: BANDWIDTH is the peak segment bit rate (a segment's bits over its duration, the largest),
    AVERAGE-BANDWIDTH the average (all bits over all seconds). A segment without a duration is left out; none left
    measures (0, 0).
    """
    peak, bits, seconds = 0, 0, 0.0
    for size, duration in sizes_and_durations:
        if duration <= 0:
            continue
        peak = max(peak, math.ceil(size * 8 / duration))
        bits += size * 8
        seconds += duration
    return peak, math.ceil(bits / seconds) if seconds else 0


def multivariant_text(renditions: Sequence[Rendition]) -> str:
    """The multivariant playlist of renditions given main first (players that start with the first take it)."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for rendition in renditions:
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={rendition.peak_bps},AVERAGE-BANDWIDTH={rendition.average_bps},"
                     f'CODECS="{rendition.codecs}"')
        lines.append(rendition.uri)
    return "\n".join(lines) + "\n"
