"""hls-sync-watch: check the station list every few seconds and run hls-sync as soon as it asks for a change.

The backend cannot push, and a full sync every hls_stream_refresh_interval (60 s) puts a flagged station on
the air up to a minute late. This is the fast path: one long-lived process asks the same GraphQL query on a
kept-alive connection (no interpreter start-up, no systemctl calls while nothing changed) and compares the
answer with the env files on disk. When they differ it asks for hls-sync.service, which stays the only writer.

It asks without any privilege: it writes a file that hls-sync.path watches, and systemd starts hls-sync.service
(a start while a run is in progress joins that run, so two never act at once). So the process that parses the
backend's answers every few seconds runs as an unprivileged dynamic user with no way to reach systemd: a root
process could ask systemd over D-Bus for anything, capabilities or not.

Fail static like the sync: a backend that does not answer changes nothing; the problem is logged once, and
again only when it changes. A refused record is logged once too, when it appears, not every few seconds (the sync
says it on each of its runs). A change the sync did not carry out (it refused an empty list, say) is asked for
once; the timer's full sync keeps retrying it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import requests

from radio_hls.common import logs
from radio_hls.common.contract import BadSetting
from radio_hls.common.graphql import BackendError
from radio_hls.stations.sync import Config, desired_state, read_current

SYNC_UNIT = "hls-sync.service"
# The unit's RestartPreventExitStatus=: a configuration error is not retried every few seconds.
EXIT_BAD_CONFIG = 2

log = logging.getLogger("hls-sync-watch")


def differs(desired: Mapping[str, str], refused: set[str], current: Mapping[str, str]) -> bool:
    """Whether a sync would change anything on disk (refused stations keep their current files)."""
    return dict(desired) != {slug: text for slug, text in current.items() if slug not in refused}


class Watcher:
    def __init__(self, config: Config, start_sync: Callable[[], None]) -> None:
        self.config = config
        self.start_sync = start_sync
        self.session = requests.Session()
        self.asked_for: dict[str, str] | None = None  # the list a sync was last started for, until in step
        self.problem: str | None = None
        self.reported: frozenset[str] = frozenset()  # the refused records' lines already logged

    def poll(self) -> bool:
        """One check; True when it started a sync."""
        try:
            wanted = desired_state(self.config, self.session)
        except BackendError as error:
            if str(error) != self.problem:
                log.warning("cannot check the station list, nothing changed: %s", error)
            self.problem = str(error)
            return False
        if self.problem is not None:
            log.info("the station list answers again")
            self.problem = None
        self.report(wanted.problems)
        desired = wanted.env_files
        if not differs(desired, wanted.refused, read_current(self.config.stations_dir)):
            self.asked_for = None
            return False
        if desired == self.asked_for:
            return False
        self.asked_for = desired
        log.info("the station list changed: starting %s", SYNC_UNIT)
        try:
            self.start_sync()
        except RuntimeError as error:
            log.warning("%s (see journalctl -u %s)", error, SYNC_UNIT)
        return True

    def report(self, problems: list[str]) -> None:
        """Log each refused record's line once, when it appears; again only after it went away and came back."""
        for problem in problems:
            if problem not in self.reported:
                log.error("%s", problem)
        if self.reported and not problems:
            log.info("no station record is refused any more")
        self.reported = frozenset(problems)


def request_sync(path: Path) -> None:
    """Ask hls-sync.path to start hls-sync.service: write the request file and close it."""
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{time.time():.3f}\n")
    except OSError as error:
        raise RuntimeError(f"cannot write {path}, which hls-sync.path watches: {error.strerror}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between two checks")
    # hls-sync.path starts SYNC_UNIT when this file is closed after a write (PathChanged=).
    parser.add_argument("--request-file", type=Path, required=True,
                        help="the file hls-sync.path watches (written to ask for a sync)")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be positive")
    logs.setup()
    try:
        config = Config.from_env(os.environ)
    except BadSetting as error:
        log.error("cannot start: %s", error)
        return EXIT_BAD_CONFIG
    watcher = Watcher(config, lambda: request_sync(args.request_file))
    log.info("checking the station list every %g s", args.interval)
    while True:
        watcher.poll()
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
