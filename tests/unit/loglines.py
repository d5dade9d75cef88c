"""Session log lines exactly as nginx writes them (log_format hls_session escape=json), for the analytics tests."""

from __future__ import annotations

import time

from radio_hls.common.contract import SESSION_LOG_FIELDS

T0 = 1_795_514_400_000  # 2026-11-24T10:00:00Z in milliseconds
UA = "ExoPlayer/2.19 (Linux; Android 14)"


def nginx_escape(value: str) -> str:
    """nginx's escape=json (ngx_escape_json): quote, backslash and control characters; nothing else."""
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}.get(char, f"\\u{code:04x}"))
        else:
            out.append(char)
    return "".join(out)


def line(*, s: str = "sess-1", slug: str = "radio-joy", kind: str = "segment", uri: str | None = None,
         msec: int = T0, status: int = 200, size: int = 1000, seconds: float = 0.001,
         remote: str = "203.0.113.7", peer: str | None = None, forwarded_for: str = "", cf_ip: str = "",
         method: str = "GET", ua: str = UA, referer: str = "", ref: str = "radio-crestin-android") -> str:
    """One log line (with its newline); values are escaped the way nginx would."""
    if uri is None:
        uri = f"/hls/{slug}/index.m3u8" if kind == "playlist" else f"/hls/{slug}/{msec}-1.ts"
    values = {
        "time_iso8601": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(msec / 1000)),
        "msec": f"{msec // 1000}.{msec % 1000:03d}", "hls_slug": slug, "arg_s": s, "arg_ref": ref,
        "remote_addr": remote, "realip_remote_addr": peer or remote, "http_x_forwarded_for": forwarded_for,
        "http_cf_connecting_ip": cf_ip, "request_method": method, "uri": uri, "status": str(status),
        "body_bytes_sent": str(size), "request_time": f"{seconds:.3f}", "http_user_agent": ua, "http_referer": referer,
    }
    # In the order of the contract, which the role's log_format follows too.
    return "\t".join(nginx_escape(values[name]) for name in SESSION_LOG_FIELDS) + "\n"


def listening(session: str, start: int = T0, seconds: int = 30, segment: int = 2, **extra: object) -> list[str]:
    """What one player does: a playlist request and a segment request every `segment` seconds."""
    lines = []
    for offset in range(0, seconds * 1000, segment * 1000):
        lines.append(line(s=session, kind="playlist", msec=start + offset, size=300, **extra))
        lines.append(line(s=session, kind="segment", msec=start + offset + 50, size=32000, **extra))
    return lines
