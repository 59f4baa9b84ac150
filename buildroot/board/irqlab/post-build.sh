#!/bin/sh
# Buildroot post-build script of the irqlab guest (BR2_ROOTFS_POST_BUILD_SCRIPT).
# Runs after the overlay is copied, before the rootfs image is made; $1 is the
# target directory. Everything that must not be committed (keys) and every
# value the Debian image shares with this one (markers, addresses) comes from
# the environment, set by the harness (harness/irqlab/build/buildroot.py):
#
#   IRQLAB_AUTHORIZED_KEYS_FILE  required: OpenSSH public key line(s) that may
#                                log in as root
#   IRQLAB_HOST_KEY_FILE         optional: dropbear ed25519 host key (dropbear's
#                                own format); without it dropbear makes one at
#                                first boot (-R)
#   IRQLAB_READY_MARKER          required: console line prefix once SSH listens
#   IRQLAB_FAILED_MARKER         required: console line prefix when boot fails
#   IRQLAB_GUEST_ADDR            required: eth0 address with prefix (10.0.2.15/24)
#   IRQLAB_GATEWAY               required: default route (10.0.2.2)
#   IRQLAB_HOSTNAME              required: host name

set -eu

TARGET_DIR=${1:?usage: $0 <target dir>}

die() {
	echo "irqlab post-build: $*" >&2
	exit 1
}

need() {
	eval "value=\${$1:-}"
	[ -n "$value" ] || die "$1 is not set (build with 'invoke buildroot-build', or see board/irqlab/readme.txt)"
	case "$value" in
	*\'*) die "$1 must not contain a single quote" ;;
	esac
}

for var in IRQLAB_AUTHORIZED_KEYS_FILE IRQLAB_READY_MARKER IRQLAB_FAILED_MARKER \
	IRQLAB_GUEST_ADDR IRQLAB_GATEWAY IRQLAB_HOSTNAME; do
	need "$var"
done

# Root's authorized keys: public keys only, never a private key.
keys=$IRQLAB_AUTHORIZED_KEYS_FILE
[ -r "$keys" ] || die "cannot read IRQLAB_AUTHORIZED_KEYS_FILE=$keys"
if grep -q 'PRIVATE KEY' "$keys"; then
	die "$keys holds a private key; give the public key (.pub)"
fi
grep -Eq '^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh.com) ' "$keys" ||
	die "$keys has no OpenSSH public key line"
install -d -m 0700 "$TARGET_DIR/root" "$TARGET_DIR/root/.ssh"
install -m 0600 "$keys" "$TARGET_DIR/root/.ssh/authorized_keys"

# dropbear: Buildroot links /etc/dropbear to /var/run/dropbear (volatile);
# the initramfs is writable, so keep the keys in a real directory.
if [ -L "$TARGET_DIR/etc/dropbear" ]; then
	rm "$TARGET_DIR/etc/dropbear"
fi
install -d -m 0700 "$TARGET_DIR/etc/dropbear"
rm -f "$TARGET_DIR/etc/dropbear/dropbear_ed25519_host_key"
if [ -n "${IRQLAB_HOST_KEY_FILE:-}" ]; then
	[ -r "$IRQLAB_HOST_KEY_FILE" ] || die "cannot read IRQLAB_HOST_KEY_FILE=$IRQLAB_HOST_KEY_FILE"
	install -m 0600 "$IRQLAB_HOST_KEY_FILE" "$TARGET_DIR/etc/dropbear/dropbear_ed25519_host_key"
fi
# S99irqlab starts dropbear itself (same options as the Debian image), after
# the network is up and the requested modules are loaded.
rm -f "$TARGET_DIR/etc/init.d/S50dropbear"

# The boot sequence both images share (this tree is buildroot/ of the repository).
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
install -d -m 0755 "$TARGET_DIR/usr/lib/irqlab"
install -m 0644 "$REPO/harness/irqlab/build/guest/irqlab-boot.sh" "$TARGET_DIR/usr/lib/irqlab/boot.sh"

install -d -m 0755 "$TARGET_DIR/etc/irqlab"
cat >"$TARGET_DIR/etc/irqlab/boot.conf" <<CONF
# Written by board/irqlab/post-build.sh; read by /etc/init.d/S99irqlab
# for /usr/lib/irqlab/boot.sh.
READY_MARKER='$IRQLAB_READY_MARKER'
FAILED_MARKER='$IRQLAB_FAILED_MARKER'
GUEST_ADDR='$IRQLAB_GUEST_ADDR'
GATEWAY='$IRQLAB_GATEWAY'
CONF
chmod 0644 "$TARGET_DIR/etc/irqlab/boot.conf"
echo "buildroot" >"$TARGET_DIR/etc/irqlab/image"
chmod 0644 "$TARGET_DIR/etc/irqlab/image"
echo "$IRQLAB_HOSTNAME" >"$TARGET_DIR/etc/hostname"

# Permissions of the overlay files (git keeps only the executable bit).
chmod 0755 "$TARGET_DIR/etc/init.d/S99irqlab"
