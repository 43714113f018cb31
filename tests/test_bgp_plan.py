"""BGP mode's model and plan: the [bgp] table is validated like every key, and every VIP's routes
rank its hosts exactly in the plan's failover order (MED, AS-path prepends or communities)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iprotate.cluster.model import ClusterError
from iprotate.plan.bgp import WORST_MED, announcement, preference_key, prefix_of
from tests.test_planner import SETTINGS, build, clusters, plan_of

ROUTER = {"address": "198.51.100.254", "asn": 64512}


def with_bgp(data: dict[str, Any], **bgp: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    used = {h["address"] for h in out["hosts"]}
    free = next(f"198.51.100.{o}" for o in range(254, 0, -1) if f"198.51.100.{o}" not in used)
    out["bgp"] = {"asn": 64513, "routers": [{"address": free, "asn": 64512}], **bgp}
    return out


@given(data=clusters(max_vips=60), rank=st.sampled_from(["med", "prepend", "community"]))
@SETTINGS
def test_routes_rank_hosts_in_the_plans_failover_order(data: dict[str, Any], rank: str) -> None:
    plan = plan_of(with_bgp(data, rank=rank))
    for v in plan.vips:
        anns = [announcement(plan.cluster, v, h) for h in v.order]
        by_router = sorted(anns, key=preference_key)
        assert [a.host for a in by_router] == list(v.order)
        # strictly ordered: no two hosts tie, so the router never falls back to its tie-breaks
        keys = [preference_key(a) for a in anns]
        assert len(set(keys)) == len(keys)
        assert all(a.prefix == prefix_of(v) and a.prefix.endswith("/32") for a in anns)


@given(data=clusters(min_hosts=2, max_vips=30), rank=st.sampled_from(["med", "prepend"]))
@SETTINGS
def test_a_drained_route_is_worse_than_every_planned_one(data: dict[str, Any], rank: str) -> None:
    plan = plan_of(with_bgp(data, rank=rank))
    for v in plan.vips:
        worst = max(preference_key(announcement(plan.cluster, v, h)) for h in v.order)
        for h in v.order:
            drained = announcement(plan.cluster, v, h, drained=True)
            assert preference_key(drained) > worst
            assert drained.med == WORST_MED


def test_per_host_asn_and_routers_override_the_shared_ones() -> None:
    data = with_bgp(json.loads(json.dumps(BASE)))
    data["hosts"][1]["bgp_asn"] = 4200000001
    data["hosts"][1]["bgp_routers"] = [{"address": "198.51.100.253", "asn": 64600}]
    c = build(data)
    assert c.asn_of("a") == 64513 and c.asn_of("b") == 4200000001
    assert [str(r.address) for r in c.routers_of("b")] == ["198.51.100.253"]
    assert [str(r.address) for r in c.routers_of("a")] == ["198.51.100.254"]
    plan = plan_of(data | {"bgp": data["bgp"] | {"rank": "community"}})
    v = plan.vips[0]
    # a 32-bit AS does not fit a standard community: AS_TRANS stands in
    assert {announcement(plan.cluster, v, h).communities[0][0] for h in v.order} <= {64513, 23456}


def test_bgp_mode_needs_no_carp_password() -> None:
    data = with_bgp(json.loads(json.dumps(BASE)))
    del data["cluster"]["password"]
    assert build(data).password == b""
    del data["bgp"]
    with pytest.raises(ClusterError, match="give exactly one of `password` or `password_file`"):
        build(data)


BASE: dict[str, Any] = {
    "cluster": {"interface": "eth1", "password": "s3cret"},
    "hosts": [{"name": "a", "address": "198.51.100.1"}, {"name": "b", "address": "198.51.100.2"}],
    "vips": [{"pool": "203.0.113.10-203.0.113.13/32"}],
}


@pytest.mark.parametrize(
    ("bgp", "hosts_extra", "expect"),
    [
        ({"asn": 0}, {}, "bgp.asn: 0 is not an AS number"),
        ({"asn": 65535}, {}, "bgp.asn: 65535 is not an AS number"),
        ({"asn": True}, {}, "bgp.asn: True is not an AS number"),
        ({"routers": []}, {}, "bgp.routers: must be a non-empty array"),
        ({"routers": [{"address": "198.51.100.254"}]}, {}, "bgp.routers[0].asn: None is not"),
        ({"routers": [{"address": "nope", "asn": 1}]}, {}, "bgp.routers[0].address: 'nope'"),
        ({"routers": [ROUTER, ROUTER]}, {}, "bgp.routers[1].address: 198.51.100.254 is listed"),
        ({"routers": [ROUTER | {"port": 179}]}, {}, "bgp.routers[0].port: unknown key"),
        ({"hold_time": 1}, {}, "bgp.hold_time: 1 is not an integer in 3..65535"),
        ({"hold_time": 0}, {}, "bgp.hold_time: 0 is not an integer in 3..65535"),
        ({"bfd": "yes"}, {}, "bgp.bfd: 'yes' is not true or false"),
        ({"rank": "localpref"}, {}, "bgp.rank: 'localpref' is not one of"),
        ({"med_step": 0}, {}, "bgp.med_step: 0 is not an integer"),
        ({"med_step": 1 << 24, "med_base": 1 << 31}, {}, "bgp.med_step: med_base + 255 steps"),
        ({"drain_wait": -1}, {}, "bgp.drain_wait: -1 is not a number of seconds"),
        ({"drain_wait": float("nan")}, {}, "bgp.drain_wait: nan is not"),
        ({"speaker": ""}, {}, "bgp.speaker: '' is not a non-empty string"),
        ({"color": 1}, {}, "bgp.color: unknown key"),
        ({"asn": None}, {}, "hosts[0].bgp_asn: missing: set bgp.asn"),
        ({"routers": None}, {}, "hosts[0].bgp_routers: missing"),
        ({"routers": [{"address": "198.51.100.1", "asn": 1}]}, {}, "hosts[0]: peers with its own"),
        ({}, {"bgp_asn": 23456}, "hosts[1].bgp_asn: 23456 is not an AS number"),
        (None, {"bgp_asn": 64513}, "hosts[1].bgp_asn: only with a [bgp] table"),
        (None, {"bgp_routers": [ROUTER]}, "hosts[1].bgp_routers: only with a [bgp] table"),
    ],
)
def test_bad_bgp_tables_name_the_key(
    bgp: dict[str, Any] | None, hosts_extra: dict[str, Any], expect: str
) -> None:
    data = json.loads(json.dumps(BASE))
    if bgp is not None:
        data = with_bgp(data)
        for k, v in bgp.items():
            if v is None:
                del data["bgp"][k]
            else:
                data["bgp"][k] = v
    data["hosts"][1].update(hosts_extra)
    with pytest.raises(ClusterError) as e:
        build(data)
    assert any(p.startswith(expect) for p in e.value.problems), e.value.problems


def test_plan_shows_the_meds_best_first(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[cluster]\ninterface = "eth1"\npassword_file = "pw"\n'
        '[bgp]\nasn = 64513\nrouters = [{ address = "198.51.100.254", asn = 64512 }]\n'
        '[[hosts]]\nname = "a"\naddress = "198.51.100.1"\n'
        '[[hosts]]\nname = "b"\naddress = "198.51.100.2"\n'
        '[[vips]]\naddress = "203.0.113.10/24"\nowner = "b"\n'
    )
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o600)
    run = [sys.executable, "-m", "iprotate", "plan"]
    out = subprocess.run([*run, str(f)], capture_output=True, text=True, check=True).stdout
    assert "203.0.113.10/32  b        b(med 100) > a(med 200)" in out
    js = json.loads(
        subprocess.run([*run, "--json", str(f)], capture_output=True, text=True, check=True).stdout
    )
    assert [(r["host"], r["med"]) for r in js["vips"][0]["bgp"]] == [("b", 100), ("a", 200)]


# --- IPv6 VIPs: /128s over IPv6 sessions ---------------------------------------------------------

ROUTER6 = {"address": "2001:db8::fe", "asn": 64512}


def dual_stack(data: dict[str, Any], **bgp: Any) -> dict[str, Any]:
    """`data` in BGP mode with an IPv6 VIP beside each IPv4 one, each host's address6 and an IPv6
    router beside the IPv4 one."""
    out = with_bgp(data, **bgp)
    for h in out["hosts"]:
        h["address6"] = f"2001:db8::{h['address'].rsplit('.', 1)[1]}"
    out["bgp"]["routers"].append(dict(ROUTER6))
    first, count = (int(x) for x in _span(out))
    out["vips"].append({"pool": f"2001:db8:113::{first:x}-2001:db8:113::{first + count - 1:x}/64"})
    return out


def _span(data: dict[str, Any]) -> tuple[int, int]:
    first, last = (
        int(a.split("/")[0].rsplit(".", 1)[1]) for a in data["vips"][0]["pool"].split("-")
    )
    return first, last - first + 1


@given(data=clusters(max_vips=40), rank=st.sampled_from(["med", "prepend", "community"]))
@SETTINGS
def test_ipv6_vips_are_ranked_exactly_like_ipv4_ones(data: dict[str, Any], rank: str) -> None:
    plan = plan_of(dual_stack(data, rank=rank))
    v6 = [v for v in plan.vips if v.ip.version == 6]
    assert len(v6) == len(plan.vips) // 2
    for v in v6:
        anns = [announcement(plan.cluster, v, h) for h in v.order]
        assert [a.host for a in sorted(anns, key=preference_key)] == list(v.order)
        keys = [preference_key(a) for a in anns]
        assert len(set(keys)) == len(keys)
        assert all(a.prefix == f"{v.ip}/128" for a in anns)
        worst = max(keys)
        for h in v.order:
            drained = announcement(plan.cluster, v, h, drained=True)
            assert preference_key(drained) > worst and drained.med == WORST_MED
    # a host's rank in an IPv6 VIP is expressed with the same attributes as in an IPv4 one
    by_rank = {}
    for v in plan.vips:
        for h in v.order:
            a = announcement(plan.cluster, v, h)
            key = (a.rank, a.med, a.prepend, a.communities)
            by_rank.setdefault(a.rank, set()).add(key)
    assert all(len(keys) == 1 for keys in by_rank.values())


def test_bgp_mode_takes_ipv6_vips_over_ipv6_routers() -> None:
    c = build(dual_stack(json.loads(json.dumps(BASE))))
    assert [str(r.address) for r in c.routers_of("a")] == ["198.51.100.254", "2001:db8::fe"]
    assert sum(v.address.version == 6 for v in c.vips) == 4


# --- adversary -----------------------------------------------------------------------------------


def _deep(n: int) -> dict[str, Any]:
    hosts = [{"name": f"h{i}", "address": f"198.51.100.{i + 1}"} for i in range(n)]
    return {"cluster": {"interface": "eth1", "password": "s3cret", "backups": n - 1},
            "hosts": hosts, "vips": [{"pool": "203.0.113.10-203.0.113.13/32"}]}  # fmt: skip


def test_a_drained_route_is_the_worst_even_behind_255_backups() -> None:
    """cluster.backups allows 255: with 16 fixed prepends a draining owner would still beat the
    17th backup and keep the traffic it is leaving (its VIPs withdrawn under it)."""
    plan = plan_of(with_bgp(_deep(40), rank="prepend"))
    for v in plan.vips:
        assert len(v.order) == 40
        worst = max(preference_key(announcement(plan.cluster, v, h)) for h in v.order)
        for h in (v.order[0], v.order[-1]):
            assert preference_key(announcement(plan.cluster, v, h, drained=True)) > worst


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        # IPv6 VIPs but only an IPv4 router: multiprotocol across families is refused
        (lambda d: d["bgp"]["routers"].pop(), "bgp.routers: a may take part in IPv6 VIPs but"),
        (lambda d: d["bgp"]["routers"].pop(0), "bgp.routers: a may take part in IPv4 VIPs but"),
        (
            lambda d: d["hosts"][1].update(bgp_routers=[ROUTER]),
            "hosts[1].bgp_routers: b may take part in IPv6 VIPs",
        ),
        (lambda d: d["hosts"][0].pop("address6"), "hosts[0].address6: missing: a peers with an"),
        (
            lambda d: d["hosts"][0].update(address6="fe80::1"),
            "hosts[0].address6: fe80::1 is link-local: an IPv6 BGP session",
        ),
        (
            lambda d: d["bgp"]["routers"][1].update(address="fe80::fe"),
            "bgp.routers[1].address: 'fe80::fe' is link-local",
        ),
        (
            lambda d: d["bgp"]["routers"][1].update(address="ff02::2"),
            "bgp.routers[1].address: 'ff02::2' cannot be",
        ),
        (
            lambda d: d["bgp"]["routers"][1].update(address="2001:db8::1"),
            "hosts[0]: peers with its own address 2001:db8::1",
        ),
        (
            lambda d: d["vips"].append({"address": "2001:db8::fe/128"}),
            "vips[2]: 2001:db8::fe is a router's address",
        ),
        (
            lambda d: d["vips"].append({"address": "198.51.100.254/32"}),
            "vips[2]: 198.51.100.254 is a router's address",
        ),
        (
            lambda d: d["bgp"]["routers"].append(dict(ROUTER6)),
            "bgp.routers[2].address: 2001:db8::fe is listed twice",
        ),
    ],
)
def test_bad_ipv6_bgp_setups_name_the_key(change: Any, expect: str) -> None:
    data = dual_stack(json.loads(json.dumps(BASE)))
    change(data)
    with pytest.raises(ClusterError) as e:
        build(data)
    assert any(p.startswith(expect) for p in e.value.problems), e.value.problems


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        # the VIP sits on the host's lo: BIRD would peer with itself
        (
            lambda d: d["bgp"].update(routers=[{"address": "203.0.113.11", "asn": 64512}]),
            "bgp.routers[0].address: 203.0.113.11 is a VIP (vips[0].pool[1]), not a router",
        ),
        (
            lambda d: d["hosts"][1].update(bgp_routers=[{"address": "198.51.100.1", "asn": 64513}]),
            "hosts[1].bgp_routers[0].address: 198.51.100.1 is the address of host 'a'",
        ),
    ],
    ids=["router-is-a-vip", "router-is-another-host"],
)
def test_what_bgp_mode_cannot_carry_is_refused_by_key(change: Any, expect: str) -> None:
    data = with_bgp(json.loads(json.dumps(BASE)))
    change(data)
    with pytest.raises(ClusterError) as e:
        build(data)
    assert expect in e.value.problems, e.value.problems
