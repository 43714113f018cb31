"""IPv6 VIPs through the node, the machines and the status (issue 11), with a fake clock and
adverts made by the codec: no sockets.

A dual-stack cluster: h0..h2 run iprotate with address6, u3 runs ucarp (IPv4 only).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Interface
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iprotate.carp import codec
from iprotate.carp.machine import (
    AddAddress,
    CarpMachine,
    MachineConfig,
    SendAdvert,
    SendGarp,
    State,
    Transition,
)
from iprotate.carp.native_auth import NativeAuth, Verdict, derive_key, tag
from iprotate.carp.node import Node
from iprotate.carp.status import build_status, status_text
from iprotate.cluster.loader import parse_cluster
from iprotate.plan.model import Plan, VipPlan
from iprotate.plan.planner import make_plan

PW = b"pw"
A6 = [IPv6Address(f"2001:db8::{i + 1}") for i in range(3)]
GROUP6 = IPv6Address("ff02::12")


def plan(extra_hosts: list[dict[str, Any]] | None = None) -> Plan:
    doc = {
        "cluster": {"interface": "eth1", "password": PW.decode()},
        "hosts": [
            {"name": f"h{i}", "address": f"198.51.100.{i + 1}", "address6": str(A6[i])}
            for i in range(3)
        ]
        + [{"name": "u3", "address": "198.51.100.4", "engine": "ucarp"}]
        + (extra_hosts or []),
        "vips": [
            {"pool": "203.0.113.10-203.0.113.15/24"},
            {"pool": "2001:db8:200::10-2001:db8:200::15/64"},
        ],
    }
    return make_plan(parse_cluster(doc, "t.toml"))


def v6(p: Plan) -> list[VipPlan]:
    return [v for v in p.vips if v.ip.version == 6]


def carp6(vip: VipPlan, src: IPv6Address, advskew: int, seq: int, advbase: int = 1,
          raw: bool = False, password: bytes = PW) -> bytes:  # fmt: skip
    """The CARP bytes an iprotate host with address6 `src` sends (counter sealed with `seq`)."""
    counter = seq
    if not raw:
        t = tag(derive_key(PW), src, vip.group, vip.vhid, vip.ip, advbase, advskew, seq)
        counter = seq << 32 | t
    return codec.encode_advert(vhid=vip.vhid, advbase=advbase, advskew=advskew,
                               counter=counter, vip=vip.ip, password=password)  # fmt: skip


def settle(node: Node, until: float) -> list[Any]:
    out = []
    while node.deadline is not None and node.deadline <= until:
        out += node.timers(node.deadline)
    return out


def test_ipv6_machines_have_address6_as_source_and_ucarp_hosts_none() -> None:
    p = plan()
    node = Node.build(p, "h1")
    six = [m for m in node.machines.values() if m.cfg.vip.version == 6]
    assert len(six) == 6  # 3 iprotate hosts, backups 3: every one takes part in each
    assert all(m.cfg.src == A6[1] for m in six)
    assert all(m.cfg.src == IPv4Address("198.51.100.2") for m in node.machines.values()
               if m.cfg.vip.version == 4)  # fmt: skip
    assert node.address6 == A6[1]
    u = Node.build(p, "u3")
    assert all(m.cfg.vip.version == 4 for m in u.machines.values())


def test_a_lone_node_takes_its_ipv6_vips_with_ipv6_effects() -> None:
    p = plan()
    node = Node.build(p, "h0")
    node.start(0.0)
    effects = settle(node, 10.0)
    mine6 = {(v.group, v.vhid) for v in v6(p)}
    assert all(node.machines[k].state is State.MASTER for k in mine6)
    adds = [e for e in effects if isinstance(e.action, AddAddress) and e.vip.ip.version == 6]
    assert {e.vip.address for e in adds} == {v.address for v in v6(p)}
    assert all(isinstance(e.vip.address, IPv6Interface) for e in adds)
    # Adverts to the IPv6 group, sealed under our address6 (a peer's check accepts them).
    sends = [e for e in effects if isinstance(e.action, SendAdvert) and e.vip.ip.version == 6]
    assert sends and all(e.vip.group == GROUP6 for e in sends)
    peer = NativeAuth.for_password(PW, IPv4Address("198.51.100.2"), A6[1])
    for e in sends[:6]:
        a = e.action
        assert peer.check(A6[0], (e.vip.group, e.vip.vhid), e.vip.ip, a.advbase, a.advskew,
                          a.counter) is Verdict.OK  # fmt: skip
    # The announcement: one SendGarp effect per takeover, the shell sends an NA for IPv6.
    assert sum(isinstance(e.action, SendGarp) and e.vip.ip.version == 6 for e in effects) >= 6


def test_packet6_routes_checks_and_counts() -> None:
    p = plan()
    node = Node.build(p, "h1")
    node.start(0.0)
    v = next(v for v in v6(p) if v.owner == "h0")
    key = (v.group, v.vhid)
    skew = v.advskew_of("h0")
    assert node.packet6(1.0, carp6(v, A6[0], skew, 5), A6[0], GROUP6, 255) == []
    assert node.counters["adverts_received"] == 1
    assert node.machines[key].master_src == A6[0]
    assert node.seen[key][A6[0]].advskew == skew
    node.packet6(1.1, carp6(v, A6[0], skew, 5), A6[0], GROUP6, 255)  # the same seq: a replay
    assert node.counters["drop_replay"] == 1
    node.packet6(1.2, carp6(v, A6[0], skew, 6), A6[0], GROUP6, 64)  # crossed a router
    assert node.counters["drop_bad_ttl"] == 1
    node.packet6(1.3, carp6(v, A6[0], skew, 6)[:30], A6[0], GROUP6, 255)
    assert node.counters["drop_short"] == 1
    node.packet6(1.4, carp6(v, A6[0], skew, 6), A6[0], IPv6Address("ff02::13"), 255)
    assert node.counters["drop_wrong_group"] == 1
    # Our own address6, looped back: ignored, not counted.
    assert node.packet6(1.5, carp6(v, A6[1], skew, 6), A6[1], GROUP6, 255) == []
    # From an address that is no host's address6 (a forger, or the v4-mapped host address).
    for stranger in (IPv6Address("2001:db8::99"), IPv6Address("::ffff:198.51.100.1")):
        node.packet6(1.6, carp6(v, stranger, skew, 7), stranger, GROUP6, 255)
    assert node.counters["drop_not_a_host"] == 2
    # Another password: digest fails and the peer is drifting.
    node.packet6(1.7, carp6(v, A6[0], skew, 8, password=b"other"), A6[0], GROUP6, 255)
    assert node.counters["drop_bad_digest"] == 1
    # A made-up counter, or a rewritten priority: forged.
    node.packet6(1.8, carp6(v, A6[0], skew, 99, raw=True), A6[0], GROUP6, 255)
    sealed = bytearray(carp6(v, A6[0], skew, 9))
    sealed[2] = 0 if skew else 1  # another advskew; the CARP digest still verifies
    sealed[6:8] = b"\0\0"
    sealed[6:8] = codec.checksum(bytes(sealed)).to_bytes(2, "big")
    node.packet6(1.9, bytes(sealed), A6[0], GROUP6, 255)
    assert node.counters["drop_forged"] == 2, dict(node.counters)
    # An advert of an IPv4 VIP's vhid sent to the IPv6 group: not a planned VIP there.
    v4 = next(v for v in p.vips if v.ip.version == 4 and v.vhid not in {x.vhid for x in v6(p)})
    node.packet6(2.0, carp6(v4, A6[0], 0, 10), A6[0], GROUP6, 255)  # type: ignore[arg-type]
    assert node.counters["drop_unknown_vhid"] == 1
    assert node.counters["adverts_received"] == 1


def test_an_ipv4_seal_does_not_pass_for_ipv6() -> None:
    """The tag covers the sender's address: an advert sealed under h0's IPv4 address, sent from
    its address6, is forged (and the other way round cannot be sent at all)."""
    p = plan()
    node = Node.build(p, "h1")
    node.start(0.0)
    v = next(v for v in v6(p) if v.owner == "h0")
    skew = v.advskew_of("h0")
    t = tag(derive_key(PW), IPv4Address("198.51.100.1"), v.group, v.vhid, v.ip, 1, skew, 5)
    carp = codec.encode_advert(vhid=v.vhid, advbase=1, advskew=skew, counter=5 << 32 | t,
                               vip=v.ip, password=PW)  # fmt: skip
    node.packet6(1.0, carp, A6[0], GROUP6, 255)
    assert node.counters["drop_forged"] == 1


def test_two_nodes_over_ipv6_settle_on_the_planned_owner_and_fail_over() -> None:
    """h0 and h1 on a fake IPv6 wire: each IPv6 VIP ends on its planned holder of the two; when
    the holder dies the other takes it within D; when it is back it takes it back."""
    p = plan()
    names = ["h0", "h1"]
    nodes = {n: Node.build(p, n, wall_offset=1e9) for n in names}
    alive = set(names)
    for n in nodes.values():
        n.start(0.0)

    def run(until: float) -> None:
        now = 0.0
        while True:
            due = [(n.deadline, k) for k, n in nodes.items() if k in alive and n.deadline]
            if not due or min(due)[0] > until:
                return
            now, k = min(due)
            queue = [(k, e) for e in nodes[k].timers(now)]
            while queue:
                k, e = queue.pop(0)
                if not isinstance(e.action, SendAdvert) or e.vip.ip.version != 6:
                    continue
                a, v = e.action, e.vip
                carp = codec.encode_advert(vhid=v.vhid, advbase=a.advbase, advskew=a.advskew,
                                           counter=a.counter, vip=v.ip, password=PW)  # fmt: skip
                src = nodes[k].address6
                assert src is not None
                for other in alive - {k}:
                    queue += [
                        (other, r) for r in nodes[other].packet6(now, carp, src, v.group, 255)
                    ]

    def holders() -> dict[IPv6Address, list[str]]:
        return {
            v.ip: [n for n in alive if nodes[n].machines[(v.group, v.vhid)].state is State.MASTER]
            for v in v6(p)
        }  # type: ignore[misc]

    run(10.0)
    want = {v.ip: [v.holder(["h2", "u3"])] for v in v6(p)}
    assert holders() == want
    alive.discard("h0")
    run(20.0)
    assert all(h == ["h1"] for h in holders().values())


def test_tiebreak_between_equal_ipv6_masters_lower_address_wins() -> None:
    """Two masters with equal intervals: the numerically lower IPv6 source keeps the VIP."""
    vip = IPv6Address("2001:db8:200::10")
    low, high = IPv6Address("2001:db8::ff"), IPv6Address("2001:db8::1:0")
    # As bytes read little-endian (ucarp's IPv4 rule) the order would be the other way.
    assert int.from_bytes(low.packed, "little") > int.from_bytes(high.packed, "little")
    ms = {}
    for me in (low, high):
        m = CarpMachine(MachineConfig(vip=vip, vhid=16, src=me, advbase=1, advskew=0))
        m.start(0.0)
        m.timer(10.0)
        assert m.state is State.MASTER
        ms[me] = m
    out_high = ms[high].advert(10.5, low, 1, 0)
    assert ms[high].state is State.BACKUP and any(isinstance(a, Transition) for a in out_high)
    out_low = ms[low].advert(10.5, high, 1, 0)
    assert ms[low].state is State.MASTER
    assert [type(a) for a in out_low] == [SendGarp, SendAdvert]


def test_status_names_ipv6_masters_and_drift() -> None:
    p = plan()
    node = Node.build(p, "h1")
    node.start(0.0)
    now = 20.0
    settle(node, 1.0)
    seq = 10
    # h0 advertises its IPv6 VIPs with the plan's priorities, one with a wrong skew (drift).
    drifting = None
    for v in v6(p):
        if v.owner == "h0":
            skew = v.advskew_of("h0")
            if drifting is None:
                drifting, skew = v, 200
            seq += 1
            node.packet6(now, carp6(v, A6[0], skew, seq), A6[0], GROUP6, 255)
    doc = build_status(node, now)
    rows = {r["address"]: r for r in doc["vips"]}
    assert drifting is not None
    for v in v6(p):
        if v.owner == "h0" and v != drifting:  # h1 preempts the one advertising skew 200
            assert rows[str(v.address)]["master"] == ["h0"]
            assert rows[str(v.address)]["group"] == "ff02::12"
    assert rows[str(drifting.address)]["master"] == ["h1"]
    drift = [d for d in doc["drift"] if d["vip"] == str(drifting.address)]
    assert drift and drift[0]["peer"] == "h0" and drift[0]["address"] == str(A6[0])
    assert "advertises 1/200" in drift[0]["detail"]
    text = status_text(doc)
    assert str(drifting.address) in text
    # h0 is heard (over IPv6 only): not "not heard".
    assert not any(i["kind"] == "host_not_heard" and i.get("host") == "h0" for i in doc["issues"])


def test_status_sorts_mixed_families() -> None:
    """Drift and unplanned vhids of both families in one status (they do not compare)."""
    p = plan()
    node = Node.build(p, "h1")
    node.start(0.0)
    v4 = next(v for v in p.vips if v.ip.version == 4)
    v6_ = v6(p)[0]
    node._drifting(1.0, (v4.group, v4.vhid), IPv4Address("198.51.100.1"), "x")
    node._drifting(1.0, (v6_.group, v6_.vhid), A6[0], "y")
    node.unplanned[(IPv4Address("198.51.100.1"), v4.group, 200)] = 1.0
    node.unplanned[(A6[0], GROUP6, 200)] = 1.0
    doc = build_status(node, 2.0)
    assert {d["address"] for d in doc["drift"]} == {"198.51.100.1", str(A6[0])}
    assert any(i["kind"] == "other_plan" for i in doc["issues"])


def test_reload_keeps_ipv6_sources_and_marks() -> None:
    p = plan()
    node = Node.build(p, "h1")
    node.start(0.0)
    v = next(v for v in v6(p) if v.owner == "h0")
    skew = v.advskew_of("h0")
    node.packet6(1.0, carp6(v, A6[0], skew, 5), A6[0], GROUP6, 255)
    node.reload(plan(), 2.0)
    assert node.auth.src6 == A6[1]
    node.packet6(2.1, carp6(v, A6[0], skew, 5), A6[0], GROUP6, 255)
    assert node.counters["drop_replay"] == 1  # the replay mark survived the reload


@pytest.mark.parametrize("version", [4, 6])
def test_address_events_by_family(version: int) -> None:
    p = plan()
    node = Node.build(p, "h0")
    node.start(0.0)
    settle(node, 10.0)
    v = next(v for v in p.vips if v.ip.version == version and v.owner == "h0")
    out = node.address_gone(11.0, v.ip)
    assert [type(e.action) for e in out] == [AddAddress, SendGarp]
    assert out[0].vip.address == v.address
    other = Node.build(p, "h1")
    other.start(0.0)
    assert [e.vip.ip for e in other.address_present(0.5, v.ip)] == [v.ip]  # a backup drops it


def test_a_scoped_link_local_source_is_the_host() -> None:
    """recvfrom gives a link-local source with its zone ('fe80::3%eth1'); ipaddress compares the
    zone too, so without care the host with address6 fe80::3 was a stranger."""
    p = plan([{"name": "h4", "address": "198.51.100.5", "address6": "fe80::5"}])
    node = Node.build(p, "h1")
    node.start(0.0)
    v = next(v for v in v6(p) if "h4" in v.order)
    skew = v.advskew_of("h4")
    src = IPv6Address("fe80::5%eth1")
    node.packet6(1.0, carp6(v, IPv6Address("fe80::5"), skew, 5), src, GROUP6, 255)
    assert node.counters["drop_not_a_host"] == 0, dict(node.counters)
    assert node.counters["adverts_received"] == 1
    assert node.seen[(v.group, v.vhid)][IPv6Address("fe80::5")].src == IPv6Address("fe80::5")
    # Our own address with a zone is still our own.
    me = IPv6Address(f"{A6[1]}%eth1")
    assert node.packet6(1.1, carp6(v, A6[1], 0, 6), me, GROUP6, 255) == []
    assert node.counters["drop_not_a_host"] == 0
    dst = IPv6Address("ff02::12%eth1")
    node.packet6(1.2, carp6(v, IPv6Address("fe80::5"), skew, 7), src, dst, 255)
    assert node.counters["adverts_received"] == 2, dict(node.counters)


@settings(max_examples=200, deadline=None)
@given(
    carp=st.binary(max_size=60),
    hop=st.integers(-1, 256),
    src=st.one_of(st.ip_addresses(v=6), st.sampled_from(A6)),
    dst=st.one_of(st.ip_addresses(v=6), st.just(GROUP6)),
)
def test_packet6_never_raises(carp: bytes, hop: int, src: IPv6Address, dst: IPv6Address) -> None:
    node = FUZZ_NODE
    before = sum(node.counters.values())
    node.packet6(5.0, carp, src, dst, hop)
    assert sum(node.counters.values()) >= before


def _fuzz_node() -> Node:
    n = Node.build(plan(), "h1")
    n.start(0.0)
    return n


FUZZ_NODE = _fuzz_node()


def test_drain_and_undrain_one_ipv6_vip() -> None:
    """Drain by IPv6 address: only that VIP's machine hands over (farewell adverts to ff02::12),
    the others, IPv4 and IPv6, stay; undrain takes part again."""
    p = plan()
    node = Node.build(p, "h0")
    node.start(0.0)
    settle(node, 10.0)
    v = next(v for v in v6(p) if v.owner == "h0")
    out = node.drain(11.0, only=v.ip)
    assert out and all(e.vip == v for e in out)
    assert [(e.action.advbase, e.action.advskew) for e in out] == [(255, 255)]  # type: ignore[union-attr]
    assert [m.drained for k, m in node.machines.items()].count(True) == 1
    assert node.machines[(v.group, v.vhid)].drained
    assert [x.ip for x in node.drained()] == [v.ip]
    node.undrain(12.0, only=v.ip)
    assert not any(m.drained for m in node.machines.values())


def test_our_address6_going_stops_only_the_ipv6_vips() -> None:
    """Without its address6 (removed, or tentative/dadfailed) a host cannot send IPv6 adverts:
    its IPv6 VIPs stand aside, its IPv4 ones carry on; back, it takes part again."""
    p = plan()
    node = Node.build(p, "h0")
    node.start(0.0)
    settle(node, 10.0)
    assert all(m.state is State.MASTER for m in node.machines.values())
    node.source(False, 10.0, version=6)
    settle(node, 11.0)
    for m in node.machines.values():
        assert m.state is (State.MASTER if m.cfg.vip.version == 4 else State.BACKUP), m.cfg.vip
    assert node.source_up and not node.source6_up
    node.source(True, 11.0, version=6)
    settle(node, 30.0)
    assert all(m.state is State.MASTER for m in node.machines.values())
