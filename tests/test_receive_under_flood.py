"""The daemon's receive path under a flood that passes the kernel filter (issue 9, bench/flood.py):
the event loop keeps its turn, so the timers that send our own adverts are not held off, and the
CARP socket's buffer rides out the moments the daemon is not scheduled."""

from __future__ import annotations

import asyncio
import sys
from ipaddress import IPv4Address

import pytest

from iprotate.carp import codec
from iprotate.cluster.loader import parse_cluster
from iprotate.engine import daemon as daemon_mod
from iprotate.engine.daemon import Daemon
from iprotate.engine.wire import RECV_BUFFER
from iprotate.lab.netns import Segment
from iprotate.plan.planner import make_plan

BATCH = getattr(daemon_mod, "READ_BATCH", 64)
HOST = IPv4Address("198.51.100.1")
PEER = IPv4Address("198.51.100.2")
VIP = IPv4Address("203.0.113.10")


def _daemon() -> Daemon:
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [
            {"name": "a", "address": str(HOST)},
            {"name": "b", "address": str(PEER)},
        ],
        "vips": [{"address": f"{VIP}/24"}],
    }
    return Daemon(make_plan(parse_cluster(doc, "t.toml")), "a")


class FloodedSocket:
    """A CARP socket that always has a forged advert waiting (until `left` runs out)."""

    def __init__(self, left: int) -> None:
        self.left = left
        self.reads = 0
        carp = codec.encode_advert(
            vhid=10, advbase=1, advskew=0, counter=(1 << 63) | 12345, vip=VIP, password=b"pw"
        )
        self.packet = codec.build_ip_packet(PEER, IPv4Address("224.0.0.18"), carp)

    def recv(self) -> bytes | None:
        if self.reads >= self.left:
            return None
        self.reads += 1
        return self.packet


def test_one_wake_up_reads_a_bounded_batch_and_returns_to_the_loop() -> None:
    d = _daemon()
    sock = FloodedSocket(left=10 * BATCH)
    d.socket = sock  # type: ignore[assignment]

    async def go() -> list[int]:
        reads = []
        while sock.reads < sock.left:
            before = sock.reads
            d._on_readable()
            reads.append(sock.reads - before)
        return reads

    reads = asyncio.run(go())
    assert reads == [BATCH] * 10
    # Every packet was judged all the same: forged (the tag is wrong), none lost.
    assert d.node.counters["drop_forged"] == 10 * BATCH


def test_a_due_timer_runs_while_the_socket_never_empties() -> None:
    d = _daemon()
    sock = FloodedSocket(left=100_000)  # about a second of reads in one go
    d.socket = sock  # type: ignore[assignment]
    fired: list[int] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()

        # What add_reader does while the socket stays readable: the callback, again and again.
        def readable() -> None:
            d._on_readable()
            if not fired and sock.reads < sock.left:
                loop.call_soon(readable)

        loop.call_soon(readable)
        loop.call_later(0.01, lambda: fired.append(sock.reads))
        while not fired:
            await asyncio.sleep(0.01)

    asyncio.run(go())
    # The timer ran while packets were still waiting, not once the flood was read to the end.
    assert fired[0] < sock.left


@pytest.mark.netns
def test_the_carp_socket_gets_a_receive_buffer_for_bursts() -> None:
    """The default buffer (about 208 KiB) holds a few hundred packets: a daemon descheduled for
    a few milliseconds under a flood loses real adverts with the junk."""
    code = (
        "import socket; from ipaddress import IPv4Address as A\n"
        "from iprotate.engine.wire import CarpSocket\n"
        "s = CarpSocket('eth1', socket.if_nametoindex('eth1'), A('198.51.100.1'), "
        "[A('198.51.100.1')])\n"
        "print(s.receive_buffer())\n"
    )
    with Segment() as seg:
        seg.add("alpha", 1)
        got = int(seg.run("alpha", sys.executable, "-c", code))
    assert got >= 2 * RECV_BUFFER  # the kernel reports twice what was set


def test_the_kernel_filter_passes_the_other_hosts_not_our_own_address() -> None:
    # Our adverts never come back to us: a packet under our address is a spoof.
    assert _daemon()._sources() == [PEER]
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": "a", "address": str(HOST)}],
        "vips": [{"address": f"{VIP}/24"}],
    }
    alone = Daemon(make_plan(parse_cluster(doc, "t.toml")), "a")
    assert alone._sources() == [HOST]  # the filter needs an address; no one else sends


@pytest.mark.netns
def test_the_receive_buffer_holds_a_burst_of_every_vip_of_a_large_segment() -> None:
    """A master's adverts leave in one burst per interval: at 4,000 VIPs the buffer must hold
    4,000 adverts (bench/scale.py: with 2 MiB a survivor lost the tail of every burst and took
    those VIPs over from a live master)."""
    from iprotate.engine.wire import RECV_BUFFER_PER_VIP

    code = (
        "import socket; from ipaddress import IPv4Address as A\n"
        "from iprotate.engine.wire import CarpSocket\n"
        "s = CarpSocket('eth1', socket.if_nametoindex('eth1'), A('198.51.100.1'), "
        "[A('198.51.100.1')], vips=4000)\n"
        "print(s.receive_buffer())\n"
    )
    with Segment() as seg:
        seg.add("alpha", 1)
        got = int(seg.run("alpha", sys.executable, "-c", code))
    assert got >= 2 * 4000 * RECV_BUFFER_PER_VIP > 2 * RECV_BUFFER


def test_the_receive_buffer_grows_with_the_vips_up_to_a_bound() -> None:
    from iprotate.engine.wire import RECV_BUFFER_MAX, receive_buffer_size

    assert receive_buffer_size(0) == receive_buffer_size(256) == RECV_BUFFER
    assert receive_buffer_size(4000) == 4000 * 1024
    assert receive_buffer_size(65536) == RECV_BUFFER_MAX  # a hostile file pins no more
