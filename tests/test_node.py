"""The node (one host's machines and its receive path) and the status built from it, driven with a
fake clock and packets made by the codec: no sockets."""

from __future__ import annotations

import itertools
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest

from iprotate.carp import codec
from iprotate.carp.machine import AddAddress, DelAddress, SendAdvert, State, Transition
from iprotate.carp.native_auth import derive_key, split, tag
from iprotate.carp.node import VIPS_PER_SLOT, Node
from iprotate.carp.status import build_status, status_text
from iprotate.cluster.loader import parse_cluster
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

PW = b"pw"


def plan(vips: list[dict[str, Any]] | None = None, hosts: int = 3) -> Plan:
    doc = {
        "cluster": {"interface": "eth1", "password": PW.decode()},
        "hosts": [{"name": f"h{i}", "address": f"198.51.100.{i + 1}"} for i in range(hosts)],
        "vips": vips or [{"pool": "203.0.113.10-203.0.113.15/24"}],
    }
    return make_plan(parse_cluster(doc, "t.toml"))


def advert(
    p: Plan, vip: Any, src: str, advskew: int, seq: int, advbase: int = 1, raw: bool = False
) -> bytes:
    """An advert as iprotate host `src` sends it: its counter sealed with `seq` (native_auth);
    `raw`: `seq` is the whole counter, as ucarp or a forger would send it."""
    s = IPv4Address(src)
    counter = seq
    if not raw:
        t = tag(derive_key(PW), s, vip.group, vip.vhid, vip.ip, advbase, advskew, seq)
        counter = seq << 32 | t
    carp = codec.encode_advert(vhid=vip.vhid, advbase=advbase, advskew=advskew,
                               counter=counter, vip=vip.ip, password=PW)  # fmt: skip
    return codec.build_ip_packet(s, vip.group, carp)


def settle(node: Node, until: float) -> list[Any]:
    out = []
    while node.deadline is not None and node.deadline <= until:
        out += node.timers(node.deadline)
    return out


def test_a_lone_node_takes_every_vip_it_takes_part_in() -> None:
    p = plan()
    node = Node.build(p, "h0")
    effects = node.start(0.0)
    assert all(isinstance(e.action, DelAddress | Transition) for e in effects)
    settle(node, 10.0)
    assert all(m.state is State.MASTER for m in node.machines.values())
    assert node.counters["to_master"] == len(p.for_host("h0"))


def test_packets_route_to_their_machine_and_bad_ones_are_counted() -> None:
    p = plan()
    node = Node.build(p, "h1")
    node.start(0.0)
    v = next(v for v in p.vips if v.owner == "h0")
    src = "198.51.100.1"
    assert node.packet(1.0, advert(p, v, src, 0, 5)) == []
    assert node.counters["adverts_received"] == 1
    assert node.machines[(v.group, v.vhid)].master_src == IPv4Address(src)
    node.packet(1.1, advert(p, v, src, 0, 5))  # the same counter again: a replay
    assert node.counters["drop_replay"] == 1
    node.packet(1.2, b"\x45" + b"\0" * 10)
    assert node.counters["drop_short"] == 1
    stray = codec.encode_advert(vhid=v.vhid, advbase=1, advskew=0, counter=6, vip=v.ip, password=PW)
    node.packet(1.3, codec.build_ip_packet(IPv4Address(src), IPv4Address("224.0.0.19"), stray))
    assert node.counters["drop_wrong_group"] == 1
    own = advert(p, v, "198.51.100.2", 0, 7)
    assert node.packet(1.4, own) == []  # our own, looped back: ignored, not counted
    assert node.counters["adverts_received"] == 1  # the replay never counts as received
    # The owner's advert rewritten to a better priority, or sent with a made-up counter: forged.
    node.packet(1.5, advert(p, v, src, 0, 99, raw=True))
    rewritten = bytearray(advert(p, v, src, 0, 6))
    rewritten[20 + 2] = 1  # advskew 0 -> 1: the CARP digest still verifies
    rewritten[20 + 6 : 20 + 8] = codec.checksum(
        bytes(rewritten[20:22] + b"\x01" + rewritten[23:26] + b"\0\0" + rewritten[28:56])
    ).to_bytes(2, "big")
    node.packet(1.6, bytes(rewritten))
    assert node.counters["drop_forged"] == 2, dict(node.counters)
    assert node.counters["adverts_received"] == 1


def test_what_a_node_sends_its_peers_accept_and_a_replay_they_drop() -> None:
    """Two nodes on a fake wire, in time order: every advert one sends the other accepts (sealed
    counters, seq floored by the wall clock); each sent again is dropped as a replay."""
    p = plan()
    nodes = [Node.build(p, "h0", wall_offset=1e9), Node.build(p, "h1", wall_offset=1e9)]
    for n in nodes:
        n.start(0.0)
    now, sent = 0.0, 0
    while now < 20.0:
        due = [(n.deadline, i) for i, n in enumerate(nodes) if n.deadline is not None]
        now, i = min(due)
        queue = [(i, e) for e in nodes[i].timers(now)]
        while queue:
            i, e = queue.pop(0)
            if not isinstance(e.action, SendAdvert):
                continue
            v, adv = e.vip, e.action
            assert split(adv.counter)[0] >= 1e9  # the wall clock is the floor of the seq
            carp = codec.encode_advert(vhid=v.vhid, advbase=adv.advbase, advskew=adv.advskew,
                                       counter=adv.counter, vip=v.ip, password=PW)  # fmt: skip
            pkt = codec.build_ip_packet(nodes[i].address, v.group, carp)
            other = nodes[1 - i]
            before = other.counters["adverts_received"]
            queue += [(1 - i, r) for r in other.packet(now, pkt)]
            assert other.counters["adverts_received"] == before + 1, dict(other.counters)
            other.packet(now, pkt)
            sent += 1
    assert sent > 20
    assert sum(n.counters["drop_replay"] for n in nodes) == sent
    assert all(
        m.state is State.MASTER
        for n in nodes
        for k, m in n.machines.items()
        if n.vips[k].owner == n.host
    )


def test_drift_names_the_peer_and_status_fails() -> None:
    p = plan()
    node = Node.build(p, "h1")
    node.start(0.0)
    v = next(v for v in p.vips if v.owner == "h0")
    node.packet(1.0, advert(p, v, "198.51.100.1", 200, 5))
    node.packet(1.1, advert(p, v, "198.51.100.99", 0, 5))
    bad = codec.encode_advert(vhid=v.vhid, advbase=1, advskew=0, counter=9, vip=v.ip,
                              password=b"other")  # fmt: skip
    node.packet(1.2, codec.build_ip_packet(IPv4Address("198.51.100.3"), v.group, bad))
    doc = build_status(node, 2.0)
    details = sorted(d["detail"] for d in doc["drift"])
    assert details == [
        "fails the digest check (another password, VIP or vhid)",
        "h0 advertises 1/200, its plan says 1/0",
    ]
    # A sender that is no host of the file is dropped before anything else, and remembered.
    assert node.counters["drop_not_a_host"] == 1
    assert list(node.strangers) == [IPv4Address("198.51.100.99")]
    assert doc["strangers"] == [{"address": "198.51.100.99", "sampled": 1, "last_seen": 0.9}]
    assert any(i["kind"] == "not_a_host" and i["level"] == "WARNING" for i in doc["issues"])
    # Bounded: a flood from ever new spoofed sources keeps the most recent 16.
    for k in range(100):
        node.packet(3.0, advert(p, v, f"198.51.100.{101 + k}", 0, 5))
    assert len(node.strangers) == 16 and IPv4Address("198.51.100.200") in node.strangers
    assert doc["problems"]
    assert "PROBLEMS" in status_text(doc)
    # The plan's own priorities, the farewell and a drained skew are not drift.
    node2 = Node.build(p, "h1")
    node2.start(0.0)
    for i, (base, skew) in enumerate(((1, 0), (255, 255), (1, 255))):
        node2.packet(1.0 + i, advert(p, v, "198.51.100.1", skew, 10 + i, advbase=base))
    assert node2.drift == {}


def test_status_sees_masters_of_vips_it_takes_no_part_in_and_two_masters() -> None:
    p = plan(hosts=4, vips=[{"pool": "203.0.113.10-203.0.113.17/24"}])
    p = make_plan(parse_cluster({**_doc(p), "cluster": {**_doc(p)["cluster"], "backups": 1}}, "t"))
    node = Node.build(p, "h0")
    node.start(0.0)
    watched = next(v for v in p.vips if "h0" not in v.order)
    owner = p.cluster.host(watched.owner).address
    node.packet(1.0, advert(p, watched, str(owner), 0, 1))
    doc = build_status(node, 1.5)
    row = next(r for r in doc["vips"] if r["address"] == str(watched.address))
    assert row["state"] is None and row["master"] == [watched.owner]
    other = next(h.address for h in p.cluster.hosts if h.name not in ("h0", watched.owner))
    # Both go on advertising (they do not hear each other): two masters.
    node.packet(1.6, advert(p, watched, str(other), 255, 1))
    node.packet(2.0, advert(p, watched, str(owner), 0, 2))
    node.packet(2.6, advert(p, watched, str(other), 255, 2))
    node.packet(3.0, advert(p, watched, str(owner), 0, 3))
    doc = build_status(node, 3.1)
    assert any("two masters" in x for x in doc["problems"])
    # Silence for longer than an interval and a margin: no master any more.
    doc = build_status(node, 6.0)
    assert any(
        f"{watched.address} vhid {watched.vhid}: no master heard" == x for x in doc["problems"]
    )


def _doc(p: Plan) -> dict[str, Any]:
    c = p.cluster
    return {
        "cluster": {"interface": "eth1", "password": c.password.decode()},
        "hosts": [{"name": h.name, "address": str(h.address)} for h in c.hosts],
        "vips": [{"address": str(v.address)} for v in c.vips],
    }


def test_reload_touches_only_what_changed() -> None:
    p1 = plan(vips=[{"pool": "203.0.113.10-203.0.113.15/24"}])
    node = Node.build(p1, "h0")
    node.start(0.0)
    settle(node, 10.0)  # alone: master of everything it takes part in
    before = {k: m for k, m in node.machines.items()}
    p2 = plan(vips=[{"pool": "203.0.113.10-203.0.113.14/24"}, {"address": "203.0.113.30/24"}])
    effects = node.reload(p2, 11.0)
    touched = {e.vip.address for e in effects}
    gone = IPv4Address("203.0.113.15")
    # The removed VIP says farewell and is released.
    assert [type(e.action) for e in effects if e.vip.ip == gone][:2] == [SendAdvert, DelAddress]
    assert all(k[1] != 15 for k in node.machines)
    # The new VIP joins as backup.
    new = next(m for k, m in node.machines.items() if k[1] == 30)
    assert new.state is State.BACKUP
    # A VIP whose plan did not change keeps its machine and gets no effect at all.
    same = [
        v for v in p2.vips
        if v.ip in {x.ip for x in p1.vips}
        and (v.order, v.advskew) == next((x.order, x.advskew) for x in p1.vips if x.ip == v.ip)
    ]  # fmt: skip
    assert same
    for v in same:
        key = (v.group, v.vhid)
        if key in before:
            assert node.machines[key] is before[key]
            assert v.address not in touched
            assert node.machines[key].state is State.MASTER
    assert not any(isinstance(e.action, AddAddress) for e in effects)


def test_stray_vips_are_removed_from_a_backup_and_a_non_participant() -> None:
    p = plan(hosts=4, vips=[{"pool": "203.0.113.10-203.0.113.17/24"}])
    node = Node.build(p, "h0")
    node.start(0.0)
    mine = next(v for v in p.vips if "h0" in v.order)
    effects = node.address_present(0.5, mine.ip)
    assert [(e.vip, e.action) for e in effects] == [(mine, DelAddress())]
    others = [v for v in p.vips if "h0" not in v.order]
    if others:
        effects = node.address_present(0.5, others[0].ip)
        assert [(e.vip, e.action) for e in effects] == [(others[0], DelAddress())]
    assert node.address_present(0.5, IPv4Address("203.0.113.99")) == []
    settle(node, 10.0)
    assert node.address_present(10.0, mine.ip) == []  # master now: it is ours
    assert node.address_present(10.0, mine.ip, 24) == []  # with its planned prefix
    # A copy with another prefix is not the one a hand-over releases: it goes.
    effects = node.address_present(10.0, mine.ip, 32)
    assert [(e.vip, e.action) for e in effects] == [(mine, DelAddress())]


def test_vip_link_and_ignore_ifstate_reach_every_machine() -> None:
    p = plan()
    node = Node.build(p, "h0", ignore_ifstate=True)
    node.start(0.0)
    settle(node, 10.0)
    assert node.link(False, 10.0) == []  # advert carrier ignored
    effects = node.link(False, 10.5, vip=True)
    assert all(m.state is State.BACKUP for m in node.machines.values())
    assert sum(isinstance(e.action, DelAddress) for e in effects) == len(node.machines)
    r = node.reload(p, 11.0)
    assert r == [] and all(m.cfg.ignore_ifstate for m in node.machines.values())


def test_a_vip_joining_by_reload_while_a_link_is_down_does_not_take_over() -> None:
    small = plan(vips=[{"pool": "203.0.113.10-203.0.113.11/24"}])
    node = Node.build(small, "h0")
    node.start(0.0)
    node.link(False, 1.0, vip=True)
    node.reload(plan(), 2.0)
    settle(node, 30.0)
    assert all(m.state is State.BACKUP for m in node.machines.values())
    node.link(True, 31.0, vip=True)
    settle(node, 40.0)
    assert all(m.state is State.MASTER for m in node.machines.values())


def test_demote_hands_every_vip_over_and_staggers_the_return() -> None:
    p = plan()
    node = Node.build(p, "h0", hold_down=2.0, stagger=0.5)
    node.start(0.0)
    settle(node, 10.0)
    held = [m for m in node.machines.values() if m.state is State.MASTER]
    assert held
    effects = node.demote(10.0, 3.0)
    farewells = [e for e in effects if isinstance(e.action, SendAdvert)]
    assert len(farewells) == len(held) and all(e.action.advskew == 255 for e in farewells)
    assert all(m.demoted_until == 13.0 and not m.drained for m in node.machines.values())
    preempting = [m for m in node.machines.values() if m.cfg.preempt]
    assert sorted(m._demote_preempt_after for m in preempting) == [
        13.0 + 2.0 + 0.5 * i for i in range(len(preempting))
    ]
    assert node.drained() == []  # nothing to remember across a restart


def test_status_levels_follow_the_monitoring_convention() -> None:
    """OK with every VIP on its owner; UNKNOWN for silence just after start; WARNING for a VIP
    on a backup, an owner not heard, a drained peer, adverts of another plan; CRITICAL for a
    VIP with no master."""
    p = plan(hosts=2, vips=[{"pool": "203.0.113.10-203.0.113.13/24"}])
    node = Node.build(p, "h1")
    node.start(0.0)
    theirs = [v for v in p.vips if v.owner == "h0"]
    doc = build_status(node, 1.0)
    assert doc["level"] == "UNKNOWN" and doc["warming_up"], doc["problems"]
    assert doc["summary"].startswith("IPROTATE UNKNOWN - ")

    def hear(t: float, skew: int = 0, counter: int = 0) -> None:
        for v in theirs:
            node.packet(t, advert(p, v, "198.51.100.1", skew, int(t * 10) + counter))

    t = 0.0
    while t < 6.0:  # h0 advertises its VIPs; we take ours when D expires
        t += 0.5
        hear(t)
        settle(node, t)
    doc = build_status(node, t)
    assert (doc["level"], doc["problems"]) == ("OK", []), doc["problems"]
    assert doc["summary"] == "IPROTATE OK - 4 VIPs, each served by its planned owner"
    # h0 gone: we take its VIPs; a VIP on a backup and a host not heard are warnings.
    settle(node, t + 10.0)
    doc = build_status(node, t + 10.0)
    assert doc["level"] == "WARNING" and doc["summary"] == (
        f"IPROTATE WARNING - {len(theirs)} VIPs not on their owner (h0); not heard: h0"
    )
    # Adverts from a host of the file for a vhid we do not know: another plan there; from an
    # address outside the file, someone else's cluster on the segment, not ours to judge.
    stray = codec.encode_advert(vhid=99, advbase=1, advskew=0, counter=1, vip=IPv4Address(
        "203.0.113.99"), password=PW)  # fmt: skip
    for src in ("198.51.100.1", "198.51.100.77"):
        node.packet(t + 10.1, codec.build_ip_packet(IPv4Address(src), theirs[0].group, stray))
    doc = build_status(node, t + 10.2)
    assert [x for x in doc["problems"] if "vhid 99" in x] == [
        "host h0: advertises vhid 99, not in our plan (another cluster file?)"
    ]
    assert "another plan on h0" in doc["summary"]
    # Nobody at all for a VIP: CRITICAL.
    other = Node.build(p, "h1")
    other.start(0.0)
    node_doc = build_status(other, 10.0)  # never settled: nobody holds anything
    assert node_doc["level"] == "CRITICAL"
    assert "PROBLEMS" in status_text(node_doc)


def test_status_names_a_peer_drained_with_nobody_to_take_over() -> None:
    """A drained master nobody relieves keeps advertising with the skew 255: a warning, named."""
    p = plan(hosts=3, vips=[{"pool": "203.0.113.10-203.0.113.15/24"}])
    p = make_plan(parse_cluster({**_doc(p), "cluster": {**_doc(p)["cluster"], "backups": 1}}, "t"))
    watcher = next(h.name for h in p.cluster.hosts if any(h.name not in v.order for v in p.vips))
    v = next(v for v in p.vips if watcher not in v.order)
    node = Node.build(p, watcher)
    node.start(0.0)
    owner = str(p.cluster.host(v.owner).address)
    node.packet(9.0, advert(p, v, owner, 255, 1))
    doc = build_status(node, 9.5)
    assert (
        f"{v.address} vhid {v.vhid}: drained on {v.owner} (advertises skew 255)" in doc["problems"]
    )
    assert next(i for i in doc["issues"] if i["kind"] == "drained")["level"] == "WARNING"


def test_a_handover_is_not_two_masters() -> None:
    """A master that hears a better one sends one last advert and falls silent: while that advert
    is still fresh, status names the new master alone."""
    p = plan(hosts=3, vips=[{"address": "203.0.113.10/24"}])
    v = p.vips[0]
    watcher = v.order[2]
    node = Node.build(p, watcher)
    node.start(0.0)
    first, second = (str(p.cluster.host(h).address) for h in v.order[:2])
    for i, t in enumerate((1.0, 2.0, 3.0)):  # the first backup holds it
        node.packet(t, advert(p, v, second, v.advskew[1], 10 + i))
    node.packet(3.5, advert(p, v, first, 0, 20))  # the owner comes back and preempts
    node.packet(3.51, advert(p, v, second, v.advskew[1], 13))  # its last advert
    node.packet(3.52, advert(p, v, first, 0, 21))  # the owner answers it at once
    for t in (3.6, 4.4):
        assert node.masters(t)[(v.group, v.vhid)] == [IPv4Address(first)], t
    node.packet(4.5, advert(p, v, first, 0, 22))
    assert node.masters(5.0)[(v.group, v.vhid)] == [IPv4Address(first)]


def scale_plan(vips: int, per_group: int = 250) -> Plan:
    """`vips` VIPs owned by h0 in groups of `per_group`, from 198.18.0.0/15 (the benchmarking
    range: nothing is sent, the node is pure)."""
    pools = []
    for g in range(-(-vips // per_group)):
        n = min(per_group, vips - g * per_group)
        pools.append(
            {"pool": f"198.18.{g}.1-198.18.{g}.{n}/24", "group": f"224.0.0.{18 + g}", "owner": "h0"}
        )
    return plan(vips=pools, hosts=2)


def test_a_large_fail_back_fits_the_stagger_window() -> None:
    """2,000 VIPs coming back at 0.1 s each would take 200 s: the gap shrinks so that the whole
    fail-back fits STAGGER_WINDOW, still one VIP after the other (no storm); a few VIPs keep
    the configured gap."""
    from iprotate.carp.node import STAGGER_WINDOW

    node = Node.build(scale_plan(2000), "h0", hold_down=1.0, stagger=0.1)
    node.start(0.0)
    after = sorted(m.preempt_after for m in node.machines.values())
    assert len(after) == 2000
    assert after[0] == 1.0 and after[-1] < 1.0 + STAGGER_WINDOW
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(after)}
    assert gaps == {round(STAGGER_WINDOW / 2000, 9)}

    few = Node.build(scale_plan(6), "h0", hold_down=1.0, stagger=0.1)
    few.start(0.0)
    assert sorted(m.preempt_after for m in few.machines.values()) == [
        1.0 + 0.1 * i for i in range(6)
    ]


def test_address_events_find_their_vip_after_a_reload_moves_it() -> None:
    """Address events are looked up by address (an index, not a scan of every VIP): after a
    reload that changes a VIP's address, the new address is ours and the old one is not."""
    p = plan(hosts=1, vips=[{"pool": "203.0.113.10-203.0.113.11/24"}])
    node = Node.build(p, "h0")
    node.start(0.0)
    settle(node, 10.0)
    moved = plan(hosts=1, vips=[{"pool": "203.0.113.10-203.0.113.10/24"},
                                {"address": "203.0.113.20/24", "vhid": 11}])  # fmt: skip
    node.reload(moved, 11.0)
    settle(node, 20.0)
    new = node.address_present(21.0, IPv4Address("203.0.113.20"))
    assert not any(isinstance(e.action, DelAddress) for e in new)
    assert node.address_present(21.0, IPv4Address("203.0.113.11")) == []
    gone = node.address_gone(22.0, IPv4Address("203.0.113.20"))
    assert any(isinstance(e.action, AddAddress) for e in gone)


def test_a_reload_that_moves_a_vip_checks_its_adverts_against_the_new_priorities() -> None:
    # The receive path keeps each VIP's planned skew per source, made once per plan: a reload
    # must renew it, or a peer advertising its new planned priority would show as drift, and
    # one still advertising the old priority would not.
    vip = {"address": "203.0.113.10/24"}
    p1 = plan(vips=[{**vip, "owner": "h0"}])
    p2 = plan(vips=[{**vip, "owner": "h2"}])
    node = Node.build(p1, "h1")
    node.start(0.0)
    v1, v2 = p1.vips[0], p2.vips[0]
    assert (v1.advskew_of("h0"), v2.advskew_of("h0")) != (v1.advskew_of("h2"), v2.advskew_of("h2"))
    node.packet(1.0, advert(p1, v1, "198.51.100.1", v1.advskew_of("h0"), 10))
    assert node.drift == {}
    node.reload(p2, 1.5)
    node.packet(2.0, advert(p2, v2, "198.51.100.3", v2.advskew_of("h2"), 11))
    assert node.drift == {}
    node.packet(2.5, advert(p2, v2, "198.51.100.1", v1.advskew_of("h0"), 12))
    assert [d.detail for d in node.drift.values()] == [
        f"h0 advertises 1/{v1.advskew_of('h0')}, its plan says 1/{v2.advskew_of('h0')}"
    ]


def test_masters_advertise_in_one_burst_per_vips_per_slot_of_the_node() -> None:
    # Up to VIPS_PER_SLOT VIPs advertise together (one wake-up of the shell); more are spread
    # over the interval in bursts of about that many (machine "Phase"), also after a reload.
    small = plan(vips=[{"pool": "203.0.113.10-203.0.113.15/24"}], hosts=1)
    node = Node.build(small, "h0")
    node.start(0.0)
    assert {m.phase_slots for m in node.machines.values()} == {1}
    big = plan(vips=[{"pool": "203.0.113.1-203.0.113.254/24"}], hosts=1)
    node.reload(big, 1.0)
    assert len(node.machines) > VIPS_PER_SLOT
    assert {m.phase_slots for m in node.machines.values()} == {2}
    settle(node, 10.0)  # alone: every VIP taken over, adverts on two points of the interval
    due = {m._advert_at for m in node.machines.values()}
    assert len(due) == 2
    first, second = sorted(d for d in due if d is not None)
    assert (second - first) % 1.0 == pytest.approx(0.5)


def test_every_advert_leaves_encoded_with_its_sealed_counter() -> None:
    # The node encodes each advert it seals (the shell only sends): the bytes must be what the
    # codec gives for the advert's values and counter, farewells and reloads included.
    p = plan()
    node = Node.build(p, "h0", wall_offset=1e9)
    node.start(0.0)
    got = settle(node, 5.0)
    got += node.stop(5.5)
    sent = [e for e in got if isinstance(e.action, SendAdvert)]
    assert len(sent) > len(p.for_host("h0")) and any(e.action.advbase == 255 for e in sent)
    for e in sent:
        a = e.action
        want = codec.encode_advert(vhid=e.vip.vhid, advbase=a.advbase, advskew=a.advskew,
                                   counter=a.counter, vip=e.vip.ip, password=PW)  # fmt: skip
        assert e.carp == want


def test_a_password_ucarp_refuses_leaves_the_encoding_to_the_shell() -> None:
    # No encoder for a password no CARP advert may carry (the loader refuses one; a plan made
    # otherwise): the adverts still come out, sealed, without bytes; the shell's encoding then
    # fails and logs it, as before the node encoded them.
    p = plan()
    node = Node.build(replace(p, cluster=replace(p.cluster, password=b"a\0b")), "h0")
    node.start(0.0)
    sent = [e for e in settle(node, 5.0) if isinstance(e.action, SendAdvert)]
    assert sent and all(e.carp == b"" and e.action.counter for e in sent)


def test_machines_sharing_a_timer_time_each_run_once_per_time() -> None:
    # The timers keep one entry per time for every machine due then (a master's grid point):
    # each master advertises once per interval, none twice in a run, and `deadline` is never
    # later than the earliest machine's, also after a deadline moved earlier (a drain).
    p = plan([{"pool": "203.0.113.10-203.0.113.99/24"}], hosts=1)
    node = Node.build(p, "h0")
    node.start(0.0)
    settle(node, 5.0)
    assert all(m.state is State.MASTER for m in node.machines.values())
    count: dict[Any, int] = {}
    t = node.deadline
    drained = False
    while t is not None and t < 15.0:
        due = min(d for m in node.machines.values() if (d := m.deadline) is not None)
        assert t <= due
        vips = [e.vip.ip for e in node.timers(t) if isinstance(e.action, SendAdvert)]
        assert len(vips) == len(set(vips))
        for v in vips:
            count[v] = count.get(v, 0) + 1
        if t > 10.0 and not drained:  # a machine's deadline moves earlier: found in time
            drained = True
            node.drain(t, IPv4Address("203.0.113.50"))
        t = node.deadline
    drained_vip = count.pop(IPv4Address("203.0.113.50"))
    assert drained_vip >= 5 and len(count) == 89, count  # it advertised until drained, at least
    assert all(9 <= n <= 11 for n in count.values()), count
