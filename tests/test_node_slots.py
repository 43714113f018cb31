"""The node's timer heap holds slots (carp.node._Slot). A reload that replaces a machine (its
VIP's address changed) kills the old slot: its queued deadline must never run the dead machine,
and the new machine must get its own (a lone backup takes over after D); a reload that only
reconfigures a master keeps it advertising on its grid, and a reload that changes nothing of a
backup keeps its master-down deadline."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from iprotate.carp.machine import AddAddress, SendAdvert, State
from iprotate.carp.node import Effect, Node
from iprotate.cluster.loader import parse_cluster
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

DOC: dict[str, Any] = {
    "cluster": {"interface": "eth1", "password": "pw"},
    "hosts": [{"name": "h0", "address": "198.51.100.1"}, {"name": "h1", "address": "198.51.100.2"}],
    "vips": [
        {"address": "203.0.113.10/24", "owner": "h0"},
        {"address": "203.0.113.11/24", "owner": "h1"},
    ],
}


def _plan(change: Any = None) -> Plan:
    d = copy.deepcopy(DOC)
    if change is not None:
        change(d)
    return make_plan(parse_cluster(d, "t.toml"))


def _run(node: Node, start: float, until: float) -> list[tuple[float, Effect]]:
    out = []
    while node.deadline is not None and node.deadline <= until:
        t = max(node.deadline, start)
        out += [(t, e) for e in node.timers(t)]
    return out


def test_a_replaced_machine_never_runs_and_its_successor_takes_over_after_d() -> None:
    node = Node.build(_plan(), "h0")
    node.start(0.0)
    _run(node, 0.0, 10.0)  # alone: master of both
    assert all(m.state is State.MASTER for m in node.machines.values())
    moved = _plan(lambda d: d["vips"][0].update(address="203.0.113.20/24"))
    node.reload(moved, 10.05)
    later = _run(node, 10.05, 30.0)
    old = [e for _, e in later if str(e.vip.ip) == "203.0.113.10"]
    assert old == []  # the dead machine's queued timer ran nothing
    taken = [
        t for t, e in later if str(e.vip.ip) == "203.0.113.20" and isinstance(e.action, AddAddress)
    ]
    d = 3.0  # advbase 1 * dead_ratio 3 + skew 0
    assert taken and 10.05 + d - 0.01 <= taken[0] <= 10.05 + d + 1.01
    # The untouched master kept advertising every T (1 + its skew/256 s) all along.
    adverts = [
        t for t, e in later if str(e.vip.ip) == "203.0.113.11" and isinstance(e.action, SendAdvert)
    ]
    assert len(adverts) >= 15 and max(b - a for a, b in itertools.pairwise(adverts)) < 1.3


def test_a_reconfigured_backup_keeps_its_deadline() -> None:
    node = Node.build(_plan(), "h0")
    node.start(0.0)
    key = next(k for k, v in node.vips.items() if v.owner == "h1")
    m = node.machines[key]
    deadline = m.deadline
    assert deadline is not None
    node.reload(_plan(lambda d: d["cluster"].update(password="other")), 1.0)
    assert node.machines[key] is m and m.deadline == deadline
    assert node.deadline is not None and node.deadline <= deadline
    _run(node, 1.0, deadline + 0.01)
    assert m.state is State.MASTER
