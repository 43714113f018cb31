"""The harness of the receive-under-flood tests, IPv4 (test_receive_under_flood.py) and IPv6
(test_receive6_under_flood.py): a daemon of two hosts, a CARP socket that never empties, and the
two things measured, how many packets one wake-up reads and when a due timer gets its turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from iprotate.carp import codec
from iprotate.cluster.loader import parse_cluster
from iprotate.cluster.model import IPAddress
from iprotate.engine.daemon import Daemon
from iprotate.plan.planner import make_plan

P = TypeVar("P")


def two_hosts(vip: str, address6: tuple[str, str] | None = None) -> Daemon:
    """Host a's daemon, of a cluster of hosts a (198.51.100.1) and b (198.51.100.2) sharing `vip`
    (with its prefix); `address6` gives them their IPv6 advert sources."""
    hosts: list[dict[str, Any]] = [
        {"name": "a", "address": "198.51.100.1"},
        {"name": "b", "address": "198.51.100.2"},
    ]
    if address6 is not None:
        for h, a6 in zip(hosts, address6, strict=True):
            h["address6"] = a6
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": hosts,
        "vips": [{"address": vip}],
    }
    return Daemon(make_plan(parse_cluster(doc, "t.toml")), "a")


def forged_carp(vhid: int, vip: IPAddress) -> bytes:
    """A CARP advert for `vip` with a valid digest but no native tag: what each flood repeats
    (the daemon judges every one forged)."""
    return codec.encode_advert(
        vhid=vhid, advbase=1, advskew=0, counter=(1 << 63) | 12345, vip=vip, password=b"pw"
    )


class FloodedSocket(Generic[P]):
    """A CARP socket that always has `packet` waiting, until `left` runs out."""

    def __init__(self, packet: P, left: int) -> None:
        self.packet = packet
        self.left = left
        self.reads = 0

    def recv(self) -> P | None:
        if self.reads >= self.left:
            return None
        self.reads += 1
        return self.packet


def reads_per_wake_up(on_readable: Callable[[], None], sock: FloodedSocket[Any]) -> list[int]:
    """Wake the receive path until the flood is read: the packets each wake-up read."""

    async def go() -> list[int]:
        reads = []
        while sock.reads < sock.left:
            before = sock.reads
            on_readable()
            reads.append(sock.reads - before)
        return reads

    return asyncio.run(go())


def reads_before_a_due_timer(on_readable: Callable[[], None], sock: FloodedSocket[Any]) -> int:
    """Packets read by the time a timer due 10 ms in runs, while the socket stays readable."""
    fired: list[int] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()

        # What add_reader does while the socket stays readable: the callback, again and again.
        def readable() -> None:
            on_readable()
            if not fired and sock.reads < sock.left:
                loop.call_soon(readable)

        loop.call_soon(readable)
        loop.call_later(0.01, lambda: fired.append(sock.reads))
        while not fired:
            await asyncio.sleep(0.01)

    asyncio.run(go())
    return fired[0]
