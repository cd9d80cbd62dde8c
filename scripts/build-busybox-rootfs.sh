#!/bin/sh
# Build a minimal rootfs from Debian's busybox-static: the binary, one symlink per applet,
# and /etc/passwd + /etc/group with root, nobody and a uid-1000 user.
# Usage: scripts/build-busybox-rootfs.sh DEST   (DEST must not exist or be empty)
set -eu
dest=${1:?usage: build-busybox-rootfs.sh DEST}
busybox=${BUSYBOX:-/bin/busybox}
if ! [ -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
    echo "build-busybox-rootfs: $busybox not found; install it: apt-get install busybox-static" >&2
    exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
    echo "build-busybox-rootfs: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi
tmp="$dest.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
for d in bin sbin usr/bin usr/sbin etc root home/user tmp proc sys dev run var/tmp; do
    mkdir -p "$tmp/$d"
done
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
chmod 700 "$tmp/root"
cp "$busybox" "$tmp/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] && continue
    ln -s busybox "$tmp/bin/$applet"
done
cat > "$tmp/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$tmp/etc/group" <<'G'
root:x:0:
user:x:1000:
nogroup:x:65534:
G
echo "busybox" > "$tmp/etc/hostname"
: > "$tmp/etc/hosts"
: > "$tmp/etc/resolv.conf"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest"
