"""Sessions: who made a request, and who is listening right now.

- A request with a valid `s` belongs to that session, whoever else shares its address and user agent: nginx
  appends the listener's `s` to every segment URI of the playlist it serves, so players that drop the query
  string when they resolve segment URIs still send it.
- A request without one is keyed by a hash of its client IP and user agent, keyed with a random key of the
  day (UTC) that is thrown away the day after: no raw address is kept, and yesterday's hashes cannot be
  recomputed. It joins the `s` session seen with the same key within the session timeout when there is exactly
  one such session (on its station, else at all); when several share the key (carrier NAT, one app) nothing
  tells them apart, so it is not guessed: like a request whose key never had an `s`, it gets a session of its
  own, a new one after every gap longer than the timeout (the backend's rule).
- Live listeners: sessions seen in the last 60 s, per station (the backend's definition of active).

Everything that must outlive a run is in `state`, a JSON-ready dict saved by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from radio_hls.analytics.logparse import LAST_MSEC, Aggregate, Aggregator, Networks, Requests, no_gc

DAY_MS = 86_400_000
SESSION_AND_SLUG = operator.itemgetter(0, 1)
LIVE_WINDOW_MS = 60_000


@dataclass
class Prepared:
    """What a batch's events are made of, as far as it needs no session state, so that it can be made before the
    sessions of the batches before are assigned (run.Committer):

    merged:    the aggregator's by_session table, which anonymous aggregates join once they have a session;
    joins:     (session id, slug, msec, client address, user agent as logged) of each `s` session's latest request
               per station (the first of equal ones): what requests without `s` join;
    anonymous: the anonymous aggregates oldest first, each with its client's address and user agent as logged.
    """

    merged: dict[tuple[Any, ...], Aggregate]
    joins: list[tuple[str, str, int, str | None, str]]
    anonymous: list[tuple[Aggregate, str | None, str]]
    requests: Requests


def prepare(aggregator: Aggregator, cloudflare: Networks) -> Prepared:
    """Take the aggregator's tables (it is left empty) and prepare their events."""
    with no_gc():
        log = aggregator.log
        requests = Requests(cloudflare, log)
        client = requests.client
        merged, anonymous = aggregator.take()
        latest: dict[tuple[str, str], Aggregate] = {}
        for pair, aggregate in zip(map(SESSION_AND_SLUG, merged), merged.values(), strict=True):
            if aggregate[3] > latest.setdefault(pair, aggregate)[3]:
                latest[pair] = aggregate
        joins = []
        for (session_id, slug), aggregate in latest.items():
            fields = aggregate[4].split(b"\t")
            joins.append((session_id, slug, aggregate[3], *client(fields[log.remote_addr], fields[log.peer_addr],
                                                                   fields[log.cf_ip], fields[log.user_agent])))
        return Prepared(merged, joins, [(aggregate, *client(*aggregate[5][:4]))
                                        for aggregate in sorted(anonymous.values(), key=LAST_MSEC)], requests)


class Sessions:
    def __init__(self, state: dict[str, Any] | None = None, timeout_minutes: float = 5) -> None:
        state = state or {}
        self.timeout_ms = int(timeout_minutes * 60_000)
        self.keys: dict[str, str] = dict(state.get("keys") or {})  # UTC day number -> hex key
        # client key -> {session id: [slug, last msec]}: the `s` sessions seen with that key. (A list value is
        # the single join of older versions: dropped, it only ever mattered for one session timeout.)
        self.joins: dict[str, dict[str, list[Any]]] = {client: dict(seen) for client, seen in
                                                   (state.get("joins") or {}).items() if isinstance(seen, dict)}
        self.anonymous: dict[str, list[Any]] = dict(state.get("anonymous") or {})  # client key -> [start, last msec]
        self.live: dict[str, dict[str, int]] = {slug: dict(seen) for slug, seen in (state.get("live") or {}).items()}
        self._client_keys: dict[tuple[str, str, int], str] = {}
        self._hashed: dict[tuple[str, int], str] = {}  # (client key, span start) -> its session id
        self.ambiguous = 0  # requests without `s` whose key several `s` sessions shared (this instance's count)

    def state(self) -> dict[str, Any]:
        return {"keys": self.keys, "joins": self.joins, "anonymous": self.anonymous, "live": self.live}

    def day_key(self, day: int) -> bytes:
        key = self.keys.get(str(day))
        if key is None:
            key = self.keys[str(day)] = secrets.token_hex(32)
        return bytes.fromhex(key)

    def client_key(self, ip: str | None, user_agent: str, msec: int) -> str:
        """The keyed hash of a client: the same all day, unlinkable to the next day's."""
        day = msec // DAY_MS
        cache_key = (ip or "", user_agent, day)
        found = self._client_keys.get(cache_key)
        if found is None:
            message = f"{ip or ''}\n{user_agent}".encode("utf-8", "replace")
            found = hmac.new(self.day_key(day), message, hashlib.sha256).hexdigest()[:32]
            self._client_keys[cache_key] = found
        return found

    def join(self, client: str, session_id: str, slug: str, msec: int) -> None:
        """Remember that this client key made `session_id`'s requests, for its requests that carry no `s`."""
        seen = self.joins.setdefault(client, {})
        known = seen.get(session_id)
        if known is None or msec >= known[1]:
            seen[session_id] = [slug, msec]

    def owner(self, client: str, slug: str, msec: int) -> str | None:
        """The one `s` session a request without `s` belongs to, if exactly one is possible: the sessions of its
        client key within the timeout, those on its station first. None when there is none, or several."""
        seen = self.joins.get(client)
        if not seen:
            return None
        if len(seen) == 1:  # most clients: one listener
            [(session_id, (_slug, last))] = seen.items()
            return session_id if abs(msec - last) <= self.timeout_ms else None
        near = [(session_id, seen_slug) for session_id, (seen_slug, last) in seen.items()
                if abs(msec - last) <= self.timeout_ms]
        owners = [session_id for session_id, seen_slug in near if seen_slug == slug] or \
            [session_id for session_id, _ in near]
        if len(owners) == 1:
            return owners[0]
        if owners:
            self.ambiguous += 1
        return None

    def session_of(self, client: str, slug: str, msec: int) -> str:
        """The session of a request without `s`: its client's one `s` session, else a hashed one."""
        owner = self.owner(client, slug, msec)
        if owner is not None:
            return owner
        span = self.anonymous.get(client)
        if span is None or msec - span[1] > self.timeout_ms:
            span = self.anonymous[client] = [msec, msec]
        elif msec > span[1]:
            span[1] = msec
        found = self._hashed.get((client, span[0]))
        if found is None:
            digest = hashlib.sha256(f"{client}:{span[0]}".encode()).digest()
            found = self._hashed[(client, span[0])] = str(uuid.UUID(bytes=digest[:16]))
        return found

    def prune(self, now_ms: int) -> None:
        """Forget what can no longer matter: joins and spans past the timeout, keys older than yesterday."""
        horizon = now_ms - self.timeout_ms
        self.joins = {client: kept for client, seen in self.joins.items()
                      if (kept := {sid: value for sid, value in seen.items() if value[1] >= horizon})}
        self.anonymous = {client: value for client, value in self.anonymous.items() if value[1] >= horizon}
        live_horizon = now_ms - LIVE_WINDOW_MS
        self.live = {slug: recent for slug, seen in self.live.items()
                     if (recent := {sid: last for sid, last in seen.items() if last >= live_horizon})}
        today = now_ms // DAY_MS
        self.keys = {day: key for day, key in self.keys.items() if int(day) >= today - 1}
        self._client_keys.clear()
        self._hashed.clear()

    def listeners(self, now_ms: int) -> dict[str, int]:
        """Sessions seen in the last 60 s, per station."""
        horizon = now_ms - LIVE_WINDOW_MS
        counts = {slug: sum(1 for last in seen.values() if last >= horizon) for slug, seen in self.live.items()}
        return {slug: count for slug, count in sorted(counts.items()) if count}

    def assign(self, aggregator: Aggregator, cloudflare: Networks) -> list[dict[str, Any]]:
        """The events of everything the aggregator collected, oldest first; clears the aggregator."""
        return self.assign_prepared(prepare(aggregator, cloudflare))

    def assign_prepared(self, prepared: Prepared) -> list[dict[str, Any]]:
        """The events of a prepared batch, oldest first."""
        with no_gc():
            return self._assign(prepared)

    def _assign(self, prepared: Prepared) -> list[dict[str, Any]]:
        merged = prepared.merged
        for session_id, slug, msec, ip, user_agent in prepared.joins:
            self.join(self.client_key(ip, user_agent, msec), session_id, slug, msec)
        for aggregate, ip, user_agent in prepared.anonymous:
            _remote, _peer, _cf_ip, _agent, slug, kind, window = aggregate[5]
            key = (self.session_of(self.client_key(ip, user_agent, aggregate[3]), slug, aggregate[3]), slug, kind,
                   window)
            target = merged.get(key)
            if target is None:
                aggregate[5] = key
                merged[key] = aggregate
            else:
                merged[key] = [target[0] + aggregate[0], target[1] + aggregate[1], target[2] + aggregate[2],
                               *(target[3:5] if target[3] >= aggregate[3] else aggregate[3:5]), key]
        events = []
        live = self.live
        event = prepared.requests.event
        for aggregate in sorted(merged.values(), key=LAST_MSEC):
            session_id, slug, _kind, _window = aggregate[5]
            msec = aggregate[3]
            station = live.get(slug)
            if station is None:
                station = live[slug] = {}
            if msec > station.get(session_id, 0):
                station[session_id] = msec
            events.append(event(aggregate))
        return events
