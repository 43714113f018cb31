"""A reload that changes the password and takes a VIP from this host: the farewell its master
sends on the way out must pass the checks of a peer that runs the new file (the shell digests
it with the new password, so its iprotate tag must be under the new key too). Before, it was
sealed under the old key: dropped as forged by every peer, which then took D to take over a VIP
this host had already removed."""

from __future__ import annotations

import copy
from typing import Any

from iprotate.carp import codec
from iprotate.carp.machine import SendAdvert, State, Transition
from iprotate.carp.node import Effect, Node
from iprotate.cluster.loader import parse_cluster
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

WALL = 1_700_000_000.0
DOC: dict[str, Any] = {
    "cluster": {"interface": "eth1", "password": "old", "backups": 1},
    "hosts": [
        {"name": "h0", "address": "198.51.100.1"},
        {"name": "h1", "address": "198.51.100.2"},
    ],
    "vips": [{"address": "203.0.113.10/24", "owner": "h0"}],
}


def _wire(node: Node, effects: list[Effect], plan: Plan) -> list[bytes]:
    """The adverts among `effects` as the daemon sends them, digested with `plan`'s password."""
    out = []
    for e in effects:
        if isinstance(e.action, SendAdvert):
            v, a = e.vip, e.action
            enc = codec.AdvertEncoder(v.vhid, v.ip, plan.cluster.password)
            # The node's own bytes when it encoded the advert (the daemon sends those as they
            # are), else the daemon's encoding with the plan's password.
            carp = e.carp or enc.encode(a.advbase, a.advskew, a.counter)
            out.append(codec.build_ip_packet(node.address, v.group, carp))
    return out


def test_the_farewell_of_a_reload_that_changes_the_password_is_heard() -> None:
    new_doc = copy.deepcopy(DOC)
    new_doc["cluster"].update(password="new", backups=0)  # h0 leaves the VIP to h1 alone
    new_doc["vips"][0]["owner"] = "h1"
    old, new = (make_plan(parse_cluster(copy.deepcopy(d), "t.toml")) for d in (DOC, new_doc))
    assert new.vips[0].order == ("h1",)
    h0, h1 = (Node.build(old, h, wall_offset=WALL) for h in ("h0", "h1"))
    h0.start(0.0)
    h1.start(0.0)
    t = 0.0
    while t < 6.0:
        t += 0.25
        for pkt in _wire(h0, h0.timers(t), old):
            h1.packet(t, pkt)
        h1.timers(t)
    assert [m.state for m in h0.machines.values()] == [State.MASTER]
    assert [m.state for m in h1.machines.values()] == [State.BACKUP]
    h1.reload(new, 6.1)  # the peer reloads first
    farewell = h0.reload(new, 6.2)
    heard = [e for pkt in _wire(h0, farewell, new) for e in h1.packet(6.2, pkt)]
    assert h1.counters["drop_forged"] == 0
    assert any(isinstance(e.action, Transition) and e.action.new is State.MASTER for e in heard)
