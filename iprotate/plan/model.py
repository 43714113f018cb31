"""The plan: for every VIP its vhid, group, failover order and per-host CARP priorities.

Built by :func:`iprotate.plan.planner.make_plan`; read by the engine, the ucarp generator and
the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from iprotate.cluster.model import Check, Cluster, IPAddress, IPInterface, Vip


@dataclass(frozen=True)
class VipPlan:
    """One VIP's plan. `order`, `advskew` and `preempt` are aligned: index 0 is the owner."""

    vip: Vip
    vhid: int
    order: tuple[str, ...]
    advskew: tuple[int, ...]
    preempt: tuple[bool, ...]

    @property
    def address(self) -> IPInterface:
        return self.vip.address

    @cached_property
    def ip(self) -> IPAddress:
        # Made once: ipaddress builds a new object on every `.ip`, and the engine asks for it
        # per advert sent and received (bench/scale.py).
        return self.vip.address.ip

    @cached_property
    def group(self) -> IPAddress:
        # Read twice per advert sent (bench/scale.py).
        return self.vip.group

    @property
    def owner(self) -> str:
        return self.order[0]

    def rank(self, host: str) -> int | None:
        """0 for the owner, 1 for the first backup, ...; None if `host` takes no part."""
        try:
            return self.order.index(host)
        except ValueError:
            return None

    def advskew_of(self, host: str) -> int:
        return self.advskew[self.order.index(host)]

    def preempt_of(self, host: str) -> bool:
        return self.preempt[self.order.index(host)]

    def holder(self, down: Iterable[str] = ()) -> str | None:
        """Who holds this VIP once the CARP election settles with the `down` hosts failed."""
        dead = set(down)
        return next((h for h in self.order if h not in dead), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "vhid": self.vhid,
            "group": str(self.group),
            "owner": self.owner,
            "order": list(self.order),
            "advskew": dict(zip(self.order, self.advskew, strict=True)),
            "preempt": dict(zip(self.order, self.preempt, strict=True)),
        }


@dataclass(frozen=True)
class Plan:
    """The plan for a whole cluster."""

    cluster: Cluster
    vips: tuple[VipPlan, ...]

    def for_host(self, host: str) -> tuple[VipPlan, ...]:
        """The VIPs `host` takes part in, in plan order."""
        return tuple(v for v in self.vips if host in v.order)

    def checks_for(self, host: str) -> tuple[Check, ...]:
        """The health checks that run on `host` (by their `hosts`, or the VIPs it takes part in);
        none on a ucarp host, which runs no checks."""
        if self.cluster.host(host).engine != "iprotate":
            return ()
        mine = frozenset(v.ip for v in self.for_host(host))
        return tuple(c for c in self.cluster.checks if c.runs_on(host, mine))

    def by_key(self) -> dict[tuple[IPAddress, int], VipPlan]:
        """The VIPs keyed by (group, vhid), as they are told apart on the wire."""
        return {(v.group, v.vhid): v for v in self.vips}

    def load(self, down: Iterable[str] = ()) -> dict[str, int]:
        """How many VIPs each live host holds with the `down` hosts failed."""
        dead = set(down)
        counts = {h.name: 0 for h in self.cluster.hosts if h.name not in dead}
        for v in self.vips:
            holder = v.holder(dead)
            if holder is not None:
                counts[holder] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        c = self.cluster
        hosts: list[dict[str, Any]] = []
        for h in c.hosts:
            entry: dict[str, Any] = {"name": h.name, "address": str(h.address)}
            if h.address6 is not None:  # only then: an IPv4-only plan stays as it was
                entry["address6"] = str(h.address6)
            entry.update(
                interface=h.interface,
                vip_interface=h.vip_interface,
                weight=h.weight,
                engine=h.engine,
            )
            hosts.append(entry)
        return {
            "advbase": c.advbase,
            "dead_ratio": c.dead_ratio,
            "hosts": hosts,
            "vips": [v.to_json() for v in self.vips],
        }
