"""mpv with a null audio output (which keeps real time), asked for time-pos over its JSON IPC socket.
Usage: python3 mpv.py [--seconds S] URL [URL ...]"""

from __future__ import annotations

import json
import socket
import sys

from runner import Session, main

IPC_TIMEOUT = 2.0


class Mpv(Session):
    name = "mpv"
    connection: socket.socket | None = None
    replies = b""

    def command(self) -> list[str]:
        return ["mpv", "--no-config", "--no-video", "--ao=null", "--msg-level=all=warn",
                f"--input-ipc-server={self.workdir / 'ipc'}", self.urls[0]]

    def refresh(self) -> None:
        try:
            if self.connection is None:
                self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.connection.settimeout(IPC_TIMEOUT)
                self.connection.connect(str(self.workdir / "ipc"))
            self.connection.sendall(b'{"command": ["get_property", "time-pos"], "request_id": 1}\n')
            while True:
                while b"\n" not in self.replies:
                    chunk = self.connection.recv(4096)
                    if not chunk:
                        raise ConnectionError("mpv closed its IPC socket")
                    self.replies += chunk
                line, self.replies = self.replies.split(b"\n", 1)
                reply = json.loads(line)
                if reply.get("request_id") == 1:  # anything else is an event
                    break
        except (OSError, ValueError):
            # Not listening yet, or gone: the runner sees the exit.
            if self.connection is not None:
                self.connection.close()
            self.connection, self.replies = None, b""
            return
        if isinstance(reply.get("data"), (int, float)):
            self.positions[self.urls[0]] = float(reply["data"])


if __name__ == "__main__":
    sys.exit(main(Mpv))
