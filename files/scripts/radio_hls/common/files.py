"""Files the programs share with each other and with nginx: written atomically, read as JSON or nothing."""

from __future__ import annotations

import grp
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def set_owner_group(path: Path | str, mode: int, group: str | None) -> None:
    os.chmod(path, mode)
    if group is not None:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)


def write_atomically(path: Path, content: str | bytes, mode: int = 0o640, group: str | None = None,
                     make_parents: bool = True, durable: bool = True) -> None:
    """Write a file so that readers see the old or the new content, never a half-written one.

    make_parents=False: fail (FileNotFoundError) rather than create a directory that someone removed.
    durable=False: no fsync, for a file rewritten every few seconds that nothing needs after a crash (a playlist).
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        set_owner_group(tmp_name, mode, group)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None when it is missing, unreadable or not JSON: files another program writes (or
    an earlier run of this one), which may not be there yet."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_json_object(path: Path) -> dict[str, Any]:
    """read_json() when it is a JSON object, else an empty one."""
    document = read_json(path)
    return document if isinstance(document, dict) else {}
