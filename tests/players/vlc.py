"""VLC (cvlc, its adaptive-streaming demuxer) with a dummy audio output, asked for get_time over the remote
control interface's Unix socket; it exits at the end of the stream (--play-and-exit). VLC refuses to run as root:
it runs as nobody. Usage: python3 vlc.py [--seconds S] URL [URL ...]"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import SocketSession, main

USER = "nobody"


def seconds(received: bytes) -> str:
    """The answer to get_time: a line of whole seconds, after any status lines VLC wrote since."""
    lines = received.split(b"\n")
    return lines[-2].strip().decode() if len(lines) > 1 else ""


class Vlc(SocketSession):
    name = "vlc"
    # get_time is the time of what VLC has demuxed, in whole seconds: near the live edge (after a restart) it moves
    # a segment at a time, standing still and then jumping 2 s with molecule's 2 s segments.
    resolution = 2.5

    def __init__(self, urls: Sequence[str], workdir: Path) -> None:
        super().__init__(urls, workdir)
        # VLC's configuration and its socket live in the session's directory, which nobody must own.
        self.account = pwd.getpwnam(USER)
        os.chown(workdir, self.account.pw_uid, self.account.pw_gid)

    def command(self) -> list[str]:
        return ["setpriv", f"--reuid={USER}", f"--regid={self.account.pw_gid}", "--clear-groups", "--",
                "cvlc", "--no-video", "--aout=adummy", "--extraintf=oldrc", "--rc-fake-tty",
                f"--rc-unix={self.socket_path}", "--play-and-exit", self.urls[0]]

    def environment(self) -> dict[str, str] | None:
        return {**os.environ, "HOME": str(self.workdir)}

    def refresh(self) -> None:
        received = self.ask(b"get_time\n", lambda received: seconds(received).isdigit())
        if received is not None:
            self.positions[self.urls[0]] = float(seconds(received))


if __name__ == "__main__":
    sys.exit(main(Vlc))
