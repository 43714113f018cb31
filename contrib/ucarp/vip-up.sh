#!/bin/sh
# iprotate: ucarp up script (contrib/ucarp/vip-up.sh). Install it as
# /usr/local/lib/iprotate/vip-up.sh (mode 755), the default of `iprotate ucarp --upscript`.
#
# ucarp runs it without a shell, when this host becomes MASTER, as
#     vip-up.sh IFACE VIP [XPARAM]
#   IFACE   ucarp's -i (advert) interface; an ifupdown alias such as eth1:10 stands for eth1
#   VIP     the virtual address, without a prefix length
#   XPARAM  ucarp's -x, as `iprotate ucarp` writes it:
#             PREFIX          add VIP/PREFIX on IFACE               e.g. 24
#             PREFIX@VIPIF    add VIP/PREFIX on VIPIF instead        e.g. 24@eth2
#           "PREFIX VIPIF" (one argument with a space) is accepted too; no XPARAM means /32.
#
# Adds VIP/PREFIX (already there is fine), then sends one gratuitous ARP for it on that interface
# in the background when arping (Thomas Habets' or iputils') is installed, so ucarp, which waits
# for this script, is not held up. Exits non-zero only if the address is not there afterwards.
set -eu
PATH=/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin
export PATH

usage() {
    echo "usage: $0 IFACE VIP [PREFIX|PREFIX@VIPIF]" >&2
    exit 2
}
[ $# -ge 2 ] || usage
iface=${1%%:*}
vip=$2
x=${3:-32}
case $x in
    *@*) prefix=${x%%@*} dev=${x#*@} ;;
    *" "*) prefix=${x%% *} dev=${x#* } ;;
    *) prefix=$x dev=$iface ;;
esac
case $vip in '' | *[!0-9.]*) usage ;; esac
case $prefix in '' | *[!0-9]*) usage ;; esac
[ "$prefix" -le 32 ] && [ -n "$dev" ] && [ -n "$iface" ] || usage

# An ifupdown alias (eth1:10) becomes the address label, as ifconfig users expect.
label=
if [ "$1" != "$iface" ] && [ "$dev" = "$iface" ] && [ ${#1} -le 15 ]; then
    label=$1
fi

# VIPs of one subnet are secondaries of the first one added; without promote_secondaries, deleting
# that one (when this host hands it back) silently deletes every other VIP of the subnet with it.
echo 1 >"/proc/sys/net/ipv4/conf/$dev/promote_secondaries" 2>/dev/null || true

present() {
    ip -o -4 addr show dev "$dev" 2>/dev/null | grep -qF "inet $vip/$prefix "
}

if ! err=$(ip addr add "$vip/$prefix" dev "$dev" ${label:+label "$label"} 2>&1); then
    if ! present; then
        echo "$0: ip addr add $vip/$prefix dev $dev: $err" >&2
        exit 1
    fi
fi

garp() {
    if arping --help 2>&1 | grep -q Habets; then
        arping -q -U -c 1 -w 1 -i "$dev" -S "$vip" "$vip"
    else
        arping -q -U -c 1 -w 1 -I "$dev" "$vip"
    fi
}
if command -v arping >/dev/null 2>&1; then
    # exec first: a redirection on the call itself would leave the shell holding our stdout and
    # stderr open until arping ends, and a caller reading them would wait for it.
    (
        exec </dev/null >/dev/null 2>&1
        garp
    ) &
fi
exit 0
