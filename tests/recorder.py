"""A stand-in for the daemon's address setter, GARP/NA senders and CARP sockets, shared by the
daemon's unit tests: it records what is done, in order."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

from iprotate.cluster.loader import parse_cluster
from iprotate.engine.daemon import Daemon
from iprotate.plan.planner import make_plan


class Recorder:
    """The address setter, GARP/NA senders and CARP sockets: records what is done, in order;
    `fail` makes sends to those groups raise (a bug-like error, not an OSError)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.wire: list[bytes] = []  # the CARP bytes of every advert sent, in order
        self.fail: set[str] = set()

    def add(self, address: Any) -> bool:
        self.calls.append(("add", str(address.ip)))
        return True

    def delete(self, address: Any) -> bool:
        self.calls.append(("del", str(address.ip)))
        return True

    def send(self, *args: Any) -> None:
        if len(args) == 1:  # NaSender.send(ip) / GarpSender.send(ip)
            self.calls.append(("na" if isinstance(args[0], IPv6Address) else "garp", str(args[0])))
            return
        if str(args[1]) in self.fail:
            raise ValueError(f"cannot send to {args[1]}")
        self.calls.append(("advert", str(args[1])))
        self.wire.append(args[0])

    def close(self) -> None:
        pass

    def of(self, ip: str) -> list[str]:
        """What was done for `ip` (adverts too, for "*"), in order."""
        return [k for k, a in self.calls if a == ip or (k == "advert" and ip == "*")]


def recorded_daemon(vips: list[dict[str, Any]], vip_index: int = 7) -> tuple[Daemon, Recorder]:
    """The daemon of host h0 (198.51.100.1, 2001:db8::1) serving `vips` ([[vips]] tables), its
    address setter, GARP/NA senders and CARP sockets one Recorder; its VIP link `vip_index`."""
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": "h0", "address": "198.51.100.1", "address6": "2001:db8::1"}],
        "vips": vips,
    }
    d = Daemon(make_plan(parse_cluster(doc, "t.toml")), "h0")
    r = Recorder()
    d.addresses = d.na = d.garp = d.socket = d.socket6 = r  # type: ignore[assignment]
    d._vip_index = vip_index
    return d, r
