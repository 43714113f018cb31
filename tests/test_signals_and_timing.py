"""Signals a user may send to `iprotate run`, and sub-second timing (advbase 0) keeping the plan's
order and the hold-down: each against real daemons in namespaces."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from labtools import settled, takeover_bound, wait_for
from test_operations import transitions

from iprotate.lab.lab import Lab

pytestmark = pytest.mark.netns


def test_advbase0_hold_down_keeps_a_flapping_owner_out(make_lab: Callable[..., Lab]) -> None:
    """At advbase 0 the owner's master-down time (62 ms) is shorter than the interval of the
    backup serving its VIPs (187 ms): it used to take them back 62 ms after link up."""
    lab = make_lab(hosts=3, vips=6, advbase=0, run_args=("--hold-down", "3", "--stagger", "0.1"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    mine = sorted(str(v.address) for v in lab.plan.vips if v.owner == "alpha")
    t_start = time.time()
    for _ in range(3):  # cable out until the backups hold its VIPs, in for less than 3 s
        lab.seg.link("alpha", False)
        wait_for(settled(lab, {"alpha"}), takeover_bound(lab, "alpha") + 2.0)
        lab.seg.link("alpha", True)
        t_in = time.time()
        time.sleep(1.5)
        assert not [x for x in transitions(lab, "alpha") if x[0] > t_start], "it took VIPs back"
        assert settled(lab, {"alpha"})()
    # The last time the cable stays in: after the hold-down it takes them back.
    wait_for(settled(lab), 3.0 + 0.1 * len(mine) + 3.0)
    back = sorted(x for x in transitions(lab, "alpha") if x[0] > t_start)
    assert sorted(v for _, v in back) == mine
    assert back[0][0] >= t_in + 2.5


def test_advbase0_hard_failure_follows_the_plans_order(make_lab: Callable[..., Lab]) -> None:
    """Each of a failed owner's VIPs goes to its first backup; the second never takes it."""
    lab = make_lab(hosts=3, vips=6, advbase=0, run_args=("--hold-down", "1"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    t0 = time.time()
    lab.kill("alpha")
    wait_for(settled(lab, {"alpha"}), takeover_bound(lab, "alpha") + 2.0)
    time.sleep(1.0)
    for v in lab.plan.vips:
        if v.owner != "alpha":
            continue
        for n in v.order[2:]:
            took = [x for x in transitions(lab, n) if x[0] > t0 and x[1] == str(v.address)]
            assert not took, f"{n} (rank {v.order.index(n)}) took {v.address}"
    # The owner comes back: after its hold-down it takes them back, and the order still holds.
    lab.restore("alpha")
    wait_for(settled(lab), 1.0 + 6.0)
