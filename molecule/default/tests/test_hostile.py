"""Hostile input from the backend and from listeners: nothing escapes a path, a unit name or an env file."""

from __future__ import annotations

import pytest
from conftest import (
    API_KEY,
    STATIONS,
    TOKEN,
    http,
    main_pid,
    now,
    run_sync,
    session_log,
    station_ready,
    sync_log,
    wait_for,
)

LOG_FIELDS = 16
STREAM_PASSWORD = "canary-stream-password-93c1"


def station(slug, url="http://127.0.0.1:8000/demo-aac", **extra):
    return {"id": 50, "title": "Hostile", "slug": slug, "stream_url": url,
            "generate_hls_stream": True, "disabled": False, **extra}


HOSTILE_SLUGS = ["../etc", "a/b", "a b", "-rf", "UPPER", "rădio", "x" * 300, "", "a\nb", "a.service"]
HOSTILE_URLS = ["file:///etc/passwd", "concat:/etc/passwd|/etc/shadow", "subfile:,,start,0,end,0,,:/etc/passwd",
                "ftp://127.0.0.1/x", "http://127.0.0.1:8000/x\nHLS_CODEC=copy", "http:///no-host",
                "http://127.0.0.1:8000/a b", "data:audio/mp3;base64,AAAA"]


def test_hostile_station_records_are_refused_and_the_good_ones_run(host, backend):
    since = now(host)
    hostile = [station(slug) for slug in HOSTILE_SLUGS]
    hostile += [station(f"bad-url-{number}", url) for number, url in enumerate(HOSTILE_URLS)]
    hostile.append({**STATIONS[1], "stream_url": "http://127.0.0.1:8000/duplicate"})  # same slug again
    backend(stations=[*STATIONS, *hostile])
    assert run_sync(host).rc == 0
    assert host.run("ls /etc/hls/stations").stdout.split() == ["demo-aac.env", "demo-mp3.env"]
    units = host.check_output("systemctl list-units --all --plain --no-legend 'hls@*'")
    assert sorted(line.split()[0] for line in units.splitlines()) == ["hls@demo-aac.service", "hls@demo-mp3.service"]
    log = sync_log(host, since)
    assert log.count("skipping station") == len(hostile), log
    assert "duplicate" not in host.file("/etc/hls/stations/demo-aac.env").content_string
    for slug in ("demo-mp3", "demo-aac"):
        assert host.service(f"hls@{slug}").is_running


def test_a_title_cannot_inject_variables_into_the_env_file(host, backend):
    title = 'Evil"\nHLS_STREAM_URL=file:///etc/passwd\nHLS_CODEC=copy #'
    backend(stations=[STATIONS[0], {**STATIONS[1], "title": title}])
    assert run_sync(host).rc == 0
    env = host.file("/etc/hls/stations/demo-aac.env").content_string
    keys = [line.split("=", 1)[0] for line in env.splitlines() if line and not line.startswith("#")]
    assert len(keys) == len(set(keys))
    assert [line for line in env.splitlines() if line.startswith("HLS_STREAM_URL=")] == \
        ['HLS_STREAM_URL="http://127.0.0.1:8000/demo-aac"']
    wait_for(lambda: host.service("hls@demo-aac").is_running, what="demo-aac to run")
    station_ready(host, "demo-aac", min_segments=1)


def test_stream_credentials_never_show(host, backend):
    url = f"http://listener:{STREAM_PASSWORD}@127.0.0.1:8000/demo-aac"
    old_pid = main_pid(host, "demo-aac")
    backend(stations=[STATIONS[0], {**STATIONS[1], "stream_url": url}])
    assert run_sync(host).rc == 0
    assert "listener:" in host.check_output("cat /etc/hls/stations/demo-aac.env")
    wait_for(lambda: main_pid(host, "demo-aac") not in (0, old_pid), what="demo-aac to restart with its credentials")
    station_ready(host, "demo-aac", min_segments=1)
    # Make FFmpeg print its input URL in an error line: a read error on a stopped upstream.
    host.check_output("systemctl restart hls-demo-feed@demo-aac")
    places = {
        "systemctl show": host.check_output("systemctl show 'hls@*' hls-sync.service"),
        "systemctl status": host.run("systemctl status --no-pager 'hls@*'").stdout,
        "command lines": host.check_output("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' || true"),
        "journal": host.check_output("journalctl --no-pager -o cat"),
        "FFmpeg logs": host.check_output("cat /var/log/hls/*.log"),
        "nginx logs": host.check_output("cat /var/log/nginx/*.log"),
        "served files": host.check_output("grep -r . /run/hls || true"),
    }
    for place, text in places.items():
        assert STREAM_PASSWORD not in text, f"the stream password shows in {place}"


@pytest.mark.parametrize(("secret", "home"), [(TOKEN, "/etc/hls/sync.env"), (API_KEY, "/etc/hls/analytics.env")])
def test_backend_secrets_stay_in_root_only_files(host, backend, secret, home):
    assert run_sync(host).rc == 0
    assert host.run("systemctl start hls-analytics.service").rc == 0
    # The test backend (not part of the product) knows them too.
    holders = host.check_output(
        f"grep -rls --exclude-dir=hls-test-backend {secret} /etc /opt /var /run /tmp 2>/dev/null || true").split()
    assert holders == [home], holders
    assert host.file(home).mode == 0o600 and host.file(home).user == "root"
    assert secret not in host.check_output("systemctl show hls-sync.service hls-analytics.service 'hls@*'")
    assert secret not in host.check_output("journalctl --no-pager -o cat")
    assert secret not in http(host, "/hls/demo-aac/index.m3u8")[2]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST", "PATCH", "TRACE"])
def test_methods_other_than_get_head_options_are_refused(host, method):
    assert http(host, "/hls/demo-aac/index.m3u8", "-X", method, "-o", "/dev/null")[0] in (405, 400)


@pytest.mark.parametrize("path", [
    "/hls/..%2f..%2fetc/passwd", "/hls/demo-aac/..%2f..%2f..%2fetc%2fpasswd", "/hls/%2e%2e/",
    "/hls/demo-aac/%2e%2e/%2e%2e/%2e%2e/etc/hosts", "/hls//etc/passwd", "/hls/demo-aac/.backoff.json",
    "/hls/demo-aac/index.m3u8%00.ts", "/hls/demo-aac/1-1.ts/../../../etc/passwd",
])
def test_traversal_attempts_serve_nothing(host, path):
    status, _, body = http(host, path, "--path-as-is")
    assert 400 <= status < 500
    assert "root:" not in body and "localhost" not in body


def test_long_urls_are_served_huge_ones_get_414_and_the_log_stays_parseable(host):
    # nginx's request line limit is a large header buffer: 8 KB (large_client_header_buffers 4 8k).
    long_query, huge_query = "s=" + "A" * 6000 + "&ref=x", "s=" + "B" * 20000
    assert http(host, f"/hls/demo-aac/index.m3u8?{long_query}", "-o", "/dev/null")[0] == 200
    assert http(host, f"/hls/demo-aac/index.m3u8?{huge_query}", "-o", "/dev/null")[0] == 414
    logged = session_log(host, marker="A" * 6000)
    assert len(logged) == 1 and len(logged[0].split("\t")) == LOG_FIELDS, logged[0][:200]
    for line in session_log(host)[-50:]:
        assert len(line.split("\t")) == LOG_FIELDS, line[:200]


def test_one_client_flooding_gets_429_and_others_are_served(host):
    flood = ("seq 60 | xargs -P 20 -I{} curl -s -o /dev/null -w '%{http_code}\\n' "
             "-H 'X-Forwarded-For: 198.51.100.7' http://127.0.0.1/hls/demo-aac/index.m3u8")
    codes = host.check_output(flood).split()
    assert codes.count("429") > 0 and codes.count("200") >= 10, codes
    # Another client (and loopback, which is exempt) is not affected.
    other = http(host, "/hls/demo-aac/index.m3u8", "-H", "X-Forwarded-For: 198.51.100.8", "-o", "/dev/null")
    assert other[0] == 200


def test_the_limit_counts_each_client_separately(host):
    # Two clients at the same time, each below the burst: neither is refused.
    both = ("for ip in 198.51.100.21 198.51.100.22; do seq 8 | xargs -P 8 -I{} curl -s -o /dev/null "
            "-w '%{http_code}\\n' -H \"X-Forwarded-For: $ip\" http://127.0.0.1/hls/demo-aac/index.m3u8 & done; wait")
    codes = host.check_output(both).split()
    assert codes == ["200"] * 16, codes
