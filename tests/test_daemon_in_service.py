"""The daemon's effect path for a fresh IPv6 VIP, with fake sockets: its NA and first advert wait
until the kernel reports the address in service (RTM_NEWADDR) or IN_SERVICE_WAIT passes; IPv4
VIPs and other VIPs never wait. (A nodad IPv6 address gets its local route from a kernel worker
after the add returns: an NA sent at once lost pings at hand-over, bench/results/failover.md.)"""

from __future__ import annotations

import asyncio
from ipaddress import IPv6Address

from recorder import Recorder, recorded_daemon

from iprotate.engine import daemon as daemon_mod
from iprotate.engine.daemon import Daemon

VIP_INDEX = 7


def _daemon() -> tuple[Daemon, Recorder]:
    vips = [{"address": "203.0.113.10/24"}, {"pool": "2001:db8:113::10-2001:db8:113::11/64"}]
    return recorded_daemon(vips, VIP_INDEX)


def test_a_fresh_ipv6_vip_announces_itself_once_in_service() -> None:
    async def main() -> None:
        d, r = _daemon()
        loop = asyncio.get_running_loop()
        now = loop.time()
        d._emit(d.node.start(now))
        r.calls.clear()
        # Alone: master of every VIP when its master-down timer expires.
        while any(m.state.value != "MASTER" for m in d.node.machines.values()):
            assert d.node.deadline is not None
            d._emit(d.node.timers(d.node.deadline))
        v4, a, b = "203.0.113.10", "2001:db8:113::10", "2001:db8:113::11"
        # IPv4: added, announced, advertised at once. IPv6: added, the rest held.
        assert r.of(v4) == ["add", "garp"]
        assert r.of(a) == ["add"] and r.of(b) == ["add"]
        adverts = [x for x in r.calls if x[0] == "advert"]
        assert adverts == [("advert", "224.0.0.18")]
        # The kernel reports `a` in service: its NA, then its advert, in that order.
        d.address_added(VIP_INDEX, d.node.vips[next(k for k, v in d.node.vips.items()
                                                     if str(v.ip) == a)].address)  # fmt: skip
        assert r.of(a) == ["add", "na"]
        assert r.calls[-1] == ("advert", "ff02::12") and r.calls[-2] == ("na", a)
        assert r.of(b) == ["add"]
        # `b`'s report never comes (a lost event): IN_SERVICE_WAIT later it goes anyway.
        await asyncio.sleep(daemon_mod.IN_SERVICE_WAIT + 0.02)
        assert r.of(b) == ["add", "na"] and r.calls[-1] == ("advert", "ff02::12")
        assert not d._held
        # Released before it was ever in service: what waited goes first, then the delete.
        d.addresses.add = lambda address: True  # type: ignore[union-attr, method-assign]
        r.calls.clear()
        stop = d.node.stop(loop.time())
        d._emit(stop)
        assert ("del", a) in r.calls and ("del", b) in r.calls and ("del", v4) in r.calls
        if d._timer is not None:
            d._timer.cancel()

    asyncio.run(main())


def test_a_vip_released_before_it_is_in_service_sends_no_stale_na() -> None:
    """Taken, then released within the in-service wait (a better master heard at once, whose own
    NA went out before its advert): our held NA, sent on the way out, would come after that
    master's and pull every client's neighbour entry to a host that no longer has the VIP, until
    their neighbour unreachability detection gives up on it (seconds). The held adverts still go
    (a stop's last one hands the VIP over at once); the NA does not."""

    async def main() -> None:
        d, r = _daemon()
        loop = asyncio.get_running_loop()
        d._emit(d.node.start(loop.time()))
        r.calls.clear()
        while any(m.state.value != "MASTER" for m in d.node.machines.values()):
            assert d.node.deadline is not None
            d._emit(d.node.timers(d.node.deadline))
        a = "2001:db8:113::10"
        assert r.of(a) == ["add"] and IPv6Address(a) in d._held
        r.calls.clear()
        d._emit(d.node.stop(loop.time()))
        assert r.of(a) == ["del"], r.calls
        assert ("advert", "ff02::12") in r.calls
        assert not d._held
        if d._timer is not None:
            d._timer.cancel()

    asyncio.run(main())
