"""Where the demo upstream's beeps are in a segment on a test host.

The demo upstreams beep at every second of their clock (lavfi sine, beep_factor: 40 ms at 4 times the tone's
frequency). A beep's start is found in 10 ms windows of the decoded 8 kHz signal's change (high frequencies change
it more), by the host's own FFmpeg and Python, so no audio leaves the host.
"""

from __future__ import annotations

import json
import shlex

ONSETS = ("import sys, array; a = array.array('h', sys.stdin.buffer.read()); "
          "env = [sum(abs(a[i] - a[i - 1]) for i in range(j + 1, j + 80)) for j in range(0, len(a) - 80, 80)]; "
          "low = sorted(env)[len(env) // 2]; "
          "print([j for j in range(1, len(env)) if env[j] > 3 * low >= env[j - 1]])")


def first_pts(host, path: str) -> float:
    """The first audio packet's PTS, in seconds: where the segment sits on the station's timeline."""
    packets = json.loads(host.check_output(f"ffprobe -v error -select_streams a:0 -show_entries packet=pts_time "
                                           f"-read_intervals %+#1 -of json {path}"))["packets"]
    return float(packets[0]["pts_time"])


def beeps(host, path: str) -> list[float]:
    """The PTS (seconds) where the beeps start in the host's segment at `path`."""
    first = first_pts(host, path)
    windows = json.loads(host.check_output(f"ffmpeg -v error -i {path} -ac 1 -ar 8000 -f s16le - | "
                                           f"python3 -c {shlex.quote(ONSETS)}"))
    return [round(first + window * 0.01, 3) for window in windows]
