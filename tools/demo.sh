#!/usr/bin/env bash
# `make demo`: boot a local systemd container, deploy playbooks/site.yml with inventories/demo into it,
# and say what to try. Run from the repository root with the venv on PATH.
set -euo pipefail

CONTAINER="${1:-hls-demo}"
IMAGE="${2:-$(bash "$(dirname "$0")/build-image.sh" --name)}"
PORT="${3:-8080}"

if ! docker container inspect "$CONTAINER" >/dev/null 2>&1; then
    docker run -d --name "$CONTAINER" --hostname "$CONTAINER" \
        --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
        -e container=docker --stop-signal SIGRTMIN+3 \
        -p "127.0.0.1:$PORT:80" "$IMAGE" /lib/systemd/systemd >/dev/null
else
    running=$(docker container inspect -f '{{.Config.Image}}' "$CONTAINER")
    if [ "$running" != "$IMAGE" ]; then
        echo "demo: $CONTAINER runs $running, not $IMAGE; \`make demo-clean\` starts it afresh from $IMAGE" >&2
    fi
    if [ "$(docker container inspect -f '{{.State.Running}}' "$CONTAINER")" != true ]; then
        docker start "$CONTAINER" >/dev/null
    fi
fi
docker exec "$CONTAINER" systemctl is-system-running --wait >/dev/null 2>&1 || true

ansible-playbook -i inventories/demo/hosts.yml playbooks/site.yml

echo "Waiting for the first segments..."
for slug in demo-mp3 demo-aac; do
    for attempt in $(seq 1 60); do
        curl -fs -o /dev/null "http://127.0.0.1:$PORT/hls/$slug/index.m3u8" && break
        if [ "$attempt" = 60 ]; then
            echo "demo: $slug has no playlist after 60 s; see: docker exec $CONTAINER tail /var/log/hls/$slug.log" >&2
            exit 1
        fi
        sleep 1
    done
done

cat <<DONE

The demo is up: two stations from a local Icecast2 (an MP3 one transcoded to AAC, an AAC one copied).
  Status:    http://127.0.0.1:$PORT/ (the station list with a player), /health, /metrics
             docker exec -it $CONTAINER hlsctl status
  Play:      ffplay http://127.0.0.1:$PORT/hls/demo-mp3/index.m3u8
             ffplay http://127.0.0.1:$PORT/hls/demo-aac/index.m3u8
             (or open the URL in Safari, VLC, or any hls.js player)
  Inspect:   docker exec -it $CONTAINER systemctl status 'hls@*'
             docker exec -it $CONTAINER systemctl stop hls@demo-aac     # its playlist is gone within seconds
             docker exec -it $CONTAINER systemctl start hls@demo-aac
             docker exec -it $CONTAINER journalctl -u hls-sync --no-pager -n 20
             docker exec -it $CONTAINER tail -f /var/log/hls/demo-mp3.log
             docker exec -it $CONTAINER tail -f /var/log/nginx/hls-access.log
  Stop it:   make demo-clean
DONE
