#!/usr/bin/env bash
# Build the Debian bookworm image with systemd as PID 1 that molecule and `make demo` boot.
# No registry is reachable, so the root filesystem comes from debootstrap and enters Docker by `docker import`.
# Reused when it already exists (delete it with `docker image rm` to rebuild).
set -euo pipefail

IMAGE="${1:-hls-debian-systemd:bookworm}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

bash "$(dirname "${BASH_SOURCE[0]}")/ensure-packages.sh" debootstrap

# The same mirror the build machine uses (Deb822 or one-line sources), defaulting to Debian's own.
MIRROR=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | head -n1 | tr -d ' ' || true)
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
MIRROR="${MIRROR%/}"

ROOTFS=$(mktemp -d /var/tmp/hls-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

echo "build-image: debootstrap bookworm from $MIRROR (about a minute)" >&2
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >/dev/null

cat >"$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
SOURCES

# A container gets its identity at boot; a cached package archive only makes the image bigger.
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/etc/hostname" "$ROOTFS"/var/cache/apt/archives/*.deb

# Units that make no sense in a container only slow the boot or end in "degraded".
for unit in getty@tty1.service console-getty.service apt-daily.timer apt-daily-upgrade.timer fstrim.timer \
    e2scrub_all.timer e2scrub_reap.service systemd-remount-fs.service sys-kernel-config.mount \
    sys-kernel-debug.mount sys-kernel-tracing.mount systemd-firstboot.service dev-hugepages.mount \
    systemd-logind.service getty.target; do
    ln -sf /dev/null "$ROOTFS/etc/systemd/system/$unit"
done

tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/lib/systemd/systemd"]' \
    - "$IMAGE" >/dev/null
echo "build-image: built $IMAGE" >&2
