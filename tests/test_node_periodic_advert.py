"""Node.timers asks each machine's `periodic_advert` first and falls back to `timer`
(carp.machine). Driven with the same random events (timers on time and late, adverts heard, links,
own addresses, reloads, drains, demotes, checks, stop and start), a node must do exactly what a
node that always calls `timer` does: the same effects in the same order, with the same sealed
counters and encoded bytes, and the same next deadline."""

from __future__ import annotations

import heapq
import random
from ipaddress import IPv4Address
from typing import Any

import pytest

from iprotate.carp import codec
from iprotate.carp.machine import SendAdvert
from iprotate.carp.native_auth import derive_key, tag
from iprotate.carp.node import Effect, Node
from iprotate.cluster.loader import parse_cluster
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

PW = b"pw"


class TimerOnly(Node):
    """Node.timers as it was before periodic_advert: every due machine runs `timer`."""

    def timers(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        heap, due = self._timers, self._due
        while heap and heap[0] <= now:
            t = heapq.heappop(heap)
            for slot in due.pop(t):
                if slot.queued != t:
                    continue
                slot.queued = None
                m = slot.machine
                d = m.deadline
                if d is None:
                    continue
                if d > now:
                    self._schedule(slot)
                    continue
                out += self._effects(slot, m.timer(now), now)
        return out


def _plan(variant: int, advbase: int) -> Plan:
    vips: list[dict[str, Any]] = [
        {"pool": "203.0.113.10-203.0.113.13/24"},
        {"address": f"203.0.113.{20 + variant}/24", "group": "224.0.0.42"},
        {"pool": "2001:db8::10-2001:db8::11/64"},
    ]
    doc = {
        "cluster": {"interface": "eth1", "password": PW.decode(), "advbase": advbase},
        "hosts": [
            {"name": f"h{i}", "address": f"198.51.100.{i + 1}", "address6": f"2001:db8:1::{i + 1}"}
            for i in range(3)
        ],
        "vips": vips,
        "checks": [
            {
                "name": "web",
                "tcp": "127.0.0.1:80",
                "fall": 1,
                "vips": ["203.0.113.10", "2001:db8::10"],
            }
        ],
    }
    return make_plan(parse_cluster(doc, "t.toml"))


def _advert(vip: Any, src: str, advbase: int, advskew: int, seq: int) -> bytes:
    s = IPv4Address(src)
    t = tag(derive_key(PW), s, vip.group, vip.vhid, vip.ip, advbase, advskew, seq)
    carp = codec.encode_advert(vhid=vip.vhid, advbase=advbase, advskew=advskew,
                               counter=seq << 32 | t, vip=vip.ip, password=PW)  # fmt: skip
    return codec.build_ip_packet(s, vip.group, carp)


def _canon(effects: list[Effect]) -> list[tuple[Any, ...]]:
    """Effects by value, an advert's counter and bytes spelled out."""
    out: list[tuple[Any, ...]] = []
    for e in effects:
        a = e.action
        extra = (a.counter, e.carp) if isinstance(a, SendAdvert) else ()
        out.append((e.vip, a, *extra))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_periodic_advert_changes_nothing_a_node_does(seed: int) -> None:
    rng = random.Random(seed)
    advbase = rng.choice([0, 1, 2])
    plans = [_plan(0, advbase), _plan(1, advbase)]
    kw = {
        "hold_down": rng.choice([0.0, 1.0]),
        "stagger": 0.3,
        "garp_refresh": rng.choice([0.0, 2.5, 7.0]),
        "wall_offset": 1.7e9,
    }
    fast, ref = Node.build(plans[0], "h0", **kw), TimerOnly.build(plans[0], "h0", **kw)
    nodes = (fast, ref)

    adverts = 0

    def both(ev: tuple[Any, ...]) -> None:
        nonlocal adverts
        a, b = (_canon(_apply(n, ev)) for n in nodes)
        assert a == b, ev
        assert fast.deadline == ref.deadline
        adverts += sum(isinstance(e[1], SendAdvert) for e in a)

    now, cur, seq = 0.0, 0, 1
    both(("start", now))
    for _ in range(150):
        now += rng.choice([0.0, 0.01, 0.3, 1.0, 2.7, 5.0])
        while fast.deadline is not None and fast.deadline <= now:
            both(("timers", min(now, fast.deadline + rng.choice([0.0, 0.0, 0.2]))))  # late too
        k = rng.randrange(12)
        if k == 0:
            v = rng.choice([v for v in plans[cur].vips if v.group.version == 4])
            src = rng.choice(["198.51.100.2", "198.51.100.3"])
            seq += 1
            skew = rng.choice([1, 100, 200, 240, 255])
            both(("packet", now, _advert(v, src, rng.choice([advbase, 1, 3]), skew, seq)))
        elif k == 1:
            both(("link", rng.random() < 0.5, now, rng.random() < 0.5))
        elif k == 2:
            cur = 1 - cur
            both(("reload", plans[cur], now))
        elif k == 3:
            both(("drain", now))
        elif k == 4:
            both(("undrain", now))
        elif k == 5:
            both(("check", now, rng.random() < 0.5))
        elif k == 6:
            both(("demote", now, rng.choice([0.0, 0.5, 3.0])))
        elif k == 7 and rng.random() < 0.3:
            both(("restart", now))
        elif k == 8:
            both(("source", rng.random() < 0.7, now, rng.choice([4, 6])))
        else:
            both(("timers", now))
    assert adverts  # the fast path ran


def _apply(n: Node, ev: tuple[Any, ...]) -> list[Effect]:
    kind, *args = ev
    if kind == "check":
        return n.check_result(args[0], "web", args[1], "x")[1]
    if kind == "restart":
        return n.stop(args[0]) + n.start(args[0])
    return getattr(n, kind)(*args)
