"""A stand-in for the daemon's address setter, GARP/NA senders and CARP sockets, shared by the
daemon's unit tests: it records what is done, in order."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any


class Recorder:
    """The address setter, GARP/NA senders and CARP sockets: records what is done, in order;
    `fail` makes sends to those groups raise (a bug-like error, not an OSError)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
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

    def close(self) -> None:
        pass

    def of(self, ip: str) -> list[str]:
        """What was done for `ip` (adverts too, for "*"), in order."""
        return [k for k, a in self.calls if a == ip or (k == "advert" and ip == "*")]
