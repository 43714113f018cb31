"""The planner: a pure function from a validated cluster to a plan.

How it decides, in four steps, each deterministic (no hash seeds, no dict order, no clock, no
hostname: every tie is broken by a 64-bit key derived from names and addresses):

1. vhids. A VIP's vhid is pinned or derived from its address alone (the last octet), so adding or
   removing a VIP never changes another's. A derived vhid that collides with another in the same
   multicast group is an error that names both and the way out (pin one, or move it to another
   group).
2. Owners. Each host gets a quota, floor or ceil of its weighted share of the VIPs (pins count
   towards it). VIPs are then matched to hosts by deferred acceptance over a consistent-hash ring:
   every VIP prefers the hosts it meets walking the ring from its own point, every host keeps the
   VIPs nearest to it. The match is unique whatever the processing order, and a host's points do
   not depend on which other hosts exist, so removing or adding a host moves few VIPs beyond that
   host's own (exact balance for every host set makes a few rebalancing moves unavoidable).
3. Failover order. For each owner, its VIPs' first backups are spread over the other hosts by weight
   (floor or ceil each), the odd ones to the hosts that own least, then to those with the fewest
   first-backup duties so far. For each pair of hosts, the VIPs that would land on a third host if
   both failed are spread to the survivors that would carry least. Deeper ranks walk the hosts in
   key order from a point the VIP's key picks.
4. Priorities. advskew rises with rank in even steps (CARP.md: the shortest interval wins and a
   backup's timeout grows with its skew), so the CARP election picks the plan's order.

IPv6 VIPs (issue 11). Only iprotate hosts can hold them (ucarp speaks no IPv6), so steps 2 and 3
run once per family, over the hosts that can hold that family: first the IPv4 VIPs over every
host, exactly as in a file without IPv6 (adding IPv6 VIPs to a file never changes an IPv4 VIP's
plan), then the IPv6 VIPs over the iprotate hosts. Balance is floor or ceil of each family's
weighted share over its hosts; the IPv6 pass breaks its ties (which hosts get the odd VIPs, the
odd first-backup duties) towards the hosts the IPv4 pass loaded least, so with equal weights and
no ucarp host every host also owns floor or ceil of all the VIPs. vhids are per group as before
(IPv6 VIPs advertise to IPv6 groups, so they never collide with IPv4 ones), derived from the
address's last byte.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from iprotate.cluster.model import Cluster, ClusterError, Host, IPAddress, Vip
from iprotate.plan.model import Plan, VipPlan

MAX_VHID = 255
# advbase 0: intervals are advskew/256 s and the timeout equals the interval, so each rank needs a
# clearly longer skew than the one above it. Owner 62 ms, then 187, 437, 937 ms.
SUBSECOND_LADDER = (16, 48, 112, 240)
# advbase >= 1: the margin between two ranks' timeouts is (step)/256 s.
MAX_STEP = 64
# Points per host (of mean weight) on the owner ring.
RING_POINTS = 64  # per unit of weight

_M64 = (1 << 64) - 1


def make_plan(cluster: Cluster) -> Plan:
    """Compute the plan for `cluster`. Raises ClusterError for limits the file breaks."""
    vhids = assign_vhids(cluster)
    orders = assign_family_orders(cluster)
    hosts = {h.name: h for h in cluster.hosts}
    _check_subsecond(cluster, orders, hosts)
    vips = []
    for i, vip in enumerate(cluster.vips):
        order = orders[i]
        vips.append(
            VipPlan(
                vip=vip,
                vhid=vhids[i],
                order=order,
                advskew=ladder(cluster.advbase, len(order)),
                preempt=tuple(hosts[h].preempt for h in order),
            )
        )
    return Plan(cluster=cluster, vips=tuple(vips))


def can_hold(host: Host, vip: Vip) -> bool:
    """Whether `host` can take part in `vip`: IPv6 VIPs need an iprotate host with address6."""
    return vip.address.version == 4 or host.speaks_ipv6


def families(cluster: Cluster) -> list[tuple[list[int], Cluster]]:
    """(VIP indices, the cluster of just those VIPs and the hosts that can hold them) per family
    present, IPv4 first. A file without IPv6 VIPs gives one part: the cluster itself."""
    out = []
    for version in (4, 6):
        idx = [i for i, v in enumerate(cluster.vips) if v.address.version == version]
        if not idx:
            continue
        if len(idx) == len(cluster.vips) and version == 4:
            out.append((idx, cluster))
            continue
        hosts = tuple(h for h in cluster.hosts if version == 4 or h.speaks_ipv6)
        if not hosts:
            raise ClusterError(
                cluster.path,
                [f"{cluster.vips[idx[0]].source}: no host can hold IPv6 VIPs: ucarp speaks no "
                 "IPv6, and every iprotate host needs `address6`"],
            )  # fmt: skip
        names = {h.name for h in hosts}
        for i in idx:
            owner = cluster.vips[i].owner
            if owner is not None and owner not in names:
                raise ClusterError(
                    cluster.path,
                    [f"{cluster.vips[i].source}.owner: {owner!r} cannot hold IPv6 VIPs"],
                )
        vips = tuple(cluster.vips[i] for i in idx)
        out.append((idx, dataclasses.replace(cluster, hosts=hosts, vips=vips)))
    return out


def assign_family_orders(cluster: Cluster) -> list[tuple[str, ...]]:
    """The failover order (owner first) of every VIP, in file order, each family planned over
    the hosts that can hold it (see the module docstring)."""
    orders: list[tuple[str, ...]] = [()] * len(cluster.vips)
    prior_own: Counter[str] = Counter()
    prior_duty: Counter[str] = Counter()
    for idx, part in families(cluster):
        owners = assign_owners(part, prior_own)
        part_orders = assign_orders(part, owners, prior_own, prior_duty)
        for i, order in zip(idx, part_orders, strict=True):
            orders[i] = order
        prior_own.update(owners)
        prior_duty.update(o[1] for o in part_orders if len(o) > 1)
    return orders


def ladder(advbase: int, participants: int) -> tuple[int, ...]:
    """The advskew of each rank, owner first, for a VIP with `participants` hosts."""
    if advbase == 0:
        return SUBSECOND_LADDER[:participants]
    if participants <= 1:
        return (0,)
    step = min(MAX_STEP, 255 // (participants - 1))
    return tuple(r * step for r in range(participants))


def max_participants(cluster: Cluster) -> int:
    """Owner plus backups per VIP, within what the advskew ladder can tell apart."""
    cap = len(SUBSECOND_LADDER) if cluster.advbase == 0 else 256
    return max(1, min(len(cluster.hosts), cluster.backups + 1, cap))


# --- 1. vhids ------------------------------------------------------------------------------------


def assign_vhids(cluster: Cluster) -> list[int]:
    """The vhid of every VIP, in file order."""
    by_group: dict[IPAddress, dict[int, Vip]] = defaultdict(dict)
    out: list[int] = []
    problems: list[str] = []
    # More VIPs than vhids in a group: say so first, and not again as one collision per extra VIP
    # (no pin can fix those).
    sizes = Counter(vip.group for vip in cluster.vips)
    full = {g for g, k in sizes.items() if k > MAX_VHID}
    for group in sorted(full, key=lambda g: (g.version, g)):
        problems.append(
            f"vips: group {group} would carry {sizes[group]} VIPs, at most {MAX_VHID} fit "
            "(vhid 1..255): give some [[vips]] entries another `group`"
        )
    for vip in cluster.vips:
        vhid = vip.vhid if vip.vhid is not None else vip.address.ip.packed[-1]
        if vhid == 0:
            problems.append(
                f"{vip.source}: cannot derive a vhid from {vip.address.ip} (last octet 0); "
                "pin one with `vhid = N` (1..255)"
            )
            out.append(0)
            continue
        taken = by_group[vip.group]
        other = taken.get(vhid)
        if other is not None and vip.group not in full:
            how = "pinned" if vip.vhid is not None else "derived from the last octet"
            problems.append(
                f"{vip.source}: vhid {vhid} ({how}) of {vip.address.ip} is already used by "
                f"{other.address.ip} ({other.source}) in group {vip.group}; pin another `vhid` "
                "or give one of them another `group`"
            )
        taken.setdefault(vhid, vip)
        out.append(vhid)
    if problems:
        raise ClusterError(cluster.path, problems)
    return out


# --- 2. owners -----------------------------------------------------------------------------------


def _key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class _Ring:
    """A consistent-hash ring: each host has points in proportion to its weight; a VIP prefers the
    hosts it meets walking clockwise from its own point, nearer first. Which hosts exist changes
    no host's points, so preferences between two hosts never depend on a third."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        points = sorted(
            (_key(f"point:{h.name}#{k}"), j)
            for j, h in enumerate(hosts)
            for k in range(max(1, round(RING_POINTS * h.weight)))
        )
        self.pos = [p for p, _ in points]
        self.host = [j for _, j in points]

    def walk(self, key: int) -> Iterator[tuple[int, int]]:
        """(host index, distance) for each host in the VIP's order of preference."""
        n = len(self.pos)
        start = bisect.bisect_left(self.pos, key)
        seen: set[int] = set()
        for k in range(n):
            idx = (start + k) % n
            j = self.host[idx]
            if j not in seen:
                seen.add(j)
                yield j, (self.pos[idx] - key) & _M64


def quotas(
    count: int, names: Sequence[str], weights: Sequence[float], keys: Sequence[Any]
) -> dict[str, int]:
    """Split `count` items over `names` by weight: floor each share, the rest by largest remainder
    (ties by key)."""
    total = sum(weights)
    shares = [count * w / total for w in weights]
    base = [math.floor(s + 1e-9) for s in shares]
    rest = count - sum(base)
    order = sorted(range(len(names)), key=lambda i: (-(shares[i] - base[i]), keys[i]))
    for i in order[:rest]:
        base[i] += 1
    return dict(zip(names, base, strict=True))


def _owner_quotas(
    cluster: Cluster, free: int, pinned: dict[str, int], prior: Counter[str] | None = None
) -> dict[str, int]:
    """How many unpinned VIPs each host should own so that, pins included, every host is as close
    to its weighted share as the pins allow. Equal remainders go first to the hosts that own
    least of what `prior` counts (the VIPs of a family planned before)."""
    hosts = list(cluster.hosts)
    before = prior or Counter()
    while True:
        total = free + sum(pinned.get(h.name, 0) for h in hosts)
        keys = [(before[h.name] / h.weight, _key(h.name)) for h in hosts]
        q = quotas(total, [h.name for h in hosts], [h.weight for h in hosts], keys)
        over = [h for h in hosts if pinned.get(h.name, 0) > q[h.name]]
        if not over:
            out = {h.name: 0 for h in cluster.hosts}
            out.update({h.name: q[h.name] - pinned.get(h.name, 0) for h in hosts})
            return out
        # A host pinned beyond its share keeps its pins and takes no unpinned VIP.
        hosts = [h for h in hosts if h not in over]
        if not hosts:
            return {h.name: 0 for h in cluster.hosts}


def assign_owners(cluster: Cluster, prior: Counter[str] | None = None) -> list[str]:
    """The owner of every VIP, in file order. `prior`: VIPs each host already owns from a family
    planned before (ties only)."""
    hosts = cluster.hosts
    names = [h.name for h in hosts]
    owners: list[str | None] = [v.owner for v in cluster.vips]
    pinned: dict[str, int] = defaultdict(int)
    for o in owners:
        if o is not None:
            pinned[o] += 1
    free_idx = [i for i, o in enumerate(owners) if o is None]
    quota = _owner_quotas(cluster, len(free_idx), pinned, prior)

    # Deferred acceptance: VIPs propose in ring order; a host keeps the VIPs nearest to it.
    # The match is the unique VIP-optimal stable one, whatever order the VIPs propose in.
    ring = _Ring(hosts)
    walks = {i: ring.walk(_key("vip:" + str(cluster.vips[i].address.ip))) for i in free_idx}
    held: list[list[tuple[int, int]]] = [[] for _ in hosts]  # heaps of (-distance, vip)
    queue = list(reversed(free_idx))
    while queue:
        i = queue.pop()
        for j, dist in walks[i]:
            cap = quota[names[j]]
            heap = held[j]
            if len(heap) < cap:
                heapq.heappush(heap, (-dist, i))
                break
            if cap and (-dist, i) > heap[0]:
                _, loser = heapq.heapreplace(heap, (-dist, i))
                queue.append(loser)
                break
    for j, heap in enumerate(held):
        for _, i in heap:
            owners[i] = names[j]
    return [o for o in owners if o is not None]


# --- 3. failover order ---------------------------------------------------------------------------


def assign_orders(
    cluster: Cluster,
    owners: Sequence[str],
    prior_own: Counter[str] | None = None,
    prior_duty: Counter[str] | None = None,
) -> list[tuple[str, ...]]:
    """The failover order (owner first) of every VIP, in file order. `prior_own`/`prior_duty`:
    VIPs owned and first-backup duties from a family planned before (ties and loads only)."""
    hosts = cluster.hosts
    names = [h.name for h in hosts]
    weight = {h.name: h.weight for h in hosts}
    hkey = {h.name: _key("host:" + h.name) for h in hosts}
    depth = max_participants(cluster)
    m = len(cluster.vips)
    orders: list[list[str]] = [[owners[i]] for i in range(m)]
    if depth == 1:
        return [tuple(o) for o in orders]
    vkey = [_key("vip:" + str(v.address.ip)) for v in cluster.vips]

    by_owner: dict[str, list[int]] = defaultdict(list)
    for i, o in enumerate(owners):
        by_owner[o].append(i)
    before_own = prior_own or Counter()
    own = {n: len(by_owner[n]) + before_own[n] for n in names}

    # Rank 1: spread each owner's VIPs over the others by weight; odd ones to the least burdened.
    before_duty = prior_duty or Counter()
    duty = {n: before_duty[n] for n in names}  # first-backup duties handed out so far
    to: dict[tuple[str, str], int] = defaultdict(int)  # (owner, first backup) -> VIPs
    for o in sorted(by_owner, key=lambda n: hkey[n]):
        items = sorted(by_owner[o], key=lambda i: vkey[i])
        others = [n for n in names if n != o]
        # Equal shares leave remainders: the odd ones go to the hosts that own least, then to those
        # with the fewest first-backup duties, so a single failure loads survivors evenly.
        ties = [(own[n] / weight[n], duty[n] / weight[n], hkey[n] ^ hkey[o]) for n in others]
        q = quotas(len(items), others, [weight[n] for n in others], ties)
        slots = [
            n
            for n, t in sorted(zip(others, ties, strict=True), key=lambda x: x[1])
            for _ in range(q[n])
        ]
        for i, n in zip(items, slots, strict=True):
            orders[i].append(n)
            duty[n] += 1
            to[(o, n)] += 1
    if depth == 2:
        return [tuple(o) for o in orders]

    # Rank 2: for each pair {a, b}, the VIPs that fall to a third host when both fail go to the
    # survivors that would otherwise carry least (their own VIPs plus what a and b send them).
    sends: dict[str, dict[str, int]] = defaultdict(dict)
    for (o, n), k in to.items():
        sends[o][n] = k
    base = [own[n] / weight[n] for n in names]
    inc = [1 / weight[n] for n in names]
    index = {n: j for j, n in enumerate(names)}
    # Host indices in key order: ties must not depend on the order hosts are listed in the file.
    by_key = sorted(range(len(names)), key=lambda j: hkey[names[j]])
    pairs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, o in enumerate(orders):
        a, b = sorted(o[:2], key=lambda n: hkey[n])
        pairs[(a, b)].append(i)
    for (a, b), items in sorted(pairs.items(), key=lambda kv: (hkey[kv[0][0]], hkey[kv[0][1]])):
        load = base[:]
        for n, k in (*sends[a].items(), *sends[b].items()):
            load[index[n]] += k * inc[index[n]]
        load[index[a]] = load[index[b]] = math.inf
        # Ties go round the hosts (in key order) from a point the pair picks, not always to the
        # first name.
        start = (hkey[a] ^ hkey[b]) % len(names)
        rot = [*by_key[start:], *by_key[:start]]
        for i in sorted(items, key=lambda i: vkey[i]):
            j = min(rot, key=load.__getitem__)
            orders[i].append(names[j])
            load[j] += inc[j]

    # Deeper ranks: the hosts not yet in the order, walked from a point the VIP's key picks.
    ring = sorted(names, key=lambda n: hkey[n])
    for i, o in enumerate(orders):
        start = vkey[i] % len(ring)
        for k in range(len(ring)):
            if len(o) >= depth:
                break
            n = ring[(start + k) % len(ring)]
            if n not in o:
                o.append(n)
        del o[depth:]
    return [tuple(o) for o in orders]


def _check_subsecond(
    cluster: Cluster, orders: Sequence[Sequence[str]], hosts: dict[str, Host]
) -> None:
    """advbase 0 flaps a ucarp backup (its pcap lag is up to 1 s, CARP.md): refuse that plan."""
    if cluster.advbase != 0:
        return
    bad = sorted({h for o in orders for h in o[1:] if hosts[h].engine == "ucarp"})
    if bad:
        raise ClusterError(
            cluster.path,
            [
                f"cluster.advbase: 0 (sub-second) would make ucarp host(s) {', '.join(bad)} a "
                "backup, and ucarp backups flap below 1 s; use advbase >= 1 or run iprotate there"
            ],
        )
