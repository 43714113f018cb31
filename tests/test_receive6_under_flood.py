"""The IPv6 receive path (Daemon._on_readable6) under a flood that passes the kernel filter, as
tests/test_receive_under_flood.py for IPv4: a bounded batch per wake-up, timers not held off,
every packet judged and counted."""

from __future__ import annotations

import asyncio
from ipaddress import IPv6Address

from iprotate.carp import codec
from iprotate.cluster.loader import parse_cluster
from iprotate.engine import daemon as daemon_mod
from iprotate.engine.daemon import Daemon
from iprotate.engine.wire6 import Received6
from iprotate.plan.planner import make_plan

BATCH = daemon_mod.READ_BATCH
PEER6 = IPv6Address("2001:db8::2")
VIP6 = IPv6Address("2001:db8:113::10")
GROUP6 = IPv6Address("ff02::12")


def _daemon() -> Daemon:
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [
            {"name": "a", "address": "198.51.100.1", "address6": "2001:db8::1"},
            {"name": "b", "address": "198.51.100.2", "address6": str(PEER6)},
        ],
        "vips": [{"address": f"{VIP6}/64"}],
    }
    return Daemon(make_plan(parse_cluster(doc, "t.toml")), "a")


class FloodedSocket6:
    """An IPv6 CARP socket that always has a forged advert from the peer's address6 waiting (a
    valid CARP digest, a wrong tag), until `left` runs out."""

    def __init__(self, left: int, dst: IPv6Address | None = GROUP6) -> None:
        self.left = left
        self.reads = 0
        carp = codec.encode_advert(
            vhid=16, advbase=1, advskew=0, counter=(1 << 63) | 12345, vip=VIP6, password=b"pw"
        )
        self.packet = Received6(carp, PEER6, dst, 255)

    def recv(self) -> Received6 | None:
        if self.reads >= self.left:
            return None
        self.reads += 1
        return self.packet


def test_one_wake_up_reads_a_bounded_batch_of_ipv6_adverts() -> None:
    d = _daemon()
    sock = FloodedSocket6(left=10 * BATCH)
    d.socket6 = sock  # type: ignore[assignment]

    async def go() -> list[int]:
        reads = []
        while sock.reads < sock.left:
            before = sock.reads
            d._on_readable6()
            reads.append(sock.reads - before)
        return reads

    assert asyncio.run(go()) == [BATCH] * 10
    assert d.node.counters["drop_forged"] == 10 * BATCH


def test_ipv6_packets_without_destination_are_counted_not_judged() -> None:
    d = _daemon()
    sock = FloodedSocket6(left=BATCH, dst=None)
    d.socket6 = sock  # type: ignore[assignment]

    async def go() -> None:
        d._on_readable6()

    asyncio.run(go())
    assert d.node.counters["drop_no_pktinfo"] == BATCH
    assert d.node.counters["drop_forged"] == 0


def test_a_due_timer_runs_while_the_ipv6_socket_never_empties() -> None:
    d = _daemon()
    sock = FloodedSocket6(left=100_000)
    d.socket6 = sock  # type: ignore[assignment]
    fired: list[int] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()

        def readable() -> None:
            d._on_readable6()
            if not fired and sock.reads < sock.left:
                loop.call_soon(readable)

        loop.call_soon(readable)
        loop.call_later(0.01, lambda: fired.append(sock.reads))
        while not fired:
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert fired[0] < sock.left
