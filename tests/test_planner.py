"""The planner against the plan properties of DESIGN.md ("The plan", 1-7), and the report helpers.

Clusters are built in memory with `parse_cluster(dict, "test.toml")`: hosts at 198.51.100.x, VIPs in
203.0.113.0/24. Hypothesis draws the sizes (N hosts in 1..12, M VIPs in 1..200), host names,
weights, pins and the hosts that come, go or fail.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from itertools import combinations, pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from iprotate.cluster.loader import parse_cluster
from iprotate.cluster.model import Cluster, ClusterError
from iprotate.plan import report
from iprotate.plan.model import Plan
from iprotate.plan.planner import ladder, make_plan
from iprotate.plan.timing import interval_key, master_down

FILE = "test.toml"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- building clusters ---------------------------------------------------------------------------


def host(name: str, octet: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": f"198.51.100.{octet}", **extra}


def hosts_named(names: list[str], **extra: Any) -> list[dict[str, Any]]:
    return [host(n, i + 1, **extra) for i, n in enumerate(names)]


def pool(first: int, count: int, prefix: int = 24, **extra: Any) -> dict[str, Any]:
    """One [[vips]] entry: `count` addresses from 203.0.113.<first> (/32 reaches .0 and .255)."""
    return {"pool": f"203.0.113.{first}-203.0.113.{first + count - 1}/{prefix}", **extra}


def single(octet: int, prefix: int = 24, **extra: Any) -> dict[str, Any]:
    return {"address": f"203.0.113.{octet}/{prefix}", **extra}


def doc(hosts: list[dict[str, Any]], vips: list[dict[str, Any]], **cluster: Any) -> dict[str, Any]:
    return {
        "cluster": {"interface": "eth1", "password": "s3cret", **cluster},
        "hosts": hosts,
        "vips": vips,
    }


def build(data: dict[str, Any]) -> Cluster:
    return parse_cluster(data, FILE)


def plan_of(data: dict[str, Any]) -> Plan:
    return make_plan(build(data))


def simple(n: int, m: int, first: int = 1, prefix: int = 24, **cluster: Any) -> dict[str, Any]:
    """N equal hosts h1..hN, M VIPs in one pool."""
    hosts = hosts_named([f"h{i}" for i in range(1, n + 1)])
    return doc(hosts, [pool(first, m, prefix)], **cluster)


def vip_json(plan: Plan) -> list[dict[str, Any]]:
    return [v.to_json() for v in plan.vips]


def owned(plan: Plan) -> dict[str, str]:
    """VIP address -> owner."""
    return {str(v.ip): v.owner for v in plan.vips}


# --- strategies ----------------------------------------------------------------------------------

host_name = st.from_regex(r"[a-z][a-z0-9-]{0,9}", fullmatch=True)
WEIGHTS = st.sampled_from([0.5, 1, 1, 2, 3])


@st.composite
def clusters(
    draw: st.DrawFn,
    min_hosts: int = 1,
    max_hosts: int = 12,
    max_vips: int = 200,
    weighted: bool = False,
    backups: st.SearchStrategy[int] | None = None,
) -> dict[str, Any]:
    n = draw(st.integers(min_hosts, max_hosts))
    names = draw(st.lists(host_name, min_size=n, max_size=n, unique=True))
    octets = draw(st.lists(st.integers(1, 254), min_size=n, max_size=n, unique=True))
    hosts = [host(nm, o) for nm, o in zip(names, octets, strict=True)]
    if weighted:
        for h in hosts:
            h["weight"] = draw(WEIGHTS)
    m = draw(st.integers(1, max_vips))
    first = draw(st.integers(1, 255 - m))  # last octet first..first+m-1 within 1..254
    extra = {} if backups is None else {"backups": draw(backups)}
    return doc(hosts, [pool(first, m)], **extra)


def pool_span(data: dict[str, Any]) -> tuple[int, int]:
    """(first last octet, count) of the single pool `clusters()` draws."""
    first, last = (
        int(a.split("/")[0].rsplit(".", 1)[1]) for a in data["vips"][0]["pool"].split("-")
    )
    return first, last - first + 1


def weights_of(cluster: Cluster) -> dict[str, float]:
    return {h.name: h.weight for h in cluster.hosts}


def within_share(count: int, share: float) -> bool:
    """`count` is the floor or the ceil of `share` (with float slack)."""
    return math.floor(share - 1e-9) <= count <= math.ceil(share + 1e-9)


# --- 1. deterministic ----------------------------------------------------------------------------

# A few clusters covering weights, pins, groups, ucarp hosts and sub-second timing.
DETERMINISM_CASES: list[dict[str, Any]] = [
    simple(1, 5),
    simple(3, 9, first=10),
    simple(7, 200, first=20),
    simple(12, 150, first=50, backups=5),
    doc(
        [
            host("web-a", 11, weight=2),
            host("web-b", 12),
            host("web-c", 13, weight=0.5),
            host("old", 14, engine="ucarp"),
            host("web-e", 15, preempt=False),
        ],
        [
            pool(1, 40),
            single(100, owner="old"),
            single(101, vhid=250, group="224.0.0.19"),
            pool(120, 30, owner="web-c"),
        ],
        dead_ratio=4,
    ),
    doc(hosts_named(["a", "b", "c", "d"]), [pool(1, 100)], advbase=0),
]

SUBPROCESS_SCRIPT = """
import json, sys
from iprotate.cluster.loader import parse_cluster
from iprotate.plan.planner import make_plan
cases = json.load(sys.stdin)
print(json.dumps([json.dumps(make_plan(parse_cluster(c, "test.toml")).to_json()) for c in cases]))
"""


def test_same_input_same_plan_byte_for_byte() -> None:
    for case in DETERMINISM_CASES:
        a = json.dumps(plan_of(case).to_json())
        b = json.dumps(plan_of(json.loads(json.dumps(case))).to_json())
        assert a == b


@pytest.mark.parametrize("hashseed", ["0", "4242"])
def test_same_plan_in_a_fresh_process_with_another_hash_seed(hashseed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SCRIPT],
        input=json.dumps(DETERMINISM_CASES),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    theirs = json.loads(out.stdout)
    ours = [json.dumps(plan_of(c).to_json()) for c in DETERMINISM_CASES]
    assert theirs == ours


@SETTINGS
@given(clusters(), st.data())
def test_host_file_order_does_not_matter(data: dict[str, Any], rnd: st.DataObject) -> None:
    # Owners, failover orders and priorities are a function of the host *set*: every tie is broken
    # by a key derived from names (the rank-2 tie-break used the file position before; fixed).
    shuffled = {**data, "hosts": rnd.draw(st.permutations(data["hosts"]))}
    assert vip_json(plan_of(shuffled)) == vip_json(plan_of(data))


@FEW
@given(st.integers(1, 12), st.lists(st.integers(1, 254), min_size=1, max_size=120, unique=True),
       st.randoms(use_true_random=False))  # fmt: skip
def test_vip_file_order_does_not_matter(n: int, octets: list[int], rnd: Any) -> None:
    hosts = hosts_named([f"h{i}" for i in range(1, n + 1)])
    shuffled = octets[:]
    rnd.shuffle(shuffled)
    a = {v["address"]: v for v in vip_json(plan_of(doc(hosts, [single(o) for o in octets])))}
    b = {v["address"]: v for v in vip_json(plan_of(doc(hosts, [single(o) for o in shuffled])))}
    assert a == b


# --- 2. balanced owners --------------------------------------------------------------------------


@SETTINGS
@given(clusters(weighted=True))
def test_each_host_owns_floor_or_ceil_of_its_weighted_share(data: dict[str, Any]) -> None:
    plan = plan_of(data)
    w = weights_of(plan.cluster)
    total = sum(w.values())
    m = len(plan.vips)
    own = report.owners(plan)
    assert sum(own.values()) == m
    for name, count in own.items():
        assert within_share(count, m * w[name] / total), (name, count, m, w)


@SETTINGS
@given(clusters(max_vips=120), st.data())
def test_pinned_owners_are_honoured(data: dict[str, Any], rnd: st.DataObject) -> None:
    names = [h["name"] for h in data["hosts"]]
    first, m = pool_span(data)
    pins = rnd.draw(st.lists(st.one_of(st.none(), st.sampled_from(names)), min_size=m, max_size=m))
    vips = [single(first + k, **({"owner": p} if p else {})) for k, p in enumerate(pins)]
    plan = plan_of({**data, "vips": vips})
    for v, p in zip(plan.vips, pins, strict=True):
        if p is not None:
            assert v.owner == p
    # Pins that fit within every host's floor share leave the balance as it is without them.
    share = m / len(names)
    pinned = Counter(p for p in pins if p is not None)
    if all(k <= math.floor(share) for k in pinned.values()):
        for name, count in report.owners(plan).items():
            assert within_share(count, share), (name, count, share, pinned)


def test_a_host_pinned_beyond_its_share_keeps_its_pins_and_gets_nothing_more() -> None:
    vips = [single(o, owner="a") for o in range(1, 7)] + [single(o) for o in range(10, 16)]
    own = report.owners(plan_of(doc(hosts_named(["a", "b", "c"]), vips)))
    assert own == {"a": 6, "b": 3, "c": 3}


# --- 3. even single failure ----------------------------------------------------------------------


def first_backups(plan: Plan) -> dict[str, Counter[str]]:
    """owner -> Counter(first backup -> VIPs)."""
    out: dict[str, Counter[str]] = {h: Counter() for h in plan.cluster.host_names}
    for v in plan.vips:
        out[v.owner][v.order[1]] += 1
    return out


@SETTINGS
@given(clusters(min_hosts=2))
def test_single_failure_spreads_evenly_equal_weights(data: dict[str, Any]) -> None:
    plan = plan_of(data)
    names = plan.cluster.host_names
    for owner, to in first_backups(plan).items():
        counts = [to[n] for n in names if n != owner]
        assert max(counts) - min(counts) <= 1, (owner, to)
    # And what a survivor then carries is the ideal ceil(M / (N - 1)), never more.
    s = report.stats(plan)
    assert s["worst_one"]["max"] == s["ideal"]["one"]
    assert s["worst_one"]["unserved"] == 0


@SETTINGS
@given(clusters(min_hosts=2, weighted=True))
def test_single_failure_spreads_by_weight(data: dict[str, Any]) -> None:
    plan = plan_of(data)
    w = weights_of(plan.cluster)
    for owner, to in first_backups(plan).items():
        k = sum(to.values())
        others = {n: w[n] for n in w if n != owner}
        total = sum(others.values())
        for n, wn in others.items():
            assert within_share(to[n], k * wn / total), (owner, n, to, w)


# --- 4. double failure ---------------------------------------------------------------------------


@SETTINGS
@given(clusters(min_hosts=3, backups=st.sampled_from([2, 3, 5])))
def test_double_failure_close_to_ideal(data: dict[str, Any]) -> None:
    # The tightest bound that holds: ideal + 1. Measured exhaustively for N 3..12 x M 1..200 (hosts
    # h1..hN and node-7k, 4,000 plans) and on 3,000 random host-name sets: the worst survivor after
    # any two failures carries exactly ceil(M/(N-2)) in ~86% of the plans and one more in the rest,
    # never two more. One more is often unavoidable: rank 1 is spread for single failures first, and
    # the VIPs the pair {a, b} hands each other are only a part of what a third host receives.
    plan = plan_of(data)
    s = report.stats(plan)
    assert s["worst_two"]["max"] <= s["ideal"]["two"] + 1
    assert s["worst_two"]["unserved"] == 0


@SETTINGS
@given(clusters(min_hosts=1, max_hosts=7, max_vips=60, backups=st.integers(0, 4)))
@example(simple(2, 1, backups=0))  # `unserved` was lost when a later failure loaded more
def test_stats_worst_agree_with_brute_force(data: dict[str, Any]) -> None:
    plan = plan_of(data)
    s = report.stats(plan)
    names = plan.cluster.host_names
    for k, key in ((1, "worst_one"), (2, "worst_two")):
        if len(names) <= k:
            assert s[key] == {"down": None, "max": None, "unserved": None}
            continue
        loads = {d: max(plan.load(d).values()) for d in combinations(names, k)}
        unserved = {
            d: sum(1 for v in plan.vips if v.holder(d) is None) for d in combinations(names, k)
        }
        assert s[key]["max"] == max(loads.values())
        assert loads[tuple(s[key]["down"])] == s[key]["max"]
        assert s[key]["unserved"] == max(unserved.values())


# --- 5. stability --------------------------------------------------------------------------------


@SETTINGS
@given(
    st.lists(st.integers(1, 254), min_size=3, max_size=120, unique=True),
    st.integers(0, 20),
    st.data(),
)
def test_adding_or_removing_a_vip_never_changes_another_vhid(
    octets: list[int], npinned: int, rnd: st.DataObject
) -> None:
    # The first `npinned` VIPs get pinned vhids from those no derived one uses.
    npinned = min(npinned, len(octets) - 2)
    derived = set(octets[npinned:])
    free = [x for x in range(1, 256) if x not in derived]
    pins = rnd.draw(
        st.lists(st.sampled_from(free), min_size=npinned, max_size=npinned, unique=True)
    )
    vips = [single(o, vhid=p) for o, p in zip(octets, pins, strict=False)]
    vips += [single(o) for o in octets[npinned:]]
    hosts = hosts_named(["a", "b", "c"])

    def vhids(entries: list[dict[str, Any]]) -> dict[str, int]:
        return {str(v.ip): v.vhid for v in plan_of(doc(hosts, entries)).vips}

    before = vhids(vips)
    gone = rnd.draw(st.integers(0, len(vips) - 1))
    after = vhids(vips[:gone] + vips[gone + 1 :])
    assert after == {a: k for a, k in before.items() if a != vips[gone]["address"][:-3]}
    used = set(before.values())
    spare = [o for o in range(1, 255) if o not in derived and o not in octets and o not in used]
    if spare:
        new = rnd.draw(st.sampled_from(spare))
        grown = vhids([*vips, single(new)])
        assert grown.pop(f"203.0.113.{new}") == new
        assert grown == before


def extra_moves(old: Plan, new: Plan, gone: str) -> int:
    """VIPs not owned by `gone` whose owner differs between the two plans."""
    a, b = owned(old), owned(new)
    return sum(1 for ip, o in a.items() if o != gone and ip in b and b[ip] != o)


# The bound on the VIPs a host's removal moves beyond its own (or its addition moves to hosts
# other than the new one): 2 * ceil(M/N) + 4, N counting the host. Measured on 84,000 random
# removals (N 2..12, M 1..200, random host addresses): at most 2 * ceil(M/N) + 3, mean 5.8% of M.
# Zero is not possible for every host set at once: each set's plan must itself be balanced to
# floor/ceil, and which hosts get the ceil changes with the set (capacity-constrained hashing).
def move_bound(m: int, n: int) -> int:
    return 2 * math.ceil(m / n) + 4


@SETTINGS
@given(clusters(min_hosts=2), st.data())
def test_removing_a_host_moves_its_vips_and_few_others(
    data: dict[str, Any], rnd: st.DataObject
) -> None:
    full = plan_of(data)
    n, m = len(full.cluster.hosts), len(full.vips)
    gone = rnd.draw(st.sampled_from(full.cluster.host_names))
    smaller = plan_of({**data, "hosts": [h for h in data["hosts"] if h["name"] != gone]})
    assert all(gone not in v.order for v in smaller.vips)
    assert extra_moves(full, smaller, gone) <= move_bound(m, n)


@SETTINGS
@given(clusters(max_hosts=11), st.sampled_from(["new", "zz-9", "a0"]))
def test_adding_a_host_moves_its_share_to_it_and_few_others(data: dict[str, Any], new: str) -> None:
    assume(new not in {h["name"] for h in data["hosts"]})
    old = plan_of(data)
    used = {int(h["address"].rsplit(".", 1)[1]) for h in data["hosts"]}
    octet = min(set(range(1, 255)) - used)
    grown = plan_of({**data, "hosts": [*data["hosts"], host(new, octet)]})
    n, m = len(grown.cluster.hosts), len(grown.vips)
    a, b = owned(old), owned(grown)
    to_new = sum(1 for ip in a if b[ip] == new)
    assert to_new == report.owners(grown)[new]
    assert within_share(to_new, m / n)
    assert extra_moves(grown, old, new) <= move_bound(m, n)


def test_host_churn_figures() -> None:
    """Deterministic sweep: removing each host in turn (and adding it back)."""
    for n in (3, 5, 8, 12):
        for m in (20, 60, 200):
            data = simple(n, m)
            full = plan_of(data)
            fractions = []
            moved = to_new = 0
            for h in full.cluster.host_names:
                smaller = plan_of({**data, "hosts": [x for x in data["hosts"] if x["name"] != h]})
                extra = extra_moves(full, smaller, h)
                fractions.append(extra / m)
                # Read backwards: adding h to the smaller cluster.
                moved += extra + report.owners(full)[h]
                to_new += report.owners(full)[h]
            mean = sum(fractions) / len(fractions)
            # Measured: mean 1.5%..8.1% of M, max 2.5%..15% (N=12, M=20: 3 VIPs).
            assert mean <= 0.10, (n, m, mean)
            assert max(fractions) <= 0.16, (n, m, fractions)
            # Most owner moves on adding a host go to it (measured 51%..96%, lowest at N=12).
            assert to_new / moved >= 0.5, (n, m, to_new, moved)


# --- 6. safe priorities --------------------------------------------------------------------------


@SETTINGS
@given(
    clusters(min_hosts=1, backups=st.integers(0, 11)),
    st.sampled_from([0, 1, 2, 5]),
    st.integers(1, 10),
    st.data(),
)
def test_priorities_make_the_carp_election_agree_with_the_plan(
    data: dict[str, Any], advbase: int, dead_ratio: int, rnd: st.DataObject
) -> None:
    data["cluster"].update(advbase=advbase, dead_ratio=dead_ratio)
    plan = plan_of(data)
    names = plan.cluster.host_names
    downs = [
        (),
        *((h,) for h in names),
        tuple(rnd.draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True))),
    ]
    for v in plan.vips:
        skews = v.advskew
        assert len(skews) == len(v.order) == len(set(v.order))
        assert all(a < b for a, b in pairwise(skews)), skews
        assert all(0 <= k <= 255 for k in skews)
        if advbase == 0:
            assert skews[0] > 0  # ucarp refuses advbase 0 with advskew 0
            for k in skews:
                assert master_down(0, k, dead_ratio) == k / 256
        for down in downs:
            live = [h for h in v.order if h not in down]
            holder = v.holder(down)
            if not live:
                assert holder is None
                continue
            # The shortest advertising interval wins the election...
            best = min(live, key=lambda h: interval_key(advbase, v.advskew_of(h)))
            assert best == holder
            if holder == v.owner or len(live) == 1:
                continue
            # ...and with the owner dead, the planned holder's master-down timer fires first.
            timeouts = sorted(master_down(advbase, v.advskew_of(h), dead_ratio) for h in live)
            assert master_down(advbase, v.advskew_of(holder), dead_ratio) == timeouts[0]
            # At least 0.1 s ahead of the next survivor with up to 10 participants (step >= 28/256);
            # a longer ladder (backups >= 10) has steps of 255 // (P - 1) / 256 s: 0.09 s at P=12.
            need = 0.1 if len(v.order) <= 10 else (255 // (len(v.order) - 1)) / 256
            assert timeouts[1] - timeouts[0] >= need - 1e-12, (v.order, skews)


def test_ladders() -> None:
    assert ladder(1, 1) == (0,)
    assert ladder(1, 4) == (0, 64, 128, 192)
    assert ladder(3, 2) == (0, 64)
    assert ladder(0, 4) == (16, 48, 112, 240)
    assert ladder(0, 1) == (16,)
    # advbase 0: owner 62 ms, then 187, 437, 937 ms; every gap >= 0.1 s.
    downs = [master_down(0, k, 3) for k in ladder(0, 4)]
    assert all(b - a >= 0.1 for a, b in pairwise(downs))
    for p in range(2, 257):
        steps = ladder(1, p)
        assert len(set(steps)) == p and steps[-1] <= 255


def test_preempt_follows_host_and_cluster_settings() -> None:
    hosts = [host("a", 1), host("b", 2, preempt=False), host("c", 3)]
    plan = plan_of(doc(hosts, [pool(1, 30)]))
    for v in plan.vips:
        assert v.preempt == tuple(h != "b" for h in v.order)
    plan = plan_of(doc([*hosts[:2], host("c", 3, preempt=True)], [pool(1, 30)], preempt=False))
    for v in plan.vips:
        assert v.preempt == tuple(h == "c" for h in v.order)


def test_participants_capped_by_backups_and_hosts() -> None:
    for backups, n, depth in ((0, 5, 1), (1, 5, 2), (3, 5, 4), (3, 3, 3), (20, 12, 12)):
        plan = plan_of(simple(n, 40, backups=backups))
        assert {len(v.order) for v in plan.vips} == {depth}
    # advbase 0 has a four-step ladder: at most four participants.
    plan = plan_of(simple(8, 40, backups=7, advbase=0))
    assert {len(v.order) for v in plan.vips} == {4}


# --- 7. honest limits ----------------------------------------------------------------------------


def test_more_than_255_vips_in_one_group_is_refused_clearly() -> None:
    # 256 VIPs: the whole of 203.0.113.0/24 (the only documentation /24 for VIPs).
    with pytest.raises(ClusterError) as e:
        plan_of(simple(3, 256, first=0, prefix=32))
    msg = str(e.value)
    assert (
        f"{FILE}: vips: group 224.0.0.18 would carry 256 VIPs, at most 255 fit (vhid 1..255): "
        "give some [[vips]] entries another `group`"
    ) in msg.splitlines()
    # The group problem is not buried under one vhid collision per extra VIP.
    assert "already used" not in msg


def test_two_groups_carry_more_than_255_vips() -> None:
    data = doc(
        hosts_named(["a", "b", "c"]),
        [pool(1, 255, 32), single(0, 32, vhid=1, group="224.0.0.19")],
    )
    plan = plan_of(data)
    assert len(plan.vips) == 256
    assert len(plan.by_key()) == 256
    assert Counter(str(v.group) for v in plan.vips) == {"224.0.0.18": 255, "224.0.0.19": 1}


def test_advbase_0_refused_where_a_ucarp_host_would_be_a_backup() -> None:
    hosts = [host("a", 1), host("b", 2), host("old", 3, engine="ucarp")]
    with pytest.raises(ClusterError) as e:
        plan_of(doc(hosts, [pool(1, 9)], advbase=0))
    (line,) = str(e.value).splitlines()
    assert line.startswith(f"{FILE}: cluster.advbase: 0 (sub-second) would make ucarp host(s) old")
    assert "use advbase >= 1 or run iprotate there" in line
    # The same cluster is fine at advbase 1.
    plan_of(doc(hosts, [pool(1, 9)], advbase=1))


def test_advbase_0_accepted_where_ucarp_hosts_are_never_backups() -> None:
    hosts = [host("a", 1), host("old", 2, engine="ucarp")]
    # The ucarp host owns the only VIP; the native host is its backup.
    plan = plan_of(doc(hosts, [single(10, owner="old")], advbase=0))
    assert plan.vips[0].order == ("old", "a")
    # Without backups nobody is one: the ucarp host just owns its share.
    plan = plan_of(doc(hosts, [pool(1, 10)], advbase=0, backups=0))
    assert report.owners(plan) == {"a": 5, "old": 5}
    # But as soon as it backs a native owner up, it is refused.
    with pytest.raises(ClusterError):
        plan_of(doc(hosts, [single(10, owner="a")], advbase=0))


# --- pins, JSON, report --------------------------------------------------------------------------


def test_pinned_vhids_and_owners_are_honoured() -> None:
    hosts = hosts_named(["a", "b", "c"])
    vips = [
        single(10, vhid=200, owner="c"),
        pool(20, 5, vhid=100, owner="a"),
        single(30),
        single(40, vhid=30, group="224.0.0.19"),  # same vhid as .30, another group
    ]
    plan = plan_of(doc(hosts, vips))
    got = [(str(v.ip), v.vhid, str(v.group), v.owner) for v in plan.vips]
    assert got[0] == ("203.0.113.10", 200, "224.0.0.18", "c")
    assert got[1:6] == [(f"203.0.113.{20 + k}", 100 + k, "224.0.0.18", "a") for k in range(5)]
    assert got[6][:3] == ("203.0.113.30", 30, "224.0.0.18")
    assert got[7][:3] == ("203.0.113.40", 30, "224.0.0.19")


def test_plan_json_matches_the_design_schema() -> None:
    hosts = [host("a", 1, weight=2), host("b", 2, engine="ucarp"), host("c", 3)]
    plan = plan_of(doc(hosts, [pool(10, 12)]))
    out = json.loads(json.dumps(plan.to_json()))
    assert {"vips", "advbase", "dead_ratio", "hosts"} <= set(out)
    assert [h["name"] for h in out["hosts"]] == ["a", "b", "c"]
    assert out["hosts"][1] == {
        "name": "b",
        "address": "198.51.100.2",
        "interface": "eth1",
        "vip_interface": "eth1",
        "weight": 1.0,
        "engine": "ucarp",
    }
    assert len(out["vips"]) == 12
    for k, v in enumerate(out["vips"]):
        assert list(v) == ["address", "vhid", "group", "owner", "order", "advskew", "preempt"]
        assert v["address"] == f"203.0.113.{10 + k}/24"
        assert v["vhid"] == 10 + k
        assert v["group"] == "224.0.0.18"
        assert v["owner"] == v["order"][0]
        assert sorted(v["order"]) == ["a", "b", "c"]
        assert list(v["advskew"]) == v["order"]
        assert list(v["advskew"].values()) == [0, 64, 128]
        assert v["preempt"] == dict.fromkeys(v["order"], True)


def six_vips_three_hosts(**cluster: Any) -> Plan:
    """alpha owns .10/.11, bravo .12/.13, charlie .14/.15 (pinned)."""
    names = ["alpha", "bravo", "charlie"]
    vips = [single(10 + k, owner=names[k // 2]) for k in range(6)]
    return plan_of(doc(hosts_named(names), vips, **cluster))


def test_report_on_a_hand_checked_example() -> None:
    plan = six_vips_three_hosts()
    # By hand: each owner's two VIPs get different first backups (property 3) and the third host
    # is rank 2, so the six orders are the six permutations of the three hosts.
    orders = [v.order for v in plan.vips]
    assert len(set(orders)) == 6 and all(sorted(o) == ["alpha", "bravo", "charlie"] for o in orders)
    backup = {str(v.ip): v.order[1] for v in plan.vips}

    f = report.fail_json(plan, ["alpha"])
    assert f == {
        "down": ["alpha"],
        "moved": [
            {"address": "203.0.113.10/24", "from": "alpha", "to": backup["203.0.113.10"]},
            {"address": "203.0.113.11/24", "from": "alpha", "to": backup["203.0.113.11"]},
        ],
        "unserved": [],
        "load": {"bravo": 3, "charlie": 3},
    }
    f = report.fail_json(plan, ["bravo", "alpha", "bravo"])
    assert f["down"] == ["alpha", "bravo"]
    assert [m["address"] for m in f["moved"]] == [f"203.0.113.{k}/24" for k in range(10, 14)]
    assert {m["to"] for m in f["moved"]} == {"charlie"}
    assert f["unserved"] == [] and f["load"] == {"charlie": 6}
    assert report.fail_json(plan, [])["moved"] == []

    s = report.stats(plan)
    assert s["owners"] == {"alpha": 2, "bravo": 2, "charlie": 2}
    assert s["ideal"] == {"none": 2, "one": 3, "two": 6}
    assert s["worst_one"]["max"] == 3 and s["worst_one"]["unserved"] == 0
    assert s["worst_two"]["max"] == 6 and s["worst_two"]["unserved"] == 0


def test_report_with_one_backup_leaves_pairs_unserved() -> None:
    plan = six_vips_three_hosts(backups=1)
    assert {len(v.order) for v in plan.vips} == {2}
    # By hand: with alpha and bravo down, the VIP alpha hands to bravo and the one bravo hands to
    # alpha have nobody left; charlie keeps its two and takes alpha->charlie and bravo->charlie.
    f = report.fail_json(plan, ["alpha", "bravo"])
    unserved = sorted(str(v.address) for v in plan.vips if set(v.order) == {"alpha", "bravo"})
    assert len(unserved) == 2 and f["unserved"] == unserved
    assert f["load"] == {"charlie": 4}
    assert len(f["moved"]) == 2
    s = report.stats(plan)
    assert s["worst_two"]["max"] == 4 and s["worst_two"]["unserved"] == 2
    assert s["worst_one"]["max"] == 3 and s["worst_one"]["unserved"] == 0


def test_report_stats_with_too_few_hosts() -> None:
    s = report.stats(plan_of(simple(1, 3)))
    assert s["owners"] == {"h1": 3}
    assert s["ideal"] == {"none": 3, "one": None, "two": None}
    assert s["worst_one"] == s["worst_two"] == {"down": None, "max": None, "unserved": None}
    s = report.stats(plan_of(simple(2, 3)))
    assert s["worst_one"]["max"] == 3 and s["worst_two"]["max"] is None


def test_report_diff() -> None:
    hosts = hosts_named(["alpha", "bravo"])
    old = plan_of(doc(hosts, [single(10, owner="alpha"), single(11, owner="bravo"), single(12)]))
    assert report.diff(old, old) == {"added": [], "removed": [], "changed": []}
    new = plan_of(
        doc(
            hosts,
            [
                single(10, owner="bravo"),  # owner (and so order) flips
                single(11, owner="bravo", vhid=111),  # vhid pinned
                single(13),  # .12 removed, .13 added
            ],
        )
    )
    assert report.diff(old, new) == {
        "added": ["203.0.113.13/24"],
        "removed": ["203.0.113.12/24"],
        "changed": [
            {
                "address": "203.0.113.10/24",
                "owner": ["alpha", "bravo"],
                "order": [["alpha", "bravo"], ["bravo", "alpha"]],
            },
            {"address": "203.0.113.11/24", "vhid": [11, 111]},
        ],
    }
    moved = plan_of(doc(hosts, [single(10, owner="alpha", group="239.1.2.3")]))
    assert report.diff(old, moved)["changed"] == [
        {"address": "203.0.113.10/24", "group": ["224.0.0.18", "239.1.2.3"]}
    ]
