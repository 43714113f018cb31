"""The IPv6 receive path (Daemon._on_readable6) under a flood that passes the kernel filter, as
tests/test_receive_under_flood.py for IPv4: a bounded batch per wake-up, timers not held off,
every packet judged and counted."""

from __future__ import annotations

from ipaddress import IPv6Address

from flood_harness import (
    FloodedSocket,
    forged_carp,
    reads_before_a_due_timer,
    reads_per_wake_up,
    two_hosts,
)

from iprotate.engine import daemon as daemon_mod
from iprotate.engine.daemon import Daemon
from iprotate.engine.wire6 import Received6

BATCH = daemon_mod.READ_BATCH
PEER6 = IPv6Address("2001:db8::2")
VIP6 = IPv6Address("2001:db8:113::10")
GROUP6 = IPv6Address("ff02::12")


def _daemon() -> Daemon:
    return two_hosts(f"{VIP6}/64", ("2001:db8::1", str(PEER6)))


def _flood(left: int, dst: IPv6Address | None = GROUP6) -> FloodedSocket[Received6]:
    """Forged adverts from the peer's address6 (a valid CARP digest, a wrong tag), always one
    more waiting."""
    return FloodedSocket(Received6(forged_carp(16, VIP6), PEER6, dst, 255), left)


def test_one_wake_up_reads_a_bounded_batch_of_ipv6_adverts() -> None:
    d = _daemon()
    sock = _flood(left=10 * BATCH)
    d.socket6 = sock  # type: ignore[assignment]
    assert reads_per_wake_up(d._on_readable6, sock) == [BATCH] * 10
    assert d.node.counters["drop_forged"] == 10 * BATCH


def test_ipv6_packets_without_destination_are_counted_not_judged() -> None:
    d = _daemon()
    sock = _flood(left=BATCH, dst=None)
    d.socket6 = sock  # type: ignore[assignment]
    assert reads_per_wake_up(d._on_readable6, sock) == [BATCH]
    assert d.node.counters["drop_no_pktinfo"] == BATCH
    assert d.node.counters["drop_forged"] == 0


def test_a_due_timer_runs_while_the_ipv6_socket_never_empties() -> None:
    d = _daemon()
    sock = _flood(left=100_000)
    d.socket6 = sock  # type: ignore[assignment]
    assert reads_before_a_due_timer(d._on_readable6, sock) < sock.left
