#!/bin/sh
# iprotate: ucarp down script (contrib/ucarp/vip-down.sh). Install it as
# /usr/local/lib/iprotate/vip-down.sh (mode 755), the default of `iprotate ucarp --downscript`.
#
# ucarp runs it without a shell, when this host becomes BACKUP (also once at start-up, and at exit
# with -z), as
#     vip-down.sh IFACE VIP [XPARAM]
#   IFACE   ucarp's -i (advert) interface; an ifupdown alias such as eth1:10 stands for eth1
#   VIP     the virtual address, without a prefix length
#   XPARAM  ucarp's -x, as `iprotate ucarp` writes it:
#             PREFIX          remove VIP/PREFIX from IFACE          e.g. 24
#             PREFIX@VIPIF    remove VIP/PREFIX from VIPIF instead   e.g. 24@eth2
#           "PREFIX VIPIF" (one argument with a space) is accepted too; no XPARAM means /32.
#
# Removes VIP/PREFIX (not there is fine). Exits non-zero only if the address is still there.
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

present() {
    ip -o -4 addr show dev "$dev" 2>/dev/null | grep -qF "inet $vip/$prefix "
}

if ! err=$(ip addr del "$vip/$prefix" dev "$dev" 2>&1); then
    if present; then
        echo "$0: ip addr del $vip/$prefix dev $dev: $err" >&2
        exit 1
    fi
fi
exit 0
