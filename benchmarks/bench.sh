#!/usr/bin/env bash
# `make bench` and `make bench-scale`: boot a fresh systemd container from the project image, deploy the
# site into it with the project's roles (stations from the GraphQL test backend, a local Icecast2 whose
# mounts answer under N names), install the peers from Debian (Liquidsoap, wrk, GoAccess), run the
# benchmarks and print one table. Run from the repository root with the venv on PATH.
#
#   benchmarks/bench.sh all     station cost, serving, what writing the playlists costs, reaction times and
#                               station restarts (and the analytics benchmark if present)
#   benchmarks/bench.sh scale   BENCH_SCALE_STATIONS AAC-copy stations on one host: the backend flags them all ->
#                               each serving, every playlist checked, what writing their playlists costs, where one
#                               start's CPU goes, station restarts among them, a host restart -> each serving
#
# Settings (environment): BENCH_STATIONS (10 per codec; also the FFmpeg peers of the playlist cost),
# BENCH_WINDOW (20 s), BENCH_ROUNDS (3), BENCH_SERVING_SECONDS (10), BENCH_RESTART_STATIONS (3 per codec, killed
# and restarted BENCH_ROUNDS times each, all at once), BENCH_SCALE_STATIONS (1000), BENCH_SCALE_WINDOW (60 s),
# BENCH_KEEP=1 keeps the container. Results: artifacts/bench/<what>/*.json and table.md.
set -euo pipefail

WHAT="${1:-all}"
IMAGE="${IMAGE:-$(bash tools/build-image.sh --name)}"
STATIONS="${BENCH_STATIONS:-10}"
WINDOW="${BENCH_WINDOW:-20}"
ROUNDS="${BENCH_ROUNDS:-3}"
SERVING_SECONDS="${BENCH_SERVING_SECONDS:-10}"
SCALE_STATIONS="${BENCH_SCALE_STATIONS:-500}"
SCALE_WINDOW="${BENCH_SCALE_WINDOW:-60}"
RESTART_STATIONS="${BENCH_RESTART_STATIONS:-3}"

case "$WHAT" in
    all) CONTAINER=hls-bench-run; MOUNTS="$STATIONS" ;;
    scale) CONTAINER=hls-bench-scale; MOUNTS="$SCALE_STATIONS" ;;
    *) echo "usage: $0 all|scale" >&2; exit 2 ;;
esac
OUT="artifacts/bench/$WHAT"
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.md

cleanup() {
    if [ "${BENCH_KEEP:-0}" != 1 ]; then
        docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

agent() {
    docker exec -w /opt/hls-bench/agent "$CONTAINER" python3 "$@"
}

python3 benchmarks/report.py machine >"$OUT/machine.json"

echo "bench: fresh container $CONTAINER from $IMAGE" >&2
docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
# No published port: the load generator runs inside the container, on its loopback.
docker run -d --name "$CONTAINER" --hostname "$CONTAINER" \
    --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
    -e container=docker --stop-signal SIGRTMIN+3 \
    "$IMAGE" /lib/systemd/systemd >/dev/null
docker exec "$CONTAINER" systemctl is-system-running --wait >/dev/null 2>&1 || true

echo "bench: deploying playbooks/site.yml with benchmarks/inventory ($MOUNTS stations per codec; log: $OUT/deploy.log)" >&2
HLS_BENCH_CONTAINER="$CONTAINER" HLS_BENCH_MOUNTS="$MOUNTS" MOLECULE_EPHEMERAL_DIRECTORY="$PWD/artifacts/bench" \
    ansible-playbook -i benchmarks/inventory/hosts.yml benchmarks/deploy.yml >"$OUT/deploy.log" 2>&1 \
    || { tail -n 30 "$OUT/deploy.log" >&2; exit 1; }
docker exec "$CONTAINER" mkdir -p /opt/hls-bench
docker cp benchmarks/agent "$CONTAINER:/opt/hls-bench/"
docker exec "$CONTAINER" systemctl stop hls-analytics.timer hls-analytics.service 2>/dev/null || true

if [ "$WHAT" = scale ]; then
    echo "bench: starting $SCALE_STATIONS AAC-copy stations" >&2
    agent reaction.py list --stations "$SCALE_STATIONS" --codecs aac --timeout 600 >"$OUT/start.json"
    agent station_cost.py --stations "$SCALE_STATIONS" --modes copy --only project --keep-running --rounds 1 \
        --window "$SCALE_WINDOW" >"$OUT/scale.json"
    echo "bench: what writing $SCALE_STATIONS playlists costs, next to $STATIONS FFmpeg writing their own" >&2
    agent playlist_cost.py --rounds 1 --window "$SCALE_WINDOW" --peer-stations "$STATIONS" >"$OUT/playlist_cost.json"
    echo "bench: where the CPU of one start goes, among $SCALE_STATIONS stations" >&2
    agent start_profile.py --slug demo-aac-1 --rounds 5 >"$OUT/start_profile.json" \
        || echo "bench: the start profile failed (the other figures go on)" >&2
    echo "bench: station restarts among $SCALE_STATIONS stations" >&2
    mapfile -t RESTARTED < <(seq -f "demo-aac-%g" 1 "$((2 * RESTART_STATIONS))")
    agent reaction.py restarts --slugs "${RESTARTED[@]}" --runs 2 >"$OUT/restarts.json"
    echo "bench: host restart with $SCALE_STATIONS stations" >&2
    started=$(date +%s.%N)
    docker restart "$CONTAINER" >/dev/null
    agent reaction.py serving --stations "$SCALE_STATIONS" --codecs aac --since "$started" --timeout 600 \
        >"$OUT/restart.json"
    python3 benchmarks/report.py scale "$OUT" | tee "$OUT/table.md"
    exit 0
fi

echo "bench: $STATIONS stations per codec in the backend" >&2
agent reaction.py list --stations "$STATIONS" >"$OUT/start.json"

echo "bench: station cost ($ROUNDS rounds of $WINDOW s per workload)" >&2
agent station_cost.py --stations "$STATIONS" --window "$WINDOW" --rounds "$ROUNDS" >"$OUT/station_cost.json"

echo "bench: serving" >&2
mapfile -t SLUGS < <(for i in $(seq 1 "$STATIONS"); do echo "demo-aac-$i"; echo "demo-mp3-$i"; done)
agent serving.py --rounds "$ROUNDS" --duration "$SERVING_SECONDS" --slugs "${SLUGS[@]}" >"$OUT/serving.json"

echo "bench: what writing the playlists costs (hls-playlists; FFmpeg's hls muxer and segment muxer)" >&2
agent playlist_cost.py --rounds "$ROUNDS" --window "$WINDOW" --peer-stations "$STATIONS" >"$OUT/playlist_cost.json"

echo "bench: reaction times" >&2
agent reaction.py flag --slug demo-mp3-1 --stations "$STATIONS" --runs "$ROUNDS" >"$OUT/flag.json"
# All at once: each kill or restart waits until its FFmpeg has run long enough not to count as a failed start.
mapfile -t RESTARTED < <(for i in $(seq 1 "$RESTART_STATIONS"); do echo "demo-aac-$i"; echo "demo-mp3-$i"; done)
agent reaction.py restarts --slugs "${RESTARTED[@]}" --runs "$ROUNDS" >"$OUT/restarts.json"
started=$(date +%s.%N)
docker restart "$CONTAINER" >/dev/null
agent reaction.py serving --stations "$STATIONS" --since "$started" --timeout 300 >"$OUT/restart.json"

# The analytics benchmark belongs to the analytics work (benchmarks/analytics.py, `make bench-analytics`);
# it runs on this machine, so the stations go first.
cleanup
if [ -f benchmarks/analytics.py ] && make -n bench-analytics >/dev/null 2>&1; then
    echo "bench: analytics (make bench-analytics)" >&2
    make --no-print-directory bench-analytics | tee "$OUT/analytics.out" >&2 || echo "bench: bench-analytics failed" >&2
fi

python3 benchmarks/report.py all "$OUT" | tee "$OUT/table.md"
