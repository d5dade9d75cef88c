"""mpv with a null audio output (which keeps real time), asked for time-pos over its JSON IPC socket.
Usage: python3 mpv.py [--seconds S] URL [URL ...]"""

from __future__ import annotations

import json
import sys
from typing import Any

from runner import SocketSession, main

REQUEST = b'{"command": ["get_property", "time-pos"], "request_id": 1}\n'


def reply(received: bytes) -> dict[str, Any] | None:
    """The answer to REQUEST among what mpv wrote: whole JSON lines, the others events (or a line's tail)."""
    for line in received.split(b"\n")[:-1]:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("request_id") == 1:
            return message
    return None


class Mpv(SocketSession):
    name = "mpv"

    def command(self) -> list[str]:
        return ["mpv", "--no-config", "--no-video", "--ao=null", "--msg-level=all=warn",
                f"--input-ipc-server={self.socket_path}", self.urls[0]]

    def refresh(self) -> None:
        received = self.ask(REQUEST, lambda received: reply(received) is not None)
        answer = reply(received) if received is not None else None
        if answer is not None and isinstance(answer.get("data"), (int, float)):
            self.positions[self.urls[0]] = float(answer["data"])


if __name__ == "__main__":
    sys.exit(main(Mpv))
