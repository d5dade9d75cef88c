"""FFmpeg (libavformat's HLS demuxer, as in many players) decoding at the stream's own pace (-re) into the null
muxer; its position is -progress's out_time. Usage: python3 ffmpeg.py [--seconds S] URL [URL ...]"""

from __future__ import annotations

import sys

from runner import LineSession, main


class Ffmpeg(LineSession):
    name = "ffmpeg"

    def command(self) -> list[str]:
        return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "warning", "-re", "-i", self.urls[0],
                "-map", "0:a", "-f", "null", "-", "-nostats", "-progress", "pipe:1", "-stats_period", "0.5"]

    def line(self, text: str) -> None:
        key, _, value = text.partition("=")
        if key == "out_time_us" and value.lstrip("-").isdigit():
            self.positions[self.urls[0]] = int(value) / 1e6


if __name__ == "__main__":
    sys.exit(main(Ffmpeg))
