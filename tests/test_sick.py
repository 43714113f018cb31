"""The "Sick" rules of the CARP machine (a health check down on a host), with a fake clock.

A sick host gives its VIPs up make-before-break, stays out as a last resort, keeps the plan's
rank among sick hosts, and takes the VIPs back after the hold-down once healed (issue 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_carp import Wire, kinds, make, run_timers

from iprotate.carp.machine import (
    AddAddress,
    CarpMachine,
    DelAddress,
    SendAdvert,
    SendGarp,
    State,
    Transition,
)
from iprotate.plan.planner import ladder
from iprotate.plan.timing import SICK_ADVSKEW, master_down

SRCS = [IPv4Address(f"10.99.0.{i}") for i in (1, 2, 3)]


@dataclass
class PlanWire(Wire):
    """A wire whose receivers learn the sender's planned advskew, as the node tells them."""

    def feed(self, sender: CarpMachine, actions: list) -> None:  # type: ignore[override]
        queue = [(sender, a) for a in actions]
        for _ in range(10_000):
            if not queue:
                return
            m, a = queue.pop(0)
            self.log.append((m, a))
            if isinstance(a, AddAddress):
                self.holds[id(m)] = True
                self.took_at[id(m)] = self.now
            elif isinstance(a, DelAddress):
                self.holds[id(m)] = False
            elif isinstance(a, SendAdvert):
                for other in self.alive:
                    if other is not m:
                        got = other.advert(self.now, m.cfg.src, a.advbase, a.advskew, m.cfg.advskew)
                        queue += [(other, b) for b in got]
        raise AssertionError("advert storm: the machines never stop answering each other")


def cluster(advbase: int = 1, n: int = 3) -> tuple[list[CarpMachine], PlanWire]:
    ms = [make(advbase=advbase, advskew=s, src=SRCS[i]) for i, s in enumerate(ladder(advbase, n))]
    wire = PlanWire(ms)
    wire.start_all(0.0)
    wire.run_until(10.0)
    assert wire.masters() == [ms[0]]
    return ms, wire


def test_a_sick_master_hands_over_make_before_break() -> None:
    (owner, rank1, _rank2), wire = cluster()
    start = len(wire.log)
    wire.feed(owner, owner.sicken(10.0))
    assert wire.masters() == [owner]  # it holds the VIP until a taker answers
    wire.run_until(11.0)
    assert wire.masters() == [rank1]  # the next in the plan's order, not rank 2
    addr = [(m, a) for m, a in wire.log[start:] if isinstance(a, AddAddress | DelAddress)]
    assert addr == [(rank1, AddAddress()), (owner, DelAddress())]
    wire.run_until(100.0)
    assert wire.masters() == [rank1] and wire.holders() == [rank1]


def test_a_sick_backup_never_preempts_and_waits_after_every_healthy_one() -> None:
    (owner, rank1, _), wire = cluster()
    wire.feed(owner, owner.sicken(10.0))
    wire.run_until(50.0)
    assert owner.state is State.BACKUP
    # Behind a healthy master it waits D(254) + its own skew: after any healthy backup.
    assert owner.down_timeout == pytest.approx(master_down(1, SICK_ADVSKEW, 3) + 0)
    assert rank1.cfg.advskew < SICK_ADVSKEW
    for t in (51.0, 52.0):
        assert owner.advert(t, rank1.cfg.src, 1, rank1.cfg.advskew, rank1.cfg.advskew) == []
        assert owner.state is State.BACKUP


def test_healed_it_takes_its_vip_back_after_the_hold_down() -> None:
    (owner, rank1, _), wire = cluster()
    wire.feed(owner, owner.sicken(10.0))
    wire.run_until(20.0)
    assert wire.masters() == [rank1]
    wire.feed(owner, owner.heal(20.0, preempt_after=23.0))
    wire.run_until(22.9)
    assert wire.masters() == [rank1]  # the hold-down
    wire.run_until(24.5)
    assert wire.masters() == [owner]
    assert owner.transitions >= 3


def test_a_sick_master_advertises_254_and_a_healthy_backup_takes_it_back() -> None:
    owner = make(advbase=1, advskew=0, src=SRCS[0])
    owner.start(0.0)
    owner.sicken(0.0)
    # Alone: it takes the VIP anyway (better a sick host than nobody), after D(254).
    assert owner.deadline == pytest.approx(master_down(1, SICK_ADVSKEW, 3))
    out = owner.timer(owner.deadline)
    assert AddAddress() in out and SendAdvert(1, SICK_ADVSKEW) in out
    assert owner.last_resort
    got = run_timers(owner, 60.0)
    assert not any(isinstance(a, DelAddress) for _, a in got)
    # A healthy host (any rank) with preempt answers 254 by preempting; the sick one yields.
    out = owner.advert(61.0, SRCS[1], 1, 64, 64)
    assert kinds(out) == [Transition, DelAddress]
    assert owner.state is State.BACKUP


def test_two_sick_masters_settle_by_the_plan_not_the_address() -> None:
    # The plan ranks the host with the higher address first: the address tie-break would pick
    # the other one.
    hi, lo = IPv4Address("10.99.0.200"), IPv4Address("10.99.0.1")
    best = make(advbase=1, advskew=0, src=hi)
    worse = make(advbase=1, advskew=64, src=lo)
    for m in (best, worse):
        m.start(0.0)
        m.sicken(0.0)
        m.timer(m.deadline)  # both masters (a partition healed)
    out = worse.advert(10.0, hi, 1, SICK_ADVSKEW, 0)
    assert worse.state is State.BACKUP and DelAddress() in out
    out = best.advert(10.0, lo, 1, SICK_ADVSKEW, 64)
    assert best.state is State.MASTER and out == [SendGarp(), SendAdvert(1, SICK_ADVSKEW)]
    # And a sick backup ranked above a sick master preempts it.
    b = make(advbase=1, advskew=0, src=hi)
    b.start(0.0)
    b.sicken(0.0)
    out = b.advert(1.0, lo, 1, SICK_ADVSKEW, 64)
    assert b.state is State.MASTER and "both sick" in out[0].why
    c = make(advbase=1, advskew=64, src=lo)
    c.start(0.0)
    c.sicken(0.0)
    assert c.advert(1.0, hi, 1, SICK_ADVSKEW, 0) == []  # ranked below: it waits


def test_sick_everywhere_leaves_the_vip_on_the_highest_ranked_live_host() -> None:
    (owner, rank1, rank2), wire = cluster()
    # The owner falls sick first and hands over; then every other host does.
    wire.feed(owner, owner.sicken(10.0))
    wire.run_until(15.0)
    assert wire.masters() == [rank1]
    wire.feed(rank1, rank1.sicken(15.0))
    wire.run_until(16.0)
    assert wire.masters() == [rank2]
    wire.feed(rank2, rank2.sicken(16.0))
    wire.run_until(60.0)
    assert wire.masters() == [owner] and wire.holders() == [owner]
    assert owner.last_resort
    # The owner dies: the next sick host takes over, not the last.
    wire.kill(owner)
    wire.run_until(120.0)
    assert wire.masters() == [rank1] and wire.holders() == [rank1]


def test_drain_and_sick_are_independent() -> None:
    (owner, rank1, _), wire = cluster()
    wire.feed(owner, owner.drain(10.0))
    wire.feed(owner, owner.sicken(10.5))
    wire.run_until(20.0)
    assert wire.masters() == [rank1]
    # Undrained while sick: still aside.
    wire.feed(owner, owner.undrain(20.0, preempt_after=20.0))
    wire.run_until(30.0)
    assert wire.masters() == [rank1] and owner.sick and not owner.drained
    # Drained again, then healed: still drained.
    wire.feed(owner, owner.drain(30.0))
    wire.feed(owner, owner.heal(30.0, preempt_after=30.0))
    wire.run_until(40.0)
    assert wire.masters() == [rank1] and owner.drained and not owner.sick
    wire.feed(owner, owner.undrain(40.0, preempt_after=40.0))
    wire.run_until(45.0)
    assert wire.masters() == [owner]


def test_a_demote_ending_does_not_revive_a_sick_vip() -> None:
    (owner, rank1, _), wire = cluster()
    wire.feed(owner, owner.sicken(10.0))
    wire.run_until(12.0)
    wire.feed(owner, owner.demote(12.0, until=15.0, preempt_after=15.0))
    wire.run_until(30.0)
    assert wire.masters() == [rank1] and owner.sick


@settings(max_examples=60, deadline=None)
@given(
    advbase=st.sampled_from([0, 1]),
    steps=st.lists(
        st.tuples(st.sampled_from(["sicken", "heal", "kill", "revive"]), st.integers(0, 2)),
        max_size=8,
    ),
)
def test_after_any_faults_the_vip_settles_on_the_best_live_host(advbase: int, steps: list) -> None:
    """Whatever hosts fall sick, heal, die and come back, once things settle exactly one host
    holds the VIP: the highest-ranked healthy live one, or if every live host is sick, the
    highest-ranked live one."""
    ms, wire = cluster(advbase)
    t = 10.0
    dead: set[int] = set()
    for what, i in steps:
        m = ms[i]
        if what == "kill" and i not in dead and len(dead) < 2:
            wire.kill(m)
            dead.add(i)
        elif what == "revive" and i in dead:
            fresh = make(advbase=advbase, advskew=m.cfg.advskew, src=m.cfg.src)
            fresh.sick = m.sick
            wire.replace(m, fresh)
            ms[i] = fresh
            wire.start(fresh, t, preempt_after=t + 3.0)
            dead.discard(i)
        elif i not in dead and what == "sicken":
            wire.feed(m, m.sicken(t))
        elif i not in dead and what == "heal":
            wire.feed(m, m.heal(t, preempt_after=t + 3.0))
        t += 0.7
        wire.run_until(t)
    wire.run_until(t + 60.0)
    live = [m for i, m in enumerate(ms) if i not in dead]
    healthy = [m for m in live if not m.sick]
    best = (healthy or live)[0]
    assert wire.masters() == [best], [(m.cfg.advskew, m.sick, m.state) for m in live]
    assert wire.holders() == [best]


def test_a_check_flapping_faster_than_the_hold_down_does_not_drag_the_vip_back() -> None:
    (owner, rank1, _), wire = cluster()
    wire.feed(owner, owner.sicken(10.0))
    wire.run_until(11.0)
    assert wire.masters() == [rank1]
    moves = rank1.transitions
    t = 11.0
    for _ in range(10):  # up for 1 s, down again, with a hold-down of 3 s
        wire.feed(owner, owner.heal(t, preempt_after=t + 3.0))
        wire.run_until(t + 1.0)
        wire.feed(owner, owner.sicken(t + 1.0))
        t += 1.5
        wire.run_until(t)
    assert wire.masters() == [rank1] and rank1.transitions == moves


def test_a_sick_host_stays_sick_across_a_link_flap() -> None:
    (owner, rank1, _), wire = cluster()
    wire.feed(owner, owner.sicken(10.0))
    wire.run_until(12.0)
    wire.feed(owner, owner.link(False, 12.0))
    wire.feed(owner, owner.link(True, 13.0, preempt_after=13.0))
    assert owner.sick and owner.down_timeout == pytest.approx(master_down(1, SICK_ADVSKEW, 3))
    wire.run_until(30.0)
    assert wire.masters() == [rank1]


@settings(max_examples=60, deadline=None)
@given(
    advbase=st.sampled_from([0, 1]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["sicken", "heal", "drain", "undrain", "demote", "kill", "revive"]),
            st.integers(0, 2),
        ),
        max_size=10,
    ),
)
def test_sick_drained_and_demoted_together_always_settle_on_one_holder(
    advbase: int, steps: list
) -> None:
    """Whatever mix of sick, drained, demoted, dead and revived hosts: once things settle,
    exactly one live host holds the VIP, and a healthy, undrained one whenever there is one."""
    ms, wire = cluster(advbase)
    t = 10.0
    dead: set[int] = set()
    for what, i in steps:
        m = ms[i]
        if what == "kill" and i not in dead and len(dead) < 2:
            wire.kill(m)
            dead.add(i)
        elif what == "revive" and i in dead:
            fresh = make(advbase=advbase, advskew=m.cfg.advskew, src=m.cfg.src)
            fresh.sick, fresh.drained = m.sick, m.drained
            wire.replace(m, fresh)
            ms[i] = fresh
            wire.start(fresh, t, preempt_after=t + 3.0)
            dead.discard(i)
        elif i not in dead:
            if what == "sicken":
                wire.feed(m, m.sicken(t))
            elif what == "heal":
                wire.feed(m, m.heal(t, preempt_after=t + 3.0))
            elif what == "drain":
                wire.feed(m, m.drain(t))
            elif what == "undrain":
                wire.feed(m, m.undrain(t, preempt_after=t + 3.0))
            else:
                wire.feed(m, m.demote(t, until=t + 3.0, preempt_after=t + 6.0))
        t += 0.7
        wire.run_until(t)
    wire.run_until(t + 60.0)
    live = [m for i, m in enumerate(ms) if i not in dead]
    assert len(wire.masters()) == 1 and wire.holders() == wire.masters()
    fine = [m for m in live if not m.aside]
    if fine:
        assert wire.masters() == [fine[0]]
