"""hls.js in Debian's headless Chromium: one page plays every URL at once, an audio element each
(tests/browser/hls.mjs; make browser installs it). Usage: python3 hlsjs.py [--seconds S] URL [URL ...]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runner import LineSession, main

PAGE = Path(__file__).resolve().parents[1] / "browser" / "hls.mjs"


class HlsJs(LineSession):
    name = "hls.js"

    def command(self) -> list[str]:
        return ["node", str(PAGE), *self.urls]

    def line(self, text: str) -> None:
        try:
            reading = json.loads(text)
        except ValueError:
            return
        if "ended" in reading:
            self.ended[reading["url"]] = reading["ended"]
        elif "position" in reading:
            self.positions[reading["url"]] = float(reading["position"])


if __name__ == "__main__":
    sys.exit(main(HlsJs, one_process_per_url=False))
