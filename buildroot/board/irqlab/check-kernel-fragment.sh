#!/bin/sh
# Check that every option of the kernel config fragments survived into the
# final kernel .config. Kconfig drops, without a word, options it does not
# know, options whose dependencies are not met and options without a prompt
# that nothing selects (GPIOLIB_IRQCHIP is one): the build would go on and
# produce a kernel that lacks what the tests need.
#
# usage: check-kernel-fragment.sh <kernel .config> <fragment>...
#
#   CONFIG_FOO=y / =m / ="str" / =123   must appear exactly so in .config;
#                                       =m is also satisfied by =y (built in,
#                                       for instance because something selects
#                                       it), which is reported as a note.
#   # CONFIG_FOO is not set             .config must not set CONFIG_FOO to y/m.
#
# Exit status: 0 when everything survived, 1 when something did not, 2 on
# usage errors. Runs from external.mk as a LINUX_POST_CONFIGURE_HOOKS entry.

set -u

if [ "$#" -lt 2 ]; then
	echo "usage: $0 <kernel .config> <fragment>..." >&2
	exit 2
fi

config=$1
shift
if [ ! -r "$config" ]; then
	echo "check-kernel-fragment: cannot read $config" >&2
	exit 2
fi

checked=0
missing=0
for fragment in "$@"; do
	if [ ! -r "$fragment" ]; then
		echo "check-kernel-fragment: cannot read $fragment" >&2
		exit 2
	fi
	while IFS= read -r line || [ -n "$line" ]; do
		case "$line" in
		CONFIG_*=*)
			checked=$((checked + 1))
			if grep -qxF -- "$line" "$config"; then
				continue
			fi
			name=${line%%=*}
			if [ "${line#*=}" = "m" ] && grep -qxF -- "$name=y" "$config"; then
				echo "check-kernel-fragment: note: $name=y (fragment asks for m)"
				continue
			fi
			found=$(grep -E "^($name=|# $name is not set)" "$config")
			echo "check-kernel-fragment: $fragment: '$line' did not survive (.config has: ${found:-nothing})" >&2
			missing=$((missing + 1))
			;;
		"# CONFIG_"*" is not set")
			checked=$((checked + 1))
			name=${line#\# }
			name=${name%% *}
			if grep -qE "^$name=[ym]\$" "$config"; then
				echo "check-kernel-fragment: $fragment: '$line' did not survive (.config has: $(grep -E "^$name=" "$config"))" >&2
				missing=$((missing + 1))
			fi
			;;
		esac
	done < "$fragment"
done

if [ "$missing" -ne 0 ]; then
	echo "check-kernel-fragment: $missing of $checked fragment lines are not in $config" >&2
	exit 1
fi
echo "check-kernel-fragment: all $checked fragment lines are in $config"
exit 0
