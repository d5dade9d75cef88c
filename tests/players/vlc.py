"""VLC (cvlc, its adaptive-streaming demuxer) with a dummy audio output, asked for get_time over the remote
control interface's Unix socket; it exits at the end of the stream (--play-and-exit). VLC refuses to run as root:
it runs as nobody. Usage: python3 vlc.py [--seconds S] URL [URL ...]"""

from __future__ import annotations

import os
import pwd
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from runner import Session, main

USER = "nobody"
RC_TIMEOUT = 2.0


class Vlc(Session):
    name = "vlc"
    connection: socket.socket | None = None

    def command(self) -> list[str]:
        return ["setpriv", f"--reuid={USER}", f"--regid={self.account.pw_gid}", "--clear-groups", "--",
                "cvlc", "--no-video", "--aout=adummy", "--extraintf=oldrc", "--rc-fake-tty",
                f"--rc-unix={self.workdir / 'rc'}", "--play-and-exit", self.urls[0]]

    def __init__(self, urls: Sequence[str], workdir: Path) -> None:
        super().__init__(urls, workdir)
        # VLC's configuration and its socket live in the session's directory, which nobody must own.
        self.account = pwd.getpwnam(USER)
        os.chown(workdir, self.account.pw_uid, self.account.pw_gid)

    def environment(self) -> dict[str, str] | None:
        return {**os.environ, "HOME": str(self.workdir)}

    def refresh(self) -> None:
        try:
            if self.connection is None:
                self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.connection.settimeout(RC_TIMEOUT)
                self.connection.connect(str(self.workdir / "rc"))
            self.connection.sendall(b"get_time\n")
            # The answer is a line of whole seconds, after any status lines VLC wrote since.
            replies = b""
            while not replies.endswith(b"\n") or not replies.strip().splitlines()[-1].strip().isdigit():
                chunk = self.connection.recv(4096)
                if not chunk:
                    raise ConnectionError("VLC closed its control socket")
                replies += chunk
        except OSError:
            # Not listening yet, or gone: the runner sees the exit.
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            return
        self.positions[self.urls[0]] = float(replies.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main(Vlc))
