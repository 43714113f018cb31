"""Unit tests of the CARP state machine (iprotate/carp.py) against CARP.md, with a fake clock.

No sockets and no sleeping: `now` is a plain float, and a tiny in-test "wire" delivers each
SendAdvert to the other live machines at the same instant.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iprotate.carp.machine import (
    DRAIN_PATIENCE,
    Action,
    AddAddress,
    CarpMachine,
    DelAddress,
    MachineConfig,
    SendAdvert,
    SendGarp,
    State,
    Transition,
)
from iprotate.plan.planner import ladder
from iprotate.plan.timing import FAREWELL_ADVBASE, FAREWELL_ADVSKEW

VIP = IPv4Address("192.0.2.10")
ME = IPv4Address("10.99.0.9")
PEER = IPv4Address("10.99.0.20")
NATIVE = IPv4Address("10.99.0.30")
FAREWELL = (FAREWELL_ADVBASE, FAREWELL_ADVSKEW)


def make(
    advbase: int = 1,
    advskew: int = 64,
    *,
    src: IPv4Address = ME,
    dead_ratio: int = 3,
    preempt: bool = True,
    garp_refresh: float = 0.0,
    ignore_ifstate: bool = False,
) -> CarpMachine:
    cfg = MachineConfig(
        vip=VIP,
        vhid=10,
        src=src,
        advbase=advbase,
        advskew=advskew,
        dead_ratio=dead_ratio,
        preempt=preempt,
        garp_refresh=garp_refresh,
        ignore_ifstate=ignore_ifstate,
    )
    return CarpMachine(cfg=cfg)


def kinds(actions: list[Action]) -> list[type]:
    return [type(a) for a in actions]


def adverts(actions: list[Action]) -> list[SendAdvert]:
    return [a for a in actions if isinstance(a, SendAdvert)]


def started(m: CarpMachine, now: float = 0.0, **kw) -> CarpMachine:
    m.start(now, **kw)
    return m


def as_master(m: CarpMachine, now: float = 0.0) -> float:
    """Start `m` and let its master-down timer expire; returns the takeover time."""
    m.start(now)
    t = m.deadline
    assert t is not None
    out = m.timer(t)
    assert m.state is State.MASTER, out
    return t


def run_timers(m: CarpMachine, until: float) -> list[tuple[float, Action]]:
    """Call `timer` at every deadline up to `until` (the shell's loop); collect timed actions."""
    got: list[tuple[float, Action]] = []
    for _ in range(100_000):
        t = m.deadline
        if t is None or t > until:
            return got
        got += [(t, a) for a in m.timer(t)]
    raise AssertionError("timer loop does not advance")


# --- INIT -------------------------------------------------------------------------------------


def test_init_start_goes_to_backup_releasing_address_and_arming_d():
    m = make(advbase=2, advskew=100, dead_ratio=4)
    assert m.state is State.INIT
    assert m.deadline is None
    out = m.start(10.0)
    assert out[0] == DelAddress()
    assert out[1:] == [Transition(State.INIT, State.BACKUP, "start")]
    assert m.state is State.BACKUP
    # D = advbase * dead_ratio + advskew/256: the skew is not multiplied.
    assert m.deadline == pytest.approx(10.0 + 2 * 4 + 100 / 256)
    assert not adverts(out)


def test_init_ignores_adverts_and_timers_before_start():
    m = make()
    assert m.advert(1.0, PEER, 1, 0) == []
    assert m.timer(100.0) == []
    assert m.state is State.INIT
    assert m.deadline is None


def test_advbase_zero_master_down_is_skew_only():
    m = started(make(advbase=0, advskew=48, dead_ratio=7), 1.0)
    assert m.down_timeout == pytest.approx(48 / 256)
    # Joining, it first waits for the slowest live master (a drained one, 255/256 s)...
    assert m.deadline == pytest.approx(1.0 + 255 / 256 + 48 / 256)
    # ... and behind a faster master D is what it waits, as ucarp does.
    m.advert(1.5, PEER, 0, 16)
    assert m.deadline == pytest.approx(1.5 + 48 / 256)


# --- BACKUP -----------------------------------------------------------------------------------


def test_backup_d_expiry_becomes_master_in_order():
    m = started(make(advbase=1, advskew=64))
    d = m.deadline
    assert d == pytest.approx(3.25)
    assert m.timer(d - 0.001) == []
    assert m.state is State.BACKUP
    out = m.timer(d)
    assert kinds(out) == [Transition, AddAddress, SendGarp, SendAdvert]
    assert out[0].old is State.BACKUP and out[0].new is State.MASTER
    assert out[3] == SendAdvert(1, 64)
    assert m.state is State.MASTER
    assert m.since == d


def test_backup_longer_interval_with_preempt_becomes_master_at_once():
    m = started(make(advbase=1, advskew=64, preempt=True))
    out = m.advert(1.0, PEER, 1, 128)
    assert kinds(out) == [Transition, AddAddress, SendGarp, SendAdvert]
    assert m.state is State.MASTER


def test_backup_longer_interval_without_preempt_stays_and_restarts_d():
    m = started(make(advbase=1, advskew=64, preempt=False))
    out = m.advert(2.0, PEER, 1, 128)
    assert out == []
    assert m.state is State.BACKUP
    assert m.deadline == pytest.approx(2.0 + 3.25)


@pytest.mark.parametrize("preempt", [False, True])
def test_backup_farewell_beyond_timeout_takes_over_even_without_preempt(preempt):
    m = started(make(advbase=1, advskew=64, preempt=preempt))
    assert m.advert(1.0, PEER, *FAREWELL) == []
    # Not at once as ucarp: after advskew/1024 s, so better-ranked backups answer first.
    assert m.deadline == pytest.approx(1.0 + 64 / 1024)
    out = m.timer(1.0 + 64 / 1024)
    assert kinds(out) == [Transition, AddAddress, SendGarp, SendAdvert]
    assert "farewell" in out[0].why
    assert m.state is State.MASTER


def test_owner_takes_a_farewell_at_once():
    m = started(make(advbase=1, advskew=0))
    out = m.advert(1.0, PEER, *FAREWELL)
    assert kinds(out) == [Transition, AddAddress, SendGarp, SendAdvert]


def test_farewell_then_a_better_backup_answers_first():
    rank2 = started(make(advbase=1, advskew=128))
    assert rank2.advert(1.0, PEER, *FAREWELL) == []
    assert rank2.deadline == pytest.approx(1.0 + 128 / 1024)
    # Rank 1 answered 62 ms after the farewell: rank 2 hears a master and stays backup.
    assert rank2.advert(1.0 + 64 / 1024, NATIVE, 1, 64) == []
    assert rank2.state is State.BACKUP
    assert rank2.deadline == pytest.approx(1.0 + 64 / 1024 + 3.5)
    # More farewells never push an early takeover later.
    m = started(make(advbase=1, advskew=64))
    m.advert(1.0, PEER, *FAREWELL)
    m.advert(1.05, PEER, *FAREWELL)
    assert m.deadline == pytest.approx(1.0 + 64 / 1024)


def test_backup_interval_just_beyond_timeout_takes_over_just_within_does_not():
    # Our D = 1 * 3 + 64/256 = 3.25 s.
    m = started(make(advbase=1, advskew=64, preempt=False))
    assert m.advert(1.0, PEER, 3, 64) == []  # 3.25: not beyond
    assert m.state is State.BACKUP
    assert m.advert(2.0, PEER, 3, 65) == []  # 3.254: beyond: taken after advskew/1024 s
    assert AddAddress() in m.timer(2.0 + 64 / 1024)
    assert m.state is State.MASTER


def test_backup_other_valid_advert_restarts_d():
    m = started(make(advbase=1, advskew=64))
    first = m.deadline
    assert m.advert(2.0, PEER, 1, 0) == []  # shorter interval: a better master
    assert m.state is State.BACKUP
    assert m.deadline == pytest.approx(2.0 + 3.25)
    assert m.deadline > first
    assert m.advert(2.5, PEER, 1, 64) == []  # equal interval: no preemption either
    assert m.deadline == pytest.approx(2.5 + 3.25)
    assert m.state is State.BACKUP
    assert m.master_src == PEER


def test_backup_never_advertises():
    m = started(make(advbase=1, advskew=200))
    out: list[Action] = []
    for i in range(50):
        out += m.advert(i * 1.0, PEER, 1, 0)
        out += m.timer(i * 1.0 + 0.5)
    assert not adverts(out)
    assert m.state is State.BACKUP


# --- MASTER -----------------------------------------------------------------------------------


def test_master_shorter_interval_sends_last_advert_and_yields():
    m = make(advbase=1, advskew=64)
    t0 = as_master(m)
    out = m.advert(t0 + 0.5, PEER, 1, 0)
    assert kinds(out) == [SendAdvert, Transition, DelAddress]
    assert out[0] == SendAdvert(1, 64)
    assert out[1].old is State.MASTER and out[1].new is State.BACKUP
    assert m.state is State.BACKUP
    assert m.deadline == pytest.approx(t0 + 0.5 + 3.25)


def test_tiebreak_is_little_endian_as_ucarp_on_x86():
    # 10.99.0.9 yields to 10.99.1.1 ...
    m = make(src=IPv4Address("10.99.0.9"))
    t0 = as_master(m)
    out = m.advert(t0 + 0.1, IPv4Address("10.99.1.1"), 1, 64)
    assert kinds(out) == [SendAdvert, Transition, DelAddress]
    assert m.state is State.BACKUP
    # ... but beats 10.99.0.10.
    m = make(src=IPv4Address("10.99.0.9"))
    t0 = as_master(m)
    out = m.advert(t0 + 0.1, IPv4Address("10.99.0.10"), 1, 64)
    assert kinds(out) == [SendGarp, SendAdvert]
    assert m.state is State.MASTER


def test_tiebreak_the_other_side_agrees():
    # 10.99.1.1 hearing 10.99.0.9 with an equal interval stays master; 10.99.0.10 yields to it.
    m = make(src=IPv4Address("10.99.1.1"))
    t0 = as_master(m)
    assert kinds(m.advert(t0 + 0.1, IPv4Address("10.99.0.9"), 1, 64)) == [SendGarp, SendAdvert]
    assert m.state is State.MASTER
    m = make(src=IPv4Address("10.99.0.10"))
    t0 = as_master(m)
    assert DelAddress() in m.advert(t0 + 0.1, IPv4Address("10.99.0.9"), 1, 64)
    assert m.state is State.BACKUP


@pytest.mark.parametrize(
    ("src", "advbase", "advskew"),
    [
        (PEER, 1, 65),  # longer interval
        (PEER, 2, 0),  # longer interval through advbase
        (IPv4Address("10.99.0.10"), 1, 64),  # equal interval from a "higher" address
    ],
)
def test_master_less_preferred_master_gets_garp_and_advert(src, advbase, advskew):
    m = make(advbase=1, advskew=64)
    t0 = as_master(m)
    deadline = m.deadline
    out = m.advert(t0 + 0.5, src, advbase, advskew)
    assert out == [SendGarp(), SendAdvert(1, 64)]
    assert m.state is State.MASTER
    assert m.deadline == deadline
    assert m.master_src == ME


def test_master_timing_adverts_every_interval_and_second_garp():
    m = make(advbase=1, advskew=64)
    t0 = as_master(m)
    assert t0 == pytest.approx(3.25)
    T = 1.25
    got = run_timers(m, t0 + 20)
    advert_times = [t for t, a in got if isinstance(a, SendAdvert)]
    garp_times = [t for t, a in got if isinstance(a, SendGarp)]
    # The first periodic advert at this VIP's phase within the interval, then every interval.
    first = advert_times[0]
    assert t0 < first <= t0 + T
    grid = (first - m._phase * T) / T
    assert abs(grid - round(grid)) < 1e-9
    assert advert_times == pytest.approx([first + k * T for k in range(len(advert_times))])
    assert len(advert_times) >= 15
    assert garp_times == pytest.approx([t0 + 2 * T])
    assert all(a == SendAdvert(1, 64) for _, a in got if isinstance(a, SendAdvert))
    assert m.state is State.MASTER


def test_masters_of_many_vips_advertise_spread_over_the_interval_not_in_step():
    # 1,000 machines that become master at the same instant (a host alone at start, or taking
    # over a dead host's VIPs in one batch) used to advertise in step: one burst of 1,000
    # adverts a second, so every backup's master-down timers expired in one burst too, and the
    # last VIP of a takeover waited for all the others (bench/scale.py). Their adverts now fall
    # on `phase_slots` points of the interval (the node's choice), each with about that share.
    slots = 16
    cfgs = [
        MachineConfig(IPv4Address(f"198.18.{i // 250}.{i % 250 + 1}"), i % 250 + 1, ME, 1, 0)
        for i in range(1000)
    ]
    ms = [CarpMachine(cfg, phase_slots=slots) for cfg in cfgs]
    t0 = as_master(ms[0])
    assert all(as_master(m) == t0 for m in ms)
    nxt = [m._advert_at for m in ms]
    assert all(d is not None and t0 < d <= t0 + 1.0 for d in nxt)
    per_slot = Counter(nxt)
    assert len(per_slot) == slots
    assert min(per_slot.values()) > 1000 / slots / 2, per_slot
    assert max(per_slot.values()) < 1000 / slots * 2, per_slot
    # A timer run late sends at once and keeps the machine on its grid: the next advert is at
    # the next point of it, not an interval after `now` (which put every machine of a late
    # batch in step with the others).
    m = ms[0]
    due = m._advert_at
    assert due is not None
    assert m.timer(due + 0.2) == [SendAdvert(1, 0)]
    assert m._advert_at == pytest.approx(due + 1.0)


def test_master_timing_periodic_garp_refresh():
    m = make(advbase=1, advskew=64, garp_refresh=5.0)
    t0 = as_master(m)
    got = run_timers(m, t0 + 30)
    garp_times = [t for t, a in got if isinstance(a, SendGarp)]
    assert garp_times == pytest.approx([t0 + 2.5 + 5 * k for k in range(6)])


def test_master_timing_subsecond():
    m = make(advbase=0, advskew=16)
    t0 = as_master(m)
    assert t0 == pytest.approx(255 / 256 + 16 / 256)  # alone: after the joining wait
    got = run_timers(m, t0 + 1.0)
    advert_times = [t for t, a in got if isinstance(a, SendAdvert)]
    first = advert_times[0]
    assert t0 < first <= t0 + 1 / 16
    assert advert_times == pytest.approx([first + k / 16 for k in range(len(advert_times))])
    assert len(advert_times) >= 15


# --- link -------------------------------------------------------------------------------------


def test_link_down_forces_backup_without_timers_and_ignores_adverts():
    m = make(advbase=1, advskew=64)
    t0 = as_master(m)
    out = m.link(False, t0 + 1)
    assert kinds(out) == [Transition, DelAddress]
    assert not adverts(out)
    assert m.state is State.BACKUP
    assert m.deadline is None
    # Adverts, even a farewell, are ignored; timers do nothing.
    assert m.advert(t0 + 2, PEER, *FAREWELL) == []
    assert m.advert(t0 + 3, PEER, 1, 128) == []
    assert m.timer(t0 + 100) == []
    assert m.state is State.BACKUP
    assert m.deadline is None
    assert m.link(False, t0 + 101) == []  # no change


def test_link_down_in_backup_clears_timer():
    m = started(make())
    assert m.link(False, 1.0) == []  # already BACKUP, no address held
    assert m.state is State.BACKUP
    assert m.deadline is None


def test_link_up_rejoins_as_backup_with_d_armed():
    m = make(advbase=1, advskew=64)
    t0 = as_master(m)
    m.link(False, t0 + 1)
    out = m.link(True, t0 + 10)
    assert AddAddress() not in out and not adverts(out)
    assert m.state is State.BACKUP
    assert m.deadline == pytest.approx(t0 + 10 + 3.25)
    # Rejoin: a better master keeps us backup, silence makes us master.
    assert m.advert(t0 + 11, PEER, 1, 0) == []
    assert m.deadline == pytest.approx(t0 + 11 + 3.25)
    out = m.timer(t0 + 11 + 3.25)
    assert kinds(out) == [Transition, AddAddress, SendGarp, SendAdvert]


def test_link_up_holds_down_preemption():
    m = make(advbase=1, advskew=0)
    t0 = as_master(m)
    m.link(False, t0 + 1)
    m.link(True, t0 + 2, preempt_after=t0 + 20)
    assert m.advert(t0 + 3, PEER, 1, 64) == []
    assert m.state is State.BACKUP
    assert AddAddress() in m.advert(t0 + 21, PEER, 1, 64)


def test_link_changes_before_start():
    m = make()
    assert m.link(False, 0.0) == []
    m.start(1.0)
    assert m.state is State.BACKUP
    assert m.deadline is None
    m.link(True, 2.0)
    assert m.deadline == pytest.approx(2.0 + 3.25)


def test_vip_link_down_master_says_farewell_and_releases():
    m = make(advbase=1, advskew=64)
    t0 = as_master(m)
    out = m.link(False, t0 + 1, vip=True)
    assert kinds(out) == [SendAdvert, Transition, DelAddress]
    assert (out[0].advbase, out[0].advskew) == FAREWELL
    assert m.state is State.BACKUP and m.deadline is None
    assert not m.link_up
    # It cannot serve: no takeover, whatever it hears or however long it waits.
    assert m.advert(t0 + 2, PEER, *FAREWELL) == []
    assert m.timer(t0 + 100) == []
    # The advert link going down and up meanwhile does not bring it back.
    assert m.link(False, t0 + 101) == []
    assert m.link(True, t0 + 102) == []
    assert m.deadline is None
    out = m.link(True, t0 + 103, preempt_after=t0 + 110, vip=True)
    assert out == [] and m.state is State.BACKUP
    assert m.deadline == pytest.approx(t0 + 103 + 3.25)
    assert m.preempt_after == t0 + 110


def test_advert_link_down_master_sends_nothing():
    m = make(advbase=1, advskew=64)
    t0 = as_master(m)
    out = m.link(False, t0 + 1)
    assert kinds(out) == [Transition, DelAddress]  # no farewell: the link cannot carry it


def test_ignore_ifstate_keeps_serving_without_advert_carrier():
    m = make(advbase=1, advskew=64, ignore_ifstate=True)
    t0 = as_master(m)
    assert m.link(False, t0 + 1) == []
    assert m.state is State.MASTER
    assert adverts(m.timer(t0 + 2))  # keeps advertising (a peer may come back)
    # A backup keeps its timer and takes over when the peer is silent.
    b = started(make(advbase=1, advskew=64, ignore_ifstate=True))
    assert b.link(False, 0.5) == []
    assert b.deadline == pytest.approx(3.25)
    # The VIP link still counts.
    out = m.link(False, t0 + 3, vip=True)
    assert State.BACKUP is m.state and DelAddress() in out


def test_stray_address_is_removed_unless_master():
    m = make()
    assert m.address_present(0.0) == []  # INIT: start-up cleanup's business
    m.start(0.0)
    assert m.address_present(0.5) == [DelAddress()]
    m2 = make()
    t = as_master(m2)
    assert m2.address_present(t + 0.1) == []  # our own add, seen while master


# --- hold-down --------------------------------------------------------------------------------


def test_hold_down_returning_owner_waits_then_preempts():
    owner = make(advbase=1, advskew=0)
    owner.start(0.0, preempt_after=30.0)
    # rank 1 is master with 1/64: longer than ours, but we are held down.
    for t in range(1, 30):
        assert owner.advert(float(t), PEER, 1, 64) == []
        assert owner.state is State.BACKUP
        # D, or the end of the hold-down when it comes first: it then preempts at once, not at
        # the master's next advert (a host's adverts come in bursts: that undid the stagger).
        assert owner.deadline == pytest.approx(min(t + 3.0, 30.0))
        assert owner.timer(t + 0.99) == []
    out = owner.timer(30.0)
    assert kinds(out) == [Transition, AddAddress, SendGarp, SendAdvert]
    assert out[0].why == f"preempting {PEER} (1/64) after the hold-down"


def test_hold_down_end_preempts_only_a_less_preferred_master():
    owner = make(advbase=1, advskew=0)
    owner.start(0.0, preempt_after=5.0)
    owner.advert(4.0, PEER, 1, 64)
    assert owner.deadline == pytest.approx(5.0)
    # A better master appears before the hold-down ends: no preemption is left armed.
    assert owner.advert(4.5, PEER, 0, 0) == []
    assert owner.deadline == pytest.approx(4.5 + 3.0)
    assert owner.timer(5.0) == [] and owner.state is State.BACKUP


def test_hold_down_does_not_stop_master_down_takeover():
    owner = make(advbase=1, advskew=0)
    owner.start(0.0, preempt_after=1000.0)
    assert owner.deadline == pytest.approx(3.0)
    out = owner.timer(3.0)
    assert AddAddress() in out
    assert owner.state is State.MASTER


def test_hold_down_does_not_stop_farewell_takeover():
    owner = make(advbase=1, advskew=0)
    owner.start(0.0, preempt_after=1000.0)
    assert AddAddress() in owner.advert(1.0, PEER, *FAREWELL)


# --- drain ------------------------------------------------------------------------------------


def test_draining_master_says_farewell_and_holds_until_answered():
    m = make(advbase=1, advskew=0)
    t0 = as_master(m)
    out = m.drain(t0 + 0.5)
    assert out == [SendAdvert(*FAREWELL)]
    assert m.state is State.MASTER
    # Still master (address held) while nobody answers; adverts stay farewells until the patience.
    got = run_timers(m, t0 + 0.5 + DRAIN_PATIENCE - 0.01)
    assert [(a.advbase, a.advskew) for _, a in got if isinstance(a, SendAdvert)]
    assert all((a.advbase, a.advskew) == FAREWELL for _, a in got if isinstance(a, SendAdvert))
    assert not any(isinstance(a, DelAddress) for _, a in got)
    assert m.state is State.MASTER
    # A master answers (its advert is better than ours, whatever the interval): we yield.
    out = m.advert(t0 + 2.0, PEER, 1, 64)
    # No last advert: its skew of 255 would make every backup with preempt jump.
    assert kinds(out) == [Transition, DelAddress]
    assert m.state is State.BACKUP


def test_drain_is_make_before_break_on_the_wire():
    owner, rank1 = make(advbase=1, advskew=0, src=ME), make(advbase=1, advskew=64, src=PEER)
    wire = Wire([owner, rank1])
    wire.start_all(0.0)
    wire.run_until(10.0)
    assert wire.masters() == [owner]
    log_start = len(wire.log)
    wire.feed(owner, owner.drain(10.0))
    assert wire.masters() == [owner]  # until rank 1 answers, advskew/1024 s later
    wire.run_until(10.0 + 64 / 1024)
    assert wire.masters() == [rank1]
    # Order of address actions: rank1 adds before the owner deletes.
    addr = [(m, a) for m, a in wire.log[log_start:] if isinstance(a, AddAddress | DelAddress)]
    assert addr == [(rank1, AddAddress()), (owner, DelAddress())]
    wire.run_until(60.0)
    assert wire.masters() == [rank1]
    assert owner.state is State.BACKUP


def test_drained_backup_never_preempts():
    m = make(advbase=1, advskew=0)
    m.start(0.0)
    m.drain(0.5)
    assert m.state is State.BACKUP
    for t in range(1, 20):
        assert m.advert(float(t), PEER, 1, 200) == []
        assert m.state is State.BACKUP
        # It waits as if its advskew were 255.
        assert m.deadline == pytest.approx(t + 3 + 255 / 256)


def test_drained_backup_alone_takes_the_vip_as_last_resort():
    m = make(advbase=1, advskew=0)
    m.start(0.0)
    m.drain(0.0)
    assert m.deadline == pytest.approx(3 + 255 / 256)
    out = m.timer(m.deadline)
    assert AddAddress() in out
    assert m.state is State.MASTER
    # It keeps it while nobody else is alive.
    got = run_timers(m, 100.0)
    assert not any(isinstance(a, DelAddress) for _, a in got)
    assert m.state is State.MASTER


def test_drained_master_alone_keeps_the_vip():
    m = make(advbase=1, advskew=0)
    t0 = as_master(m)
    m.drain(t0)
    got = run_timers(m, t0 + 100)
    assert m.state is State.MASTER
    assert not any(isinstance(a, DelAddress) for _, a in got)
    sent = [(t, (a.advbase, a.advskew)) for t, a in got if isinstance(a, SendAdvert)]
    # After its patience it stops saying farewell but keeps advertising, as the least preferred.
    assert sent[-1][1] == (1, 255)
    assert all(t > t0 + DRAIN_PATIENCE for t, p in sent if p != FAREWELL)
    # A newcomer that preempts takes it (the draining host then yields).
    out = m.advert(t0 + 101, PEER, 1, 64)
    assert DelAddress() in out
    assert m.state is State.BACKUP


def test_drained_backup_does_not_take_a_farewell():
    # A last resort only: it waits for D (the farewell sender holds the address until a taker
    # answers, and keeps it when nobody does).
    m = make(advbase=1, advskew=0, preempt=False)
    m.start(0.0)
    m.drain(0.0)
    assert m.advert(1.0, PEER, *FAREWELL) == []
    assert m.state is State.BACKUP
    assert m.deadline == pytest.approx(1.0 + 3 + 255 / 256)


def test_draining_masters_break_the_tie_by_address():
    # Two draining masters hear each other's farewell: exactly one keeps the VIP.
    m = make(advbase=1, advskew=0, src=IPv4Address("10.99.0.9"))
    t0 = as_master(m)
    m.drain(t0)
    out = m.advert(t0 + 0.1, IPv4Address("10.99.0.10"), *FAREWELL)
    assert out == [SendGarp(), SendAdvert(*FAREWELL)]
    assert m.state is State.MASTER
    out = m.advert(t0 + 0.2, IPv4Address("10.99.1.1"), *FAREWELL)
    assert kinds(out) == [Transition, DelAddress]
    assert m.state is State.BACKUP


def test_two_drained_masters_meeting_settle_on_one():
    # Both became master on their own (say, a partition healed) and both drain.
    a, b = make(advbase=1, advskew=0, src=ME), make(advbase=1, advskew=64, src=PEER)
    ta, tb = as_master(a), as_master(b)
    a.drain(5.0)
    b.drain(5.0)
    wire = Wire([a, b], now=5.0, alive=[a, b], holds={id(a): True, id(b): True})
    wire.run_until(60.0)
    assert len(wire.masters()) == 1
    assert wire.holders() == wire.masters()
    assert ta < 5.0 and tb < 5.0


def test_undrain_restores_preemption():
    m = make(advbase=1, advskew=0)
    m.start(0.0)
    m.drain(0.0)
    assert m.advert(1.0, PEER, 1, 64) == []
    assert m.state is State.BACKUP
    assert m.undrain(2.0) == []
    assert m.deadline == pytest.approx(2.0 + 3.0)  # back to its own timeout
    out = m.advert(3.0, PEER, 1, 64)
    assert kinds(out) == [Transition, AddAddress, SendGarp, SendAdvert]
    assert out[-1].advskew == 0


def test_undrain_with_hold_down():
    m = make(advbase=1, advskew=0)
    m.start(0.0)
    m.drain(0.0)
    m.undrain(2.0, preempt_after=10.0)
    assert m.advert(3.0, PEER, 1, 64) == []
    assert AddAddress() in m.advert(10.0, PEER, 1, 64)


def test_drain_and_undrain_are_idempotent():
    m = make()
    t0 = as_master(m)
    assert len(m.drain(t0)) == 1
    assert m.drain(t0 + 0.1) == []
    assert m.undrain(t0 + 0.2) == []
    assert m.undrain(t0 + 0.3) == []
    assert m.state is State.MASTER


def test_undrained_master_advertises_at_its_own_pace_again():
    m = make(advbase=0, advskew=16)
    t0 = as_master(m)
    m.drain(t0)
    # Past the patience: now advertising 0/255 (~1 s apart, on its grid: "Phase").
    got = run_timers(m, t0 + 2.2)
    last = max(t for t, a in got if isinstance(a, SendAdvert))
    assert last > t0 + 1.0
    m.undrain(last + 0.01)
    # Backups of rank 1 wait 48/256 s: the next advert must come within our own interval.
    assert m.deadline is not None
    assert m.deadline <= last + 0.01 + 16 / 256 + 1e-9
    got = run_timers(m, last + 1.0)
    assert all(a.advskew == 16 for _, a in got if isinstance(a, SendAdvert))


# --- stop -------------------------------------------------------------------------------------


def test_stop_master_sends_farewell_then_releases():
    m = make(advbase=1, advskew=64)
    t0 = as_master(m)
    out = m.stop(t0 + 1)
    assert kinds(out)[:2] == [SendAdvert, DelAddress]
    assert out[0] == SendAdvert(*FAREWELL)
    assert not any(isinstance(a, SendGarp) for a in out)
    assert m.state is State.INIT
    assert m.deadline is None


def test_stop_backup_sends_nothing_but_releases():
    m = started(make())
    out = m.stop(1.0)
    assert DelAddress() in out
    assert not any(isinstance(a, SendAdvert | SendGarp | AddAddress) for a in out)
    assert m.state is State.INIT
    assert m.deadline is None
    assert m.advert(2.0, PEER, *FAREWELL) == []
    assert m.timer(100.0) == []


def test_stop_then_start_rejoins():
    m = make()
    t0 = as_master(m)
    m.stop(t0 + 1)
    out = m.start(t0 + 2)
    assert out[0] == DelAddress()
    assert m.state is State.BACKUP
    assert m.deadline == pytest.approx(t0 + 2 + 3.25)


# --- several machines on a fake wire ----------------------------------------------------------


@dataclass(eq=False)
class Wire:
    """Machines on one segment. Every SendAdvert reaches the other live machines at the same `now`.

    `alive` holds the machines that are fed (a crashed one is simply no longer fed). `holds`
    follows each machine's Add/DelAddress actions.
    """

    machines: list[CarpMachine]
    now: float = 0.0
    alive: list[CarpMachine] = field(default_factory=list)
    holds: dict[int, bool] = field(default_factory=dict)
    log: list[tuple[CarpMachine, Action]] = field(default_factory=list)
    took_at: dict[int, float] = field(default_factory=dict)  # id -> last AddAddress time

    def start_all(self, now: float) -> None:
        self.now = now
        for m in self.machines:
            self.start(m, now)

    def start(self, m: CarpMachine, now: float, **kw) -> None:
        self.now = now
        if m not in self.alive:
            self.alive.append(m)
        self.feed(m, m.start(now, **kw))

    def kill(self, m: CarpMachine) -> None:
        self.alive.remove(m)

    def replace(self, old: CarpMachine, new: CarpMachine) -> None:
        """A crashed host comes back as a fresh process (a new machine)."""
        if old in self.alive:
            self.alive.remove(old)
        self.machines[self.machines.index(old)] = new
        self.holds.pop(id(old), None)

    def feed(self, sender: CarpMachine, actions: list[Action]) -> None:
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
                        got = other.advert(self.now, m.cfg.src, a.advbase, a.advskew)
                        queue += [(other, b) for b in got]
        raise AssertionError("advert storm: the machines never stop answering each other")

    def run_until(self, until: float) -> None:
        for _ in range(1_000_000):
            due = [m.deadline for m in self.alive if m.deadline is not None]
            if not due or min(due) > until:
                self.now = until
                return
            self.now = min(due)
            for m in list(self.alive):
                if m in self.alive and m.deadline is not None and m.deadline <= self.now:
                    self.feed(m, m.timer(self.now))
            self.check()
        raise AssertionError("clock loop does not advance")

    def check(self) -> None:
        for m in self.alive:
            assert self.holds.get(id(m), False) == (m.state is State.MASTER)

    def masters(self) -> list[CarpMachine]:
        return [m for m in self.alive if m.state is State.MASTER]

    def holders(self) -> list[CarpMachine]:
        return [m for m in self.alive if self.holds.get(id(m))]


def three(advbase: int) -> tuple[CarpMachine, CarpMachine, CarpMachine]:
    skews = ladder(advbase, 3)
    srcs = [IPv4Address(f"10.99.0.{i}") for i in (1, 2, 3)]
    return tuple(
        make(
            advbase=advbase,
            advskew=skew,
            src=src,
        )
        for skew, src in zip(skews, srcs, strict=True)
    )


@pytest.mark.parametrize("advbase", [1, 0])
def test_plan_order_failover_and_return(advbase):
    owner, rank1, rank2 = three(advbase)
    if advbase == 0:
        assert (owner.cfg.advskew, rank1.cfg.advskew, rank2.cfg.advskew) == (16, 48, 112)
    wire = Wire([owner, rank1, rank2])
    wire.start_all(0.0)
    wire.run_until(20.0)
    # Everybody started together: the owner's D expires first and it wins.
    assert wire.masters() == [owner]
    assert wire.holders() == [owner]
    assert rank1.state is State.BACKUP and rank2.state is State.BACKUP

    # The owner dies (no farewell: just no longer fed).
    died = wire.now
    wire.kill(owner)
    wire.run_until(died + 40.0)
    assert wire.masters() == [rank1]
    assert rank2.state is State.BACKUP
    failover = wire.took_at[id(rank1)] - died
    assert 0 < failover <= rank1.down_timeout
    if advbase == 0:
        assert failover < 0.3

    # The owner comes back (a fresh process) and preempts; rank1 yields.
    back = wire.now
    new_owner = make(
        advbase=advbase,
        advskew=owner.cfg.advskew,
        src=owner.cfg.src,
    )
    wire.replace(owner, new_owner)
    wire.start(new_owner, back)
    wire.run_until(back + 40.0)
    assert wire.masters() == [new_owner]
    assert wire.holders() == [new_owner]
    assert rank1.state is State.BACKUP and rank2.state is State.BACKUP
    # It took over within rank1's interval (it preempts on rank1's next advert).
    assert wire.took_at[id(new_owner)] - back <= rank1.interval + 1e-9


@pytest.mark.parametrize("advbase", [1, 0])
def test_plan_order_rank2_after_rank1_dies_too(advbase):
    owner, rank1, rank2 = three(advbase)
    wire = Wire([owner, rank1, rank2])
    wire.start_all(0.0)
    wire.run_until(10.0)
    wire.kill(owner)
    wire.run_until(20.0)
    assert wire.masters() == [rank1]
    wire.kill(rank1)
    died = wire.now
    wire.run_until(40.0)
    assert wire.masters() == [rank2]
    assert wire.took_at[id(rank2)] - died <= rank2.down_timeout


def test_plan_order_graceful_stop_hands_over_at_once():
    owner, rank1, rank2 = three(1)
    wire = Wire([owner, rank1, rank2])
    wire.start_all(0.0)
    wire.run_until(10.0)
    assert wire.masters() == [owner]
    wire.feed(owner, owner.stop(10.0))
    wire.kill(owner)
    wire.run_until(10.0 + 64 / 1024)
    assert wire.masters() == [rank1]  # on the farewell, after rank 1's advskew/1024 s
    assert wire.took_at[id(rank1)] == pytest.approx(10.0 + 64 / 1024)
    assert rank2.state is State.BACKUP  # it heard rank 1 before its own, later, turn
    wire.run_until(30.0)
    assert wire.masters() == [rank1]
    # The owner restarts (the same process) and preempts again.
    wire.start(owner, 30.0)
    wire.run_until(40.0)
    assert wire.masters() == [owner]


def test_plan_order_hold_down_on_the_wire():
    owner, rank1, rank2 = three(1)
    wire = Wire([owner, rank1, rank2])
    wire.start_all(0.0)
    wire.run_until(10.0)
    wire.feed(owner, owner.stop(10.0))
    wire.kill(owner)
    wire.run_until(20.0)
    wire.start(owner, 20.0, preempt_after=50.0)
    wire.run_until(49.0)
    assert wire.masters() == [rank1]
    wire.run_until(60.0)
    assert wire.masters() == [owner]


@pytest.mark.parametrize("advbase", [1, 0])
def test_plan_order_drain_owner(advbase):
    owner, rank1, rank2 = three(advbase)
    wire = Wire([owner, rank1, rank2])
    wire.start_all(0.0)
    wire.run_until(10.0)
    wire.feed(owner, owner.drain(10.0))
    wire.run_until(30.0)
    assert wire.masters() == [rank1]
    assert wire.holders() == [rank1]
    wire.feed(owner, owner.undrain(30.0))
    wire.run_until(40.0)
    assert wire.masters() == [owner]


def test_two_drained_hosts_alone_settle_on_one():
    # Both hosts drained, nobody else alive: one of them must keep the VIP (last resort), without
    # handing it back and forth.
    a, b = make(advbase=1, advskew=0, src=ME), make(advbase=1, advskew=64, src=PEER)
    wire = Wire([a, b])
    wire.start_all(0.0)
    wire.run_until(10.0)
    assert wire.masters() == [a]
    wire.feed(b, b.drain(10.0))
    wire.feed(a, a.drain(10.0))
    wire.run_until(60.0)
    assert len(wire.masters()) == 1
    assert len(wire.holders()) == 1
    n = len(wire.log)
    wire.run_until(120.0)
    assert not any(isinstance(x, Transition) for _, x in wire.log[n:])


def test_two_drained_backups_alone_settle_on_one():
    a, b = make(advbase=1, advskew=0, src=ME), make(advbase=1, advskew=64, src=PEER)
    a.drain(0.0)
    b.drain(0.0)
    wire = Wire([a, b])
    wire.start_all(0.0)
    wire.run_until(60.0)
    assert len(wire.masters()) == 1
    n = len(wire.log)
    wire.run_until(120.0)
    assert not any(isinstance(x, Transition) for _, x in wire.log[n:])


# --- properties -------------------------------------------------------------------------------

SRCS = [PEER, NATIVE, IPv4Address("10.99.1.1"), IPv4Address("10.99.0.10")]

events = st.one_of(
    st.tuples(
        st.just("advert"),
        st.floats(0, 3),
        st.sampled_from(SRCS),
        st.sampled_from([0, 1, 2, 3, 255]),
        st.integers(0, 255),
        st.integers(0, 20),
    ),
    st.tuples(st.just("timer"), st.floats(0, 5)),
    st.tuples(st.just("link"), st.floats(0, 3), st.booleans()),
    st.tuples(st.just("drain"), st.floats(0, 3)),
    st.tuples(st.just("undrain"), st.floats(0, 3)),
    st.tuples(st.just("stop"), st.floats(0, 3)),
    st.tuples(st.just("start"), st.floats(0, 3), st.floats(0, 10)),
)

configs = st.builds(
    lambda advbase, advskew, preempt, garp, dead: make(
        advbase=advbase,
        advskew=advskew if advbase else max(advskew, 16),
        preempt=preempt,
        garp_refresh=garp,
        dead_ratio=dead,
    ),
    st.sampled_from([0, 1, 2]),
    st.integers(0, 255),
    st.booleans(),
    st.sampled_from([0.0, 0.7]),
    st.integers(1, 4),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=configs, evs=st.lists(events, max_size=40), start_first=st.booleans())
def test_random_event_sequences_keep_invariants(m, evs, start_first):
    now = 0.0
    held = False

    def apply(actions: list[Action], t: float, ev: str) -> None:
        nonlocal held
        for a in actions:
            assert isinstance(a, Action)
            if isinstance(a, AddAddress):
                held = True
            elif isinstance(a, DelAddress):
                held = False
        assert isinstance(m.state, State)
        assert held == (m.state is State.MASTER), (ev, actions)
        d = m.deadline
        if ev == "timer":
            assert d is None or d > t, (ev, d, t)
        else:
            assert d is None or d >= t, (ev, d, t)
        if m.state is State.BACKUP and m.link_up:
            assert d is not None
        if m.state is State.INIT:
            assert d is None
        if m.state is State.BACKUP:
            assert not any(isinstance(a, SendAdvert | SendGarp) for a in actions) or ev == "advert"

    def catch_up(t: float) -> None:
        # The shell's contract: timer(now) no later than each deadline.
        for _ in range(100_000):
            d = m.deadline
            if d is None or d > t:
                return
            apply(m.timer(d), d, "timer")
        raise AssertionError("timer loop does not advance")

    if start_first:
        apply(m.start(now), now, "start")
    for ev in evs:
        kind, dt = ev[0], ev[1]
        t = now + dt
        if kind == "timer":
            # Possibly late: timer(t) must still leave nothing due.
            apply(m.timer(t), t, "timer")
            now = t
            continue
        catch_up(t)
        now = t
        if kind == "advert":
            _, _, src, advbase, advskew, _counter = ev
            out = m.advert(now, src, advbase, advskew)
        elif kind == "link":
            out = m.link(ev[2], now)
        elif kind == "drain":
            out = m.drain(now)
        elif kind == "undrain":
            out = m.undrain(now)
        elif kind == "stop":
            out = m.stop(now)
        else:
            out = m.start(now, preempt_after=now + ev[2])
        apply(out, now, kind)


wire_ops = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["kill", "start", "stop", "drain", "undrain"]), st.integers(0, 2)
        ),
        st.tuples(st.just("link"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("wait"), st.floats(0, 5)),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(advbase=st.sampled_from([1, 0]), ops=wire_ops)
def test_random_cluster_histories_settle_on_the_plan(advbase, ops):
    machines = three(advbase)
    wire = Wire(list(machines))
    wire.start_all(0.0)
    wire.run_until(5.0)
    for op in ops:
        kind = op[0]
        if kind == "wait":
            wire.run_until(wire.now + op[1])
            continue
        m = machines[op[1]]
        live = m in wire.alive
        if kind == "kill" and live:
            wire.kill(m)
        elif kind == "start" and not live:
            wire.start(m, wire.now)
        elif kind == "stop" and live:
            wire.feed(m, m.stop(wire.now))
            wire.kill(m)
        elif kind == "drain" and live:
            wire.feed(m, m.drain(wire.now))
        elif kind == "undrain" and live:
            wire.feed(m, m.undrain(wire.now))
        elif kind == "link" and live:
            wire.feed(m, m.link(op[2], wire.now))
        wire.check()
    wire.run_until(wire.now + 20.0)
    wire.check()
    candidates = [m for m in wire.alive if m.link_up]
    masters = wire.masters()
    assert wire.holders() == masters
    if not candidates:
        assert masters == []
        return
    assert len(masters) == 1
    willing = [m for m in candidates if not m.drained]
    if willing:
        # The plan's order among the hosts that are up, undrained and connected.
        assert masters[0] is min(willing, key=lambda m: m.cfg.advskew)


def test_an_address_lost_while_master_is_put_back() -> None:
    m = started(make(advbase=1, advskew=0))
    m.timer(10.0)
    assert m.state is State.MASTER
    assert m.address_gone(11.0) == [AddAddress(), SendGarp()]
    b = started(make(advbase=1, advskew=64))
    assert b.address_gone(1.0) == []


# --- patience: sub-second timing keeps the hold-down and the plan's order ---------------------


def test_advbase0_held_down_owner_waits_out_a_slower_master():
    # The owner (0/16, D = 62 ms) behind its first backup (0/48, every 187 ms), held down for 3 s:
    # it used to time out between two adverts (and take the farewell path) and take the VIP back.
    m = started(make(advbase=0, advskew=16), 0.0, preempt_after=3.0)
    assert m.deadline == pytest.approx((255 + 16) / 256)  # heard nobody yet: no timeout at 62 ms
    t = 0.1
    while t + 0.1875 < 3.0:
        assert m.advert(t, PEER, 0, 48) == []
        assert m.deadline == pytest.approx(t + (48 + 16) / 256)
        assert m.timer(t + 0.187) == []  # the next advert is due: no takeover in between
        t += 0.1875
    assert m.state is State.BACKUP
    # The hold-down ends before the next advert: it preempts then, as with advbase >= 1.
    assert m.advert(t, PEER, 0, 48) == []
    assert m.deadline == pytest.approx(3.0)
    out = m.timer(3.0)
    assert (
        m.state is State.MASTER
        and Transition(State.BACKUP, State.MASTER, f"preempting {PEER} (0/48) after the hold-down")
        in out
    )


def test_advbase0_link_up_and_undrain_wait_for_the_slowest_master():
    m = started(make(advbase=0, advskew=16), 0.0)
    m.link(False, 1.0)
    m.link(True, 2.0, preempt_after=5.0)
    assert m.deadline == pytest.approx(2.0 + (255 + 16) / 256)
    m.drain(3.0)
    m.undrain(4.0, preempt_after=9.0)
    assert m.deadline == pytest.approx(4.0 + (255 + 16) / 256)


def test_advbase0_a_slower_masters_advert_is_no_farewell_but_a_farewell_is():
    m = started(make(advbase=0, advskew=16), 0.0, preempt_after=10.0)
    m.advert(1.0, PEER, 0, 240)  # 0.94 s > D = 62 ms: a live master all the same
    m.timer(1.0 + 16 / 1024)
    assert m.state is State.BACKUP
    m.advert(1.5, PEER, *FAREWELL)
    m.timer(1.5 + 16 / 1024)
    assert m.state is State.MASTER


def test_advbase1_patience_changes_nothing():
    # D = 3 + skew/256 exceeds every live master's interval: ucarp's timers exactly.
    m = started(make(advbase=1, advskew=64, preempt=False), 0.0)
    assert m.deadline == pytest.approx(3 + 64 / 256)
    m.advert(1.0, PEER, 1, 255)  # the slowest live master (a drained one)
    assert m.deadline == pytest.approx(1.0 + 3 + 64 / 256)


def test_advbase0_held_down_owner_still_comes_before_the_second_backup():
    # The owner is back but held down; rank1 serves the VIP; rank1 dies. The owner (rank 0) must
    # take it, not rank2: it waits rank1's interval + 62 ms (250 ms), rank2 its D (437 ms).
    owner, rank1, rank2 = three(0)
    wire = Wire([owner, rank1, rank2])
    wire.start(rank1, 0.0)
    wire.start(rank2, 0.0)
    wire.run_until(5.0)
    assert wire.masters() == [rank1]
    wire.start(owner, 5.0, preempt_after=100.0)
    wire.run_until(10.0)
    assert wire.masters() == [rank1]  # held down: no takeover by timeout either
    wire.kill(rank1)
    died = wire.now
    wire.run_until(20.0)
    assert wire.masters() == [owner]
    assert wire.took_at[id(owner)] - died <= rank1.interval + owner.advskew / 256 + 1e-9
    assert rank2.transitions == 1  # INIT -> BACKUP only


# --- demote (SIGUSR2) -------------------------------------------------------------------------


def test_demoted_master_hands_over_make_before_break_then_takes_part_again():
    m = make(advbase=1, advskew=0)
    t0 = as_master(m)
    out = m.demote(t0 + 1, until=t0 + 4, preempt_after=t0 + 7)
    assert adverts(out) == [SendAdvert(*FAREWELL, adverts(out)[0].counter)]
    assert DelAddress() not in out and m.state is State.MASTER  # keeps it until a taker answers
    out = m.advert(t0 + 1.1, PEER, 1, 64)  # the first backup answers as master
    assert DelAddress() in out and m.state is State.BACKUP
    assert not adverts(out)  # no last advert at 255: it would make every backup preempt
    # Standing aside: no preemption of the less preferred master, no farewell taken.
    assert m.advert(t0 + 2, PEER, 1, 64) == []
    assert m.advert(t0 + 3, PEER, *FAREWELL) == []
    assert m.timer(t0 + 3.5) == [] and m.state is State.BACKUP
    # The demote ends: its own skew again, but preempting only after the hold-down.
    m.timer(t0 + 4)
    assert m.demoted_until is None and m.advskew == 0
    assert m.advert(t0 + 5, PEER, 1, 64) == []
    out = m.advert(t0 + 7, PEER, 1, 64)
    assert m.state is State.MASTER and AddAddress() in out


def test_demoted_backup_stays_a_last_resort():
    m = started(make(advbase=1, advskew=0), 0.0)
    m.demote(1.0, until=10.0)
    assert m.advskew == FAREWELL_ADVSKEW
    assert m.advert(1.5, PEER, 1, 64) == []  # would preempt, but stands aside
    assert m.state is State.BACKUP
    # Nobody is left: it still takes the VIP, on its (last resort) master-down timer.
    m.timer(1.5 + 3 + 255 / 256)
    assert m.state is State.MASTER


def test_a_demote_ends_without_undraining_a_drained_vip():
    m = make(advbase=1, advskew=0)
    t0 = as_master(m)
    m.drain(t0 + 1)
    m.advert(t0 + 1.1, PEER, 1, 64)
    m.demote(t0 + 2, until=t0 + 5)
    m.timer(t0 + 5)
    assert m.drained and m.demoted_until is None and m.advskew == FAREWELL_ADVSKEW
    assert m.advert(t0 + 10, PEER, 1, 64) == []  # still no preemption
    # ... and a drain during a demote outlasts it as well.
    m.undrain(t0 + 11)
    m.demote(t0 + 12, until=t0 + 15)
    m.drain(t0 + 13)
    m.timer(t0 + 15)
    assert m.drained and m.advskew == FAREWELL_ADVSKEW


def test_undrain_during_a_demote_waits_for_the_demote():
    m = started(make(advbase=1, advskew=0), 0.0)
    m.drain(0.5)
    m.demote(1.0, until=4.0, preempt_after=4.0)
    m.undrain(2.0)
    assert m.aside and m.advert(2.5, PEER, 1, 64) == []
    m.timer(4.0)
    assert not m.aside
    m.advert(4.5, PEER, 1, 64)
    assert m.state is State.MASTER


@pytest.mark.parametrize("advbase", [1, 0])
def test_demoted_owner_goes_to_the_first_backup_and_comes_back(advbase):
    owner, rank1, rank2 = three(advbase)
    wire = Wire([owner, rank1, rank2])
    wire.start_all(0.0)
    wire.run_until(10.0)
    assert wire.masters() == [owner]
    t = wire.now
    wire.feed(owner, owner.demote(t, until=t + 3, preempt_after=t + 5))
    wire.run_until(t + 4.9)
    assert wire.masters() == [rank1] and wire.holders() == [rank1]
    assert rank2.transitions == 1  # the second backup never took it
    wire.run_until(t + 5 + 3)
    assert wire.masters() == [owner] and wire.holders() == [owner]
    assert wire.took_at[id(owner)] >= t + 5


def test_own_address_gone_forces_backup_even_with_ignore_ifstate():
    """Without its own address on the advert link no advert leaves: peers take over after D,
    so a master that kept the VIP held it on two hosts."""
    m = make(advbase=1, advskew=64, ignore_ifstate=True)
    t0 = as_master(m)
    out = m.source(False, t0 + 1)
    assert kinds(out) == [Transition, DelAddress]  # no farewell: it cannot be sent
    assert m.state is State.BACKUP and m.deadline is None
    assert m.advert(t0 + 2, PEER, 1, 128) == []
    assert m.timer(t0 + 100) == []
    out = m.source(True, t0 + 101, preempt_after=t0 + 105)
    assert out == [] and m.state is State.BACKUP
    assert m.deadline == pytest.approx(t0 + 101 + 3.25)
    assert m.preempt_after == t0 + 105


def _snapshot(m: CarpMachine) -> tuple[object, ...]:
    return tuple(getattr(m, s, None) for s in CarpMachine.__slots__)


fast_path_events = st.one_of(
    events,
    st.tuples(st.just("demote"), st.floats(0, 3), st.floats(0, 4)),
    st.tuples(st.just("sicken"), st.floats(0, 3)),
    st.tuples(st.just("heal"), st.floats(0, 3)),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=configs, evs=st.lists(fast_path_events, max_size=40))
def test_periodic_advert_is_timer_when_it_answers_and_changes_nothing_when_not(m, evs):
    """The node asks `periodic_advert` before `timer` at every deadline (carp.node): where it
    answers, it must return what `timer` returns and leave the machine as `timer` does; where
    it does not, the machine must be as before, for `timer` to decide."""
    now = 0.0
    m.start(now)
    answered = declined = 0

    def at_deadlines(until: float) -> None:
        nonlocal answered, declined
        for _ in range(10_000):
            d = m.deadline
            if d is None or d > until:
                return
            # Late as well as on time: the shell's timer may run after the deadline.
            for t in (d, d + 0.3):
                twin = copy.deepcopy(m)
                before = _snapshot(m)
                a = m.periodic_advert(t)
                if a is None:
                    declined += 1
                    assert _snapshot(m) == before
                    continue
                answered += 1
                assert twin.timer(t) == [a]
                assert _snapshot(m) == _snapshot(twin)
                break
            else:
                m.timer(d + 0.3)
        raise AssertionError("timer loop does not advance")

    for ev in evs:
        kind, t = ev[0], now + ev[1]
        at_deadlines(t)
        now = t
        if kind == "timer":
            continue
        if kind == "advert":
            m.advert(now, ev[2], ev[3], ev[4])
        elif kind == "demote":
            m.demote(now, now + ev[2])
        elif kind in ("drain", "undrain", "stop", "sicken", "heal"):
            getattr(m, kind)(now)
        elif kind == "link":
            m.link(ev[2], now)
        else:
            m.start(now, preempt_after=now + ev[2])
    at_deadlines(now + 10)
