"""What someone on the segment without the password can do to IPv6 VIPs, on the wire: adverts
captured and replayed, rewritten, sent under a host's address6 or from no host, with a hop limit
that crossed a router, to a unicast address, with an extension header, a bad checksum or extra
bytes, and a dead master's adverts replayed. Whole IPv6 packets go out in Ethernet frames
(wire_tool send6), so the attacker picks every field. In none of them may an IPv6 VIP move, stay
on two hosts or on none beyond the protocol's bound; each bad packet is dropped and counted."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

import pytest
from labtools import WIRE_TOOL, settled, status_counters, takeover_bound, wait_for

from iprotate.carp import codec
from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns

STRANGER6 = "2001:db8::97"


def capture6(lab: Lab, v: Any, src: str, seconds: float = 2.5) -> list[codec.Packet]:
    """The IPv6 adverts `src` sends for VIP `v`, whole, as the client sees them."""
    out = lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "capture6", "eth0", "-", str(seconds))
    pkts = [codec.decode_ipv6_packet(bytes.fromhex(h)) for h in out.split()]
    return [p for p in pkts if str(p.src) == src and p.advert.vhid == v.vhid]


def forge(p: codec.Packet, **fields: int) -> bytes:
    """The advert's CARP bytes (counter and digest untouched: the CARP digest still verifies) with
    another priority, checksummed again."""
    a = p.advert
    adv = codec.Advert(
        vhid=a.vhid,
        advskew=fields.get("advskew", a.advskew),
        advbase=fields.get("advbase", a.advbase),
        counter=a.counter,
        digest=a.digest,
    )
    return codec.pack_advert(adv)


def packet(
    p: codec.Packet,
    carp: bytes,
    src: str | None = None,
    dst: str | None = None,
    hop_limit: int = 255,
    next_header: int = codec.CARP_PROTO,
) -> str:
    s = IPv6Address(src) if src else p.src
    d = IPv6Address(dst) if dst else p.dst
    return codec.build_ipv6_packet(s, d, carp, hop_limit, next_header=next_header).hex()  # type: ignore[arg-type]


def with_hop_by_hop(carp: bytes) -> bytes:
    """A hop-by-hop options header (PadN to 8 bytes) before the CARP bytes."""
    return bytes((codec.CARP_PROTO, 0, 1, 4, 0, 0, 0, 0)) + carp


def send6(lab: Lab, *hexes: str, mac: str = "-") -> None:
    lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "send6", "eth0", mac, *hexes)


def address6(lab: Lab, host: str) -> str:
    return str(lab.plan.cluster.host(host).address6)


def v6(lab: Lab) -> list[Any]:
    return [v for v in lab.plan.vips if v.ip.version == 6]


def test_forged_and_malformed_ipv6_adverts_are_dropped_and_counted(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=3, vips=0, vips6=3, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in v6(lab) if v.owner == "alpha")
    victim = v.order[1]
    (third,) = set(lab.names) - {"alpha", victim}
    (p,) = capture6(lab, v, address6(lab, "alpha"), 1.5)[-1:]
    better = forge(p, advbase=0, advskew=0)
    bad_sum = bytearray(better)
    bad_sum[6] ^= 0xFF
    before = status_counters(lab, victim)
    attacks = {
        # Better priority under another host's address6: the digest verifies, the tag does not.
        "forged": [packet(p, better, src=address6(lab, third))],
        # The same, from an address that is no host: 64 of them, so the 1-in-64 sample lets some in.
        "not_a_host": [packet(p, better, src=STRANGER6)] * 256,
        # The owner's own advert as it was: already heard.
        "replay": [packet(p, codec.pack_advert(p.advert))],
        "bad_ttl": [packet(p, better, hop_limit=1), packet(p, better, hop_limit=254)],
        "bad_checksum": [packet(p, bytes(bad_sum))],
        "long": [packet(p, better + bytes(4))],
        "short": [packet(p, better[:20])],
        # Behind a hop-by-hop header the kernel still delivers it to the CARP socket.
        "forged ": [packet(p, with_hop_by_hop(better), src=address6(lab, third), next_header=0)],
    }
    for hexes in attacks.values():
        send6(lab, *hexes)
    # To the victim's unicast address6 and MAC, not the group.
    send6(
        lab,
        packet(p, better, dst=address6(lab, victim)),
        mac=lab.seg.members[victim].mac,
    )
    time.sleep(takeover_bound(lab, "alpha") + 1.0)
    assert settled(lab)(), lab.holders()
    after = status_counters(lab, victim)

    def grew(name: str) -> int:
        return after.get(f"drop_{name}", 0) - before.get(f"drop_{name}", 0)

    assert grew("forged") >= 2
    assert grew("not_a_host") >= 1
    assert grew("replay") + grew("stale") >= 1
    assert grew("bad_ttl") == 2
    assert grew("bad_checksum") == 1
    assert grew("long") == 1
    assert grew("short") == 1
    assert grew("wrong_group") == 1


def test_a_dead_owners_ipv6_adverts_replayed_do_not_hold_off_its_takeover(
    make_lab: Callable[..., Lab],
) -> None:
    """alpha's captured adverts replayed under its own address6 after it died, every 0.2 s:
    its backup still takes the IPv6 VIP within the protocol's bound."""
    lab = make_lab(hosts=3, vips=0, vips6=3)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in v6(lab) if v.owner == "alpha")
    captured = [
        packet(p, codec.pack_advert(p.advert)) for p in capture6(lab, v, address6(lab, "alpha"))
    ]
    assert captured
    (proc,) = lab.procs.pop("alpha")
    lab.seg.stop(proc, signal.SIGKILL)
    t0 = time.monotonic()
    rank1 = v.order[1]
    while time.monotonic() - t0 < takeover_bound(lab, "alpha") + 0.5:
        send6(lab, *captured)
        if lab.holders()[str(v.ip)] == [rank1]:
            break
        time.sleep(0.2)
    assert rank1 in lab.holders()[str(v.ip)], "replays held off the takeover"
