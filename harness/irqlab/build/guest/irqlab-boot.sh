# irqlab guest boot sequence, shared by both guest images: sourced (POSIX sh,
# busybox ash) by the Debian image's /init (init.sh.in) and by the Buildroot
# image's /etc/init.d/S99irqlab, installed in both as /usr/lib/irqlab/boot.sh.
#
# The caller sets READY_MARKER, FAILED_MARKER, GUEST_ADDR and GATEWAY (the
# harness's values, irqlab.build.boot.boot_values) and defines
#   fail <reason>   what a failed boot does after irqlab_failed has printed
#                   "<FAILED_MARKER>: <reason>" (a console shell, or exit 1).
# Then, in this order:
#   irqlab_network                    eth0 with QEMU user networking's address
#   irqlab_modprobe a,b               the modules the harness asks for
#                                     (irqlab_modprobe= on the kernel command line)
#   irqlab_dropbear [key options]     dropbear, key authentication only
#   irqlab_ready                      wait until it listens on port 22, then print
#                                     "<READY_MARKER> uptime=<s>": connect now
# shellcheck shell=sh

DROPBEAR_PID=
DROPBEAR_LOG=/run/dropbear.log

irqlab_failed() {
	echo "$FAILED_MARKER: $*"
}

irqlab_network() {
	# No IPv6: nothing here uses it, and QEMU's user network answered the guest's
	# router solicitation 1-2 s after every restore of a snapshot; routing that first
	# packet in disables a DO_ONCE static key, which patches kernel text and waits,
	# preemption off, for every CPU to answer an IPI (a test holding a CPU with
	# interrupts off stalled the others until it gave up).  Not there: not built in.
	for c in all default; do
		f=/proc/sys/net/ipv6/conf/$c/disable_ipv6
		[ ! -e "$f" ] || echo 1 >"$f"
	done
	ip link set lo up
	[ -e /sys/class/net/eth0 ] || fail "no eth0 (is a virtio-net-pci NIC attached?)"
	ip link set eth0 up
	ip addr add "$GUEST_ADDR" dev eth0 || fail "ip addr add $GUEST_ADDR"
	ip route add default via "$GATEWAY" || fail "ip route add default via $GATEWAY"
}

irqlab_modprobe() {
	for m in $(echo "$1" | tr ',' ' '); do
		modprobe "$m" || fail "modprobe $m"
	done
}

irqlab_dropbear() {
	dropbear -F -E -s -g -p 22 -W 262144 "$@" 2>>"$DROPBEAR_LOG" &
	DROPBEAR_PID=$!
}

irqlab_ready() {
	n=0
	until grep -q ' 00000000:0016 00000000:0000 0A ' /proc/net/tcp; do
		kill -0 "$DROPBEAR_PID" 2>/dev/null || fail "dropbear exited: $(cat "$DROPBEAR_LOG")"
		n=$((n + 1))
		[ "$n" -lt 5000 ] || fail "dropbear does not listen on port 22"
		usleep 2000
	done
	read -r up _ </proc/uptime
	echo "$READY_MARKER uptime=$up"
}
