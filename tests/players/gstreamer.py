"""GStreamer's playbin (hlsdemux, tsdemux, a decoder from plugins good/bad) into a fakesink that syncs to the
clock, so it plays in real time; its position is playbin's position query. Like gst-play-1.0 it pauses while
buffering and plays again at 100 %. It runs inside the runner, with Debian's python3-gi:
  /usr/bin/python3 gstreamer.py [--seconds S] URL [URL ...]"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402  (gi.require_version must come first)
from runner import Session, main  # noqa: E402


class Gstreamer(Session):
    name = "gstreamer"

    def __init__(self, urls: Sequence[str], workdir: Path) -> None:
        super().__init__(urls, workdir)
        Gst.init(None)
        self.playbin = Gst.ElementFactory.make("playbin", None)
        self.playbin.set_property("uri", self.urls[0])
        self.playbin.set_property("audio-sink", Gst.ElementFactory.make("fakesink", None))
        self.playbin.set_property("video-sink", Gst.ElementFactory.make("fakesink", None))
        self.playbin.get_property("audio-sink").set_property("sync", True)
        self.bus = self.playbin.get_bus()
        self.stopped = False

    def start(self) -> None:
        self.playbin.set_state(Gst.State.PLAYING)

    def refresh(self) -> None:
        url = self.urls[0]
        kinds = Gst.MessageType.ERROR | Gst.MessageType.EOS | Gst.MessageType.BUFFERING
        while message := self.bus.pop_filtered(kinds):
            if message.type == Gst.MessageType.ERROR:
                error, debug = message.parse_error()
                self.ended[url] = f"error: {error.message} ({debug})"
            elif message.type == Gst.MessageType.EOS:
                self.ended[url] = "end of stream"
            elif not self.stopped:
                self.playbin.set_state(Gst.State.PLAYING if message.parse_buffering() == 100 else Gst.State.PAUSED)
        found, position = self.playbin.query_position(Gst.Format.TIME)
        if found and position >= 0:
            self.positions[url] = position / Gst.SECOND

    def exited(self) -> int | None:
        return None  # in-process: an error or the end of the stream shows in `ended`

    def stop(self) -> None:
        self.stopped = True
        self.playbin.set_state(Gst.State.NULL)

    def log_tail(self) -> list[str]:
        return [self.ended[self.urls[0]]] if self.urls[0] in self.ended else []


if __name__ == "__main__":
    sys.exit(main(Gstreamer))
