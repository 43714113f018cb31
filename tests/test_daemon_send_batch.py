"""The daemon's batched advert sending (`Daemon._emit_all`), with fake sockets: adverts that
follow each other are encoded first and sent back to back, but a send that fails in any way, or
a socket that is gone (a link rebuilt on a new ifindex whose socket could not be made), costs
only that advert: the batch's other adverts still go, the effects after them (an address
removed) are still carried out in order, and the timer is armed again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from recorder import Recorder, recorded_daemon

from iprotate.carp.machine import AddAddress, SendAdvert, SendGarp
from iprotate.carp.node import Effect
from iprotate.engine.daemon import Daemon


def _masters(doc_vips: list[dict[str, Any]]) -> tuple[Daemon, Recorder]:
    d, r = recorded_daemon(doc_vips)
    now = asyncio.get_running_loop().time()
    d._emit(d.node.start(now))
    while any(m.state.value != "MASTER" for m in d.node.machines.values()):
        assert d.node.deadline is not None
        d._emit(d.node.timers(d.node.deadline))
    for ip in list(d._held):  # IPv6 VIPs: in service at once (no kernel here)
        d._in_service(ip)
    r.calls.clear()
    return d, r


def test_a_gone_socket_keeps_the_rest_of_the_batch_and_the_timer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The IPv4 socket is gone (None): a stop's farewell adverts fail, but every address is
    still removed after them and _emit returns normally (the timer re-armed); a log line per
    batch of adverts, not a traceback per advert (a thousand VIPs advertise every second)."""

    async def main() -> None:
        d, r = _masters([{"pool": "203.0.113.10-203.0.113.13/24"}])
        d.socket = None
        errors = d.node.counters["errors"]
        d._emit(d.node.stop(asyncio.get_running_loop().time()))
        assert sorted(a for k, a in r.calls if k == "del") == [
            f"203.0.113.{i}" for i in range(10, 14)
        ]
        assert d.node.counters["errors"] - errors == 4  # one per advert not sent
        lines = [r.getMessage() for r in caplog.records if "advert" in r.getMessage()]
        assert all("adverts not sent: no CARP socket" in m for m in lines)
        assert sum(int(m.split()[0]) for m in lines) == 4
        assert not any(r.exc_info for r in caplog.records)
        assert d.node.deadline is None or d._timer is not None
        if d._timer is not None:
            d._timer.cancel()

    asyncio.run(main())


def test_one_family_failing_does_not_silence_the_other() -> None:
    """Every IPv6 send fails (its socket broken in a way no OSError says): the IPv4 adverts of
    the same grid point still go, each one, and every failure is counted."""

    async def main() -> None:
        vips = [
            {"pool": "2001:db8:113::10-2001:db8:113::12/64"},
            {"pool": "203.0.113.10-203.0.113.12/24"},
        ]
        d, r = _masters(vips)
        r.fail = {"ff02::12"}
        loop = asyncio.get_running_loop()
        sent, errors = d.node.counters["adverts_sent"], d.node.counters["errors"]
        for _ in range(3):  # three intervals of adverts from every master
            assert d.node.deadline is not None
            d._emit(d.node.timers(d.node.deadline))
        v4 = [a for k, a in r.calls if k == "advert"]
        assert v4 and set(v4) == {"224.0.0.18"} and len(v4) % 3 == 0
        assert d.node.counters["adverts_sent"] - sent == len(v4)
        assert d.node.counters["errors"] - errors == len(v4)  # as many IPv6 ones failed
        if d._timer is not None:
            d._timer.cancel()
        del loop

    asyncio.run(main())


def test_a_failed_send_mid_batch_keeps_the_order_and_the_others() -> None:
    """[advert, add, advert (fails: ENOBUFS), advert, garp, advert]: the adverts around the
    failure go, the address is added after the first advert and before the next, the GARP after
    the adverts before it; one error, the rest counted as sent."""

    async def main() -> None:
        d, r = _masters([{"pool": "203.0.113.10-203.0.113.14/24"}])
        vips = sorted(d.node.vips.values(), key=lambda v: v.vhid)
        calls: list[tuple[str, int]] = []

        def send(*args: Any) -> None:  # CarpSocket.send(carp, group) or GarpSender.send(ip)
            if len(args) == 1:
                calls.append(("garp", int(args[0]) & 0xFF))
            elif args[0][1] == vips[2].vhid:
                raise OSError(105, "No buffer space available")
            else:
                calls.append(("advert", args[0][1]))

        r.send = send  # type: ignore[method-assign]
        r.add = lambda a: calls.append(("add", int(a.ip) & 0xFF)) or True  # type: ignore[method-assign]
        ad = SendAdvert(1, 0, 5)
        effects = [
            Effect(vips[0], ad),
            Effect(vips[1], AddAddress()),
            Effect(vips[2], ad),
            Effect(vips[3], ad),
            Effect(vips[4], SendGarp()),
            Effect(vips[1], ad),
        ]
        sent, errors = d.node.counters["adverts_sent"], d.node.counters["errors"]
        d._emit_all(effects)
        vh = [v.vhid for v in vips]
        assert calls == [
            ("advert", vh[0]),
            ("add", 11),
            ("advert", vh[3]),
            ("garp", 14),
            ("advert", vh[1]),
        ]
        assert d.node.counters["adverts_sent"] - sent == 3
        assert d.node.counters["errors"] - errors == 1

    asyncio.run(main())
