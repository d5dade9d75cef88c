"""What the last probe of a station's upstream found (its codec and its burst on connect), kept across reboots.

A probe is one more FFmpeg and one more upstream connection per start: about 50 ms of CPU (Debian's FFmpeg links
a hundred libraries) and half a second of waiting for the burst to settle. When a host boots a thousand stations,
or the upstream's server drops them all at once, that is what the start costs. So the launcher keeps each probe's
result in the unit's state directory ($STATE_DIRECTORY/<slug>.json, which outlives the output directory and the
reboot) and starts from it when it can:
- a first run (a new run after a stop or a reboot) goes by the facts whatever their age: the burst is the upstream
  server's setting, and a host that boots must come back fast;
- a restart goes by them for a day (MAX_AGE_SECONDS), then probes again: an upstream that changed its codec under
  the same URL is noticed at the station's next restart after that;
- facts of another station URL (a digest of it, credentials included, so the file holds no secret), or facts
  a failed start came after, count as none: the launcher probes and records again.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from radio_hls.common.files import read_json_object, write_atomically

MAX_AGE_SECONDS = 86400
# FFmpeg's codec names (aac, mp3, pcm_s16le): what probe.AUDIO_STREAM reads.
CODEC_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class UpstreamFacts:
    url_digest: str
    codec: str
    burst: float  # seconds of audio the upstream sent at once on connect
    measured_at: float  # Unix seconds

    def fresh(self, now: float) -> bool:
        return 0 <= now - self.measured_at < MAX_AGE_SECONDS


def url_digest(stream_url: str) -> str:
    return hashlib.sha256(stream_url.encode()).hexdigest()


def facts_path(state_dir: Path, slug: str) -> Path:
    return state_dir / f"{slug}.json"


def load(state_dir: Path, slug: str, stream_url: str) -> UpstreamFacts | None:
    """The facts last recorded for the station, None when there are none for this URL or they do not read back."""
    recorded = read_json_object(facts_path(state_dir, slug))
    try:
        facts = UpstreamFacts(str(recorded["url_digest"]), str(recorded["codec"]), float(recorded["burst"]),
                              float(recorded["measured_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    valid = (facts.url_digest == url_digest(stream_url) and CODEC_NAME.fullmatch(facts.codec)
             and math.isfinite(facts.burst) and facts.burst >= 0 and math.isfinite(facts.measured_at))
    return facts if valid else None


def save(state_dir: Path, slug: str, facts: UpstreamFacts) -> None:
    """Record the facts (atomically; never needed after a crash more than the probe they save: no fsync)."""
    write_atomically(facts_path(state_dir, slug), json.dumps(asdict(facts)), mode=0o600, make_parents=False,
                     durable=False)
