"""The same cluster under keepalived (Debian's package), for the failover benchmark.

The configuration is `iprotate keepalived`'s (:mod:`iprotate.export.keepalived`): one
`vrrp_instance` per VIP the host takes part in, virtual_router_id = the plan's vhid, priorities
strictly decreasing along the plan's failover order (so VRRP elects the same owner and the same
next-in-line), preempt on, advert_int = the plan's advbase. Plain multicast VRRPv2 on the lab's
bridge, no authentication (VRRPv3 has none and keepalived warns against v2's), no scripts:
keepalived adds and removes the addresses itself and sends its own gratuitous ARPs.

`KeepalivedLab` (:mod:`iprotate.lab.keepalived_lab`) is a `Lab` whose hosts run keepalived
instead of `iprotate run`; it keeps the lab's segment, client and fault model (kill = SIGKILL +
cable out, stop = SIGTERM, restore).
"""

from __future__ import annotations

from iprotate.export.keepalived import keepalived_conf, master_down, priority
from iprotate.lab.keepalived_lab import KEEPALIVED, KeepalivedLab

__all__ = ["KEEPALIVED", "KeepalivedLab", "keepalived_conf", "master_down", "priority"]
