"""The CARP bytes the node encodes for an advert (`Effect.carp`) are the ones the daemon sends:
at once in a batch, through `_apply`, and after being held for a fresh IPv6 VIP; the daemon
encodes an advert itself only when they are b"" (then to the same bytes)."""

from __future__ import annotations

import asyncio

from recorder import Recorder, recorded_daemon

from iprotate.carp.machine import SendAdvert
from iprotate.carp.node import Effect
from iprotate.engine.daemon import Daemon


def _daemon() -> tuple[Daemon, Recorder, list[bytes]]:
    d, r = recorded_daemon([{"address": "203.0.113.10/24"}, {"address": "2001:db8:113::10/64"}])
    return d, r, r.wire


def test_the_nodes_advert_bytes_leave_as_they_are_held_or_not() -> None:
    async def main() -> None:
        d, _, wire = _daemon()
        made: list[bytes] = []
        emit = d._emit_all

        def noting(effects: list[Effect]) -> None:
            made.extend(e.carp for e in effects if isinstance(e.action, SendAdvert))
            emit(effects)

        d._emit_all = noting  # type: ignore[method-assign]
        d._encode = lambda e: b"re-encoded"  # type: ignore[method-assign]
        d._emit(d.node.start(asyncio.get_running_loop().time()))
        while any(m.state.value != "MASTER" for m in d.node.machines.values()):
            assert d.node.deadline is not None
            d._emit(d.node.timers(d.node.deadline))
        assert d._held  # the IPv6 VIP's advert waits for its address
        for ip in list(d._held):
            d._in_service(ip)
        assert d.node.deadline is not None
        d._emit(d.node.timers(d.node.deadline))
        # Each advert once, noted when made and again when a held one is released.
        assert wire and all(len(c) == 36 for c in wire)
        assert sorted(set(made)) == sorted(wire) and b"" not in made
        if d._timer is not None:
            d._timer.cancel()

    asyncio.run(main())


def test_an_advert_without_bytes_is_encoded_by_the_daemon_to_the_nodes_bytes() -> None:
    async def main() -> None:
        d, _, wire = _daemon()
        v = next(v for v in d.node.vips.values() if v.ip.version == 4)
        slot = d.node._slot_of((v.group, v.vhid))
        sealed = d.node._sealed(slot, SendAdvert(1, 0), asyncio.get_running_loop().time())
        assert len(sealed.carp) == 36
        bare = Effect(sealed.vip, sealed.action)
        assert bare.carp == b"" and bare != sealed and bare.action == sealed.action
        d._emit_all([bare])
        d._apply(bare)
        d._apply(sealed)
        assert wire == [sealed.carp] * 3

    asyncio.run(main())
