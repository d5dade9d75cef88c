#!/usr/bin/env bash
# Build the Debian bookworm image with systemd as PID 1 that molecule and `make demo` boot.
# No registry is reachable, so the root filesystem comes from debootstrap and enters Docker by `docker import`.
# The image follows this recipe: its tag and its label org.radio-hls.recipe carry a hash of this file, so an
# edited script builds anew and an unchanged one reuses its image at once.
#   tools/build-image.sh --name   prints the tag (hls-debian-systemd:bookworm-<hash>)
#   tools/build-image.sh [IMAGE]  builds it unless IMAGE exists with this recipe's label
set -euo pipefail

SELF="${BASH_SOURCE[0]}"
RECIPE=$(sha256sum "$SELF" | cut -c1-12)
LABEL=org.radio-hls.recipe

if [ "${1:-}" = --name ]; then
    echo "hls-debian-systemd:bookworm-$RECIPE"
    exit 0
fi
IMAGE="${1:-hls-debian-systemd:bookworm-$RECIPE}"

if [ "$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null)" = "$RECIPE" ]; then
    exit 0
fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "build-image: $IMAGE exists but not from this recipe ($RECIPE); building it again" >&2
fi

bash "$(dirname "$SELF")/ensure-packages.sh" debootstrap

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
    --change "LABEL $LABEL=$RECIPE" \
    - "$IMAGE" >/dev/null
echo "build-image: built $IMAGE" >&2
