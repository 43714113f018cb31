"""The daemon's receive path under a flood that passes the kernel filter (issue 9, bench/flood.py):
the event loop keeps its turn, so the timers that send our own adverts are not held off, and the
CARP socket's buffer rides out the moments the daemon is not scheduled."""

from __future__ import annotations

import sys
from ipaddress import IPv4Address

import pytest
from flood_harness import (
    FloodedSocket,
    forged_carp,
    reads_before_a_due_timer,
    reads_per_wake_up,
    two_hosts,
)

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
    return two_hosts(f"{VIP}/24")


def _flood(left: int) -> FloodedSocket[bytes]:
    """Forged adverts from the peer (the tag is wrong), always one more waiting."""
    carp = forged_carp(10, VIP)
    return FloodedSocket(codec.build_ip_packet(PEER, IPv4Address("224.0.0.18"), carp), left)


def test_one_wake_up_reads_a_bounded_batch_and_returns_to_the_loop() -> None:
    d = _daemon()
    sock = _flood(left=10 * BATCH)
    d.socket = sock  # type: ignore[assignment]
    assert reads_per_wake_up(d._on_readable, sock) == [BATCH] * 10
    # Every packet was judged all the same: forged (the tag is wrong), none lost.
    assert d.node.counters["drop_forged"] == 10 * BATCH


def test_a_due_timer_runs_while_the_socket_never_empties() -> None:
    d = _daemon()
    sock = _flood(left=100_000)  # about a second of reads in one go
    d.socket = sock  # type: ignore[assignment]
    # The timer ran while packets were still waiting, not once the flood was read to the end.
    assert reads_before_a_due_timer(d._on_readable, sock) < sock.left


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
