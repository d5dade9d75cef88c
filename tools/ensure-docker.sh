#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install Debian's docker.io if missing and start dockerd
# ourselves (the machines this runs on have no systemd as PID 1, so the package cannot start it).
# Only the engine: tools/build-image.sh installs debootstrap itself when it has an image to build.
set -euo pipefail

if docker info >/dev/null 2>&1; then
    exit 0
fi

bash "$(dirname "${BASH_SOURCE[0]}")/ensure-packages.sh" docker

LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
echo "ensure-docker: starting dockerd (log: $LOG)" >&2
nohup dockerd >>"$LOG" 2>&1 &
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; see $LOG" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
