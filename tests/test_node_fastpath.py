"""The receive path's pairs (carp.node._Pair): an advert of a (sender, VIP) pair heard before
takes a fast path found by the packet's raw bytes. It must decide exactly as the first packet's
path does: the same packets (valid, forged, rewritten, replayed, truncated, with IP options, from
strangers, for other vhids, IPv6 ones) into a node that keeps its pairs and into one that forgets
them before every packet, with reloads in between (password, host and VIP addresses, vhids,
engines, hosts and VIPs removed), drains and timers, give the same effects, counters, drift,
what was heard, and machine states."""

from __future__ import annotations

import copy
import random
from ipaddress import ip_address
from typing import Any

import pytest

from iprotate.carp import codec
from iprotate.carp.native_auth import NativeAuth
from iprotate.carp.node import Node
from iprotate.cluster.loader import parse_cluster
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

WALL = 1_700_000_000.0
BASE: dict[str, Any] = {
    "cluster": {"interface": "eth1", "password": "pw"},
    "hosts": [
        {"name": "h0", "address": "198.51.100.1", "address6": "2001:db8::1"},
        {"name": "h1", "address": "198.51.100.2", "address6": "2001:db8::2"},
        {"name": "h2", "address": "198.51.100.3", "engine": "ucarp"},
        {"name": "h3", "address": "198.51.100.4", "address6": "2001:db8::4"},
    ],
    "vips": [{"address": f"203.0.113.{10 + i}/24"} for i in range(6)]
    + [{"address": "2001:db8:113::10/64"}, {"address": "2001:db8:113::11/64"}],
}


def _variants() -> list[Plan]:
    def v(change: Any) -> dict[str, Any]:
        d = copy.deepcopy(BASE)
        change(d)
        return d

    docs = [
        v(lambda d: d["cluster"].update(password="pw2")),
        v(lambda d: d["hosts"][1].update(address="198.51.100.9")),
        v(lambda d: d["hosts"][0].update(address="198.51.100.8")),
        v(lambda d: d["hosts"][1].update(address6="2001:db8::9")),
        v(lambda d: d["hosts"][0].update(address6="2001:db8::8")),
        v(lambda d: d["vips"][1].update(address="203.0.113.99/24")),
        v(lambda d: d["vips"][0].update(vhid=77)),
        v(lambda d: d["hosts"][2].update(engine="iprotate", address6="2001:db8::3")),
        v(lambda d: (d["hosts"][1].update(engine="ucarp"), d["hosts"][1].pop("address6"))),
        v(lambda d: d["vips"].pop(2)),
        v(lambda d: d["hosts"].pop(3)),
        copy.deepcopy(BASE),
    ]
    return [make_plan(parse_cluster(d, "t.toml")) for d in docs]


class Scenario:
    """Random traffic from the plan's hosts and a stranger, valid and not."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.plan = make_plan(parse_cluster(copy.deepcopy(BASE), "t.toml"))
        self.peers: dict[tuple[object, ...], NativeAuth] = {}
        self.sent: list[tuple[Any, ...]] = []

    def advert(self, now: float) -> tuple[Any, ...] | None:
        r, p = self.r, self.plan
        sender = r.choice([h.name for h in p.cluster.hosts if h.name != "h0"] + ["stranger"])
        v = r.choice(p.vips)
        vhid = v.vhid if r.random() < 0.9 else r.randrange(1, 256)
        if sender == "stranger":
            src: Any = ip_address("198.51.100.200" if v.group.version == 4 else "2001:db8::200")
            skew, engine = r.randrange(256), "ucarp"
        else:
            h = p.cluster.host(sender)
            src = h.address if v.group.version == 4 else h.address6
            if src is None:
                return None
            skew = v.advskew_of(sender) if sender in v.order else r.randrange(256)
            engine = h.engine
        if r.random() < 0.15:
            skew = r.choice([r.randrange(256), 255, 254])
        advbase = p.cluster.advbase if r.random() < 0.95 else r.choice([255, 2])
        if engine == "iprotate" and r.random() < 0.9:
            h = p.cluster.host(sender)
            k = (sender, p.cluster.password, h.address, h.address6)
            auth = self.peers.setdefault(
                k, NativeAuth.for_password(p.cluster.password, h.address, h.address6)
            )
            counter = auth.counter((v.group, vhid), v.ip, advbase, skew, now + WALL)
        else:
            counter = r.getrandbits(64)
        pw = p.cluster.password if r.random() < 0.95 else b"other"
        carp = codec.AdvertEncoder(vhid, v.ip, pw).encode(advbase, skew, counter)
        if v.group.version == 4:
            return ("v4", codec.build_ip_packet(src, v.group, carp))
        return ("v6", carp, src, v.group, 255)

    def mutate(self, p: tuple[Any, ...]) -> tuple[Any, ...]:
        r = self.r
        k = r.randrange(8)
        if p[0] == "v6":
            if len(p[1]) < 36:
                return p
            carp, src, dst, hop = bytearray(p[1]), p[2], p[3], p[4]
            if k == 0:
                carp[r.randrange(36)] ^= 1 << r.randrange(8)
            elif k == 1:
                hop = r.choice([1, 64, 254])
            elif k == 2:
                carp = carp[: r.randrange(36)]
            elif k == 3:
                carp += b"\0\0"
            elif k == 4:
                dst = ip_address("ff02::1")
            elif k == 5:
                src = ip_address("2001:db8::" + r.choice(["1", "2", "3", "4", "99"]))
            else:  # advskew rewritten, checksum made right
                carp[2] = r.randrange(256)
                carp[6:8] = b"\0\0"
                carp[6:8] = codec.checksum(bytes(carp)).to_bytes(2, "big")
            return ("v6", bytes(carp), src, dst, hop)
        if len(p[1]) < 56:
            return p
        d = bytearray(p[1])

        def fix() -> None:  # the whole packet sums right again
            c = (d[0] & 15) * 4
            if len(d) >= c + 8:
                d[c + 6 : c + 8] = b"\0\0"
                d[c + 6 : c + 8] = codec.checksum(bytes(d)).to_bytes(2, "big")

        if k == 0:
            d[r.randrange(len(d))] ^= 1 << r.randrange(8)
        elif k == 1:
            d[r.randrange(len(d))] ^= 1 << r.randrange(8)
            fix()
        elif k == 2:
            d = d[: r.randrange(56)]
        elif k == 3:
            d += b"\0\0\0\0"
            d[2:4] = len(d).to_bytes(2, "big")
            fix()
        elif k == 4:
            d[8] = r.choice([1, 64, 254])
            fix()
        elif k == 5:  # IP options whose first bytes look like a CARP type and a vhid
            d = d[:20] + bytes([0x21, r.randrange(1, 8), 0, 0]) + d[20:]
            d[0], d[2:4] = 0x46, len(d).to_bytes(2, "big")
            fix()
        elif k == 6:
            d[22] = r.randrange(256)
            fix()
        else:
            d[12:16] = r.choice([bytes([198, 51, 100, x]) for x in (1, 2, 3, 4, 9, 200)])
            fix()
        return ("v4", bytes(d))


def _feed(node: Node, p: tuple[Any, ...], now: float, forget: bool) -> list[Any]:
    if forget:
        node._pairs.clear()
    if p[0] == "v4":
        return node.packet(now, p[1])
    return node.packet6(now, p[1], p[2], p[3], p[4])


def _view(node: Node) -> tuple[Any, ...]:
    seen = sorted(
        (str(k[0]), k[1], str(s.src), s.advbase, s.advskew, s.at, s.first)
        for k, by in node.seen.items()
        for s in by.values()
    )
    drift = sorted(
        (str(k[0][0]), k[0][1], str(k[1]), d.detail, d.count) for k, d in node.drift.items()
    )
    states = {str(k): (m.state, m.deadline) for k, m in node.machines.items()}
    return dict(node.counters), seen, drift, states, node.deadline


@pytest.mark.parametrize("seed", range(6))
def test_the_fast_path_decides_as_the_first_packet_path(seed: int) -> None:
    s = Scenario(seed)
    variants = _variants()
    fast, slow = (
        Node.build(s.plan, "h0", wall_offset=WALL, hold_down=0.5, stagger=0.1) for _ in range(2)
    )
    now = 100.0
    assert fast.start(now) == slow.start(now)
    r = s.r
    hits = 0  # IPv4 packets that found their pair
    for _ in range(500):
        now += r.choice([0.001, 0.01, 0.1, 0.3, 1.0, 2.5])
        x = r.random()
        p: tuple[Any, ...] | None = None
        if x < 0.55:
            p = s.advert(now)
            if p is not None and r.random() < 0.35:
                p = s.mutate(p)
            if p is not None:
                s.sent.append(p)
        elif x < 0.7 and s.sent:
            p = r.choice(s.sent)  # a replay, sometimes rewritten
            if r.random() < 0.3:
                p = s.mutate(p)
        elif x < 0.74:
            s.plan = r.choice(variants)
            assert fast.reload(s.plan, now) == slow.reload(s.plan, now)
        elif x < 0.76:
            assert fast.drain(now) == slow.drain(now)
        elif x < 0.78:
            assert fast.undrain(now) == slow.undrain(now)
        elif x < 0.79:
            up = r.random() < 0.5
            assert fast.link(up, now) == slow.link(up, now)
        else:
            assert fast.timers(now) == slow.timers(now)
        if p is not None:
            hits += p[0] == "v4" and p[1][12:22] in fast._pairs
            assert _feed(fast, p, now, False) == _feed(slow, p, now, True), p
        assert _view(fast) == _view(slow)
    assert fast.counters["adverts_received"] > 50 and hits > 20


def test_a_packet_as_a_bytearray_is_read_as_bytes() -> None:
    """The pairs are keyed by a slice of the packet: a bytearray's slice is unhashable, and
    decode_fields took any bytes-like packet before the fast path came."""
    s = Scenario(0)
    node = Node.build(s.plan, "h0", wall_offset=WALL)
    node.start(0.0)
    while (p := s.advert(1.0)) is None or p[0] != "v4":
        pass
    node.packet(1.0, p[1])
    got = node.counters["adverts_received"] + sum(
        n for k, n in node.counters.items() if k.startswith("drop_")
    )
    node.packet(1.1, bytearray(p[1]))  # the same again: a replay or a second advert
    after = node.counters["adverts_received"] + sum(
        n for k, n in node.counters.items() if k.startswith("drop_")
    )
    assert after == got + 1
