"""Authenticated senders and priorities in the counter (iprotate.carp.native_auth): unit and
property tests of the scenarios the fault model names, with a fake wall clock."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given
from hypothesis import strategies as st

from iprotate.carp.native_auth import (
    MAX_SEQ,
    NativeAuth,
    Verdict,
    derive_key,
    split,
    tag,
)

PW = b"lab-secret"
GROUP = IPv4Address("224.0.0.18")
VIP = IPv4Address("203.0.113.10")
K = (GROUP, 10)
ALPHA, BRAVO, CHARLIE = (IPv4Address(f"198.51.100.{i}") for i in (1, 2, 3))
T0 = 1_800_000_000.0  # wall-clock seconds


def host(addr: IPv4Address) -> NativeAuth:
    return NativeAuth.for_password(PW, addr)


def test_a_sealed_counter_passes_and_carries_a_growing_seq() -> None:
    a, b = host(ALPHA), host(BRAVO)
    c1 = a.counter(K, VIP, 1, 0, T0)
    c2 = a.counter(K, VIP, 1, 0, T0)  # twice within one second: seq still grows
    assert split(c1)[0] == int(T0) and split(c2)[0] == int(T0) + 1
    assert b.check(ALPHA, K, VIP, 1, 0, c1) is Verdict.OK
    assert b.check(ALPHA, K, VIP, 1, 0, c2) is Verdict.OK


@given(
    field=st.sampled_from(["src", "group", "vhid", "vip", "advbase", "advskew"]),
    delta=st.integers(1, 254),
)
def test_any_rewritten_field_is_forged(field: str, delta: int) -> None:
    a, b = host(ALPHA), host(BRAVO)
    c = a.counter(K, VIP, 1, 64, T0)
    args = {"src": ALPHA, "group": GROUP, "vhid": 10, "vip": VIP, "advbase": 1, "advskew": 64}
    v = args[field]
    if isinstance(v, IPv4Address):
        args[field] = IPv4Address((int(v) + delta) % (1 << 32))
    else:
        args[field] = (v + delta) % 256
    got = b.check(
        args["src"],  # type: ignore[arg-type]
        (args["group"], args["vhid"]),  # type: ignore[arg-type]
        args["vip"],  # type: ignore[arg-type]
        args["advbase"],  # type: ignore[arg-type]
        args["advskew"],  # type: ignore[arg-type]
        c,
    )
    assert got is Verdict.FORGED


@given(st.integers(0, (1 << 64) - 1))
def test_a_counter_made_up_without_the_password_is_forged(counter: int) -> None:
    b = host(BRAVO)
    a = host(ALPHA)
    real = a.counter(K, VIP, 1, 0, T0)
    if counter != real:
        assert b.check(ALPHA, K, VIP, 1, 0, counter) is not Verdict.OK or (
            split(counter)[1] == split(real)[1]  # a lucky 32-bit tag (2**-32)
        )


def test_another_password_never_matches() -> None:
    a = NativeAuth.for_password(b"other", ALPHA)
    assert host(BRAVO).check(ALPHA, K, VIP, 1, 0, a.counter(K, VIP, 1, 0, T0)) is Verdict.FORGED


def test_replay_of_the_same_advert_is_dropped() -> None:
    a, b = host(ALPHA), host(BRAVO)
    c = a.counter(K, VIP, 1, 0, T0)
    assert b.check(ALPHA, K, VIP, 1, 0, c) is Verdict.OK
    assert b.check(ALPHA, K, VIP, 1, 0, c) is Verdict.REPLAY


def test_charlies_advert_replayed_under_alphas_address_is_forged() -> None:
    """The issue's case: charlie's advert captured while it held alpha's VIP, replayed once with
    alpha's source and alpha's priority: it must not pass (and so cannot lock alpha out)."""
    charlie, bravo = host(CHARLIE), host(BRAVO)
    captured = charlie.counter(K, VIP, 1, 64, T0 + 10_000_000)  # months of adverts ahead
    assert bravo.check(ALPHA, K, VIP, 1, 0, captured) is Verdict.FORGED
    alpha = host(ALPHA)
    assert bravo.check(ALPHA, K, VIP, 1, 0, alpha.counter(K, VIP, 1, 0, T0)) is Verdict.OK


def test_a_dead_masters_adverts_replayed_are_stale_even_for_a_receiver_that_never_heard_it() -> (
    None
):
    alpha, bravo = host(ALPHA), host(BRAVO)
    old = [alpha.counter(K, VIP, 1, 0, T0 + i) for i in range(3)]
    for c in old:
        assert bravo.check(ALPHA, K, VIP, 1, 0, c) is Verdict.OK
    # alpha dies; bravo takes over and advertises above everything heard.
    c_b = bravo.counter(K, VIP, 1, 64, T0 + 5)
    assert split(c_b)[0] > split(old[-1])[0]
    for c in old:
        assert bravo.check(ALPHA, K, VIP, 1, 0, c) is Verdict.REPLAY
    # charlie starts now: it has never heard alpha; it hears bravo's advert first.
    charlie = host(CHARLIE)
    assert charlie.check(BRAVO, K, VIP, 1, 64, c_b) is Verdict.OK
    for c in old:
        assert charlie.check(ALPHA, K, VIP, 1, 0, c) is Verdict.STALE


def test_restart_with_a_clock_an_hour_behind_is_heard_again() -> None:
    alpha, bravo = host(ALPHA), host(BRAVO)
    for i in range(5):
        assert bravo.check(ALPHA, K, VIP, 1, 0, alpha.counter(K, VIP, 1, 0, T0 + i)) is Verdict.OK
    # alpha stops; bravo took its VIP and advertises.
    c_b = bravo.counter(K, VIP, 1, 64, T0 + 10)
    # alpha comes back with a new process and a clock one hour behind: as a backup it hears bravo
    # before it may advertise, and its first advert is above everything it sent before.
    alpha2 = host(ALPHA)
    assert alpha2.check(BRAVO, K, VIP, 1, 64, c_b) is Verdict.OK
    c_a = alpha2.counter(K, VIP, 1, 0, T0 + 10 - 3600)
    assert bravo.check(ALPHA, K, VIP, 1, 0, c_a) is Verdict.OK


def test_a_restarted_master_nobody_replaced_is_heard_once_its_backup_advertises() -> None:
    """Restarted within D: nobody took its VIP, so it heard no one. Its backup drops its adverts
    (below the old mark) until its own timeout, then advertises; the restarted host hears that
    and its next advert is above both."""
    alpha, bravo = host(ALPHA), host(BRAVO)
    for i in range(5):
        bravo.check(ALPHA, K, VIP, 1, 0, alpha.counter(K, VIP, 1, 0, T0 + 100 + i))
    alpha2 = host(ALPHA)
    first = alpha2.counter(K, VIP, 1, 0, T0)  # clock behind, heard nothing
    assert bravo.check(ALPHA, K, VIP, 1, 0, first) is Verdict.REPLAY
    c_b = bravo.counter(K, VIP, 1, 64, T0 + 1)  # bravo's timeout: it takes over
    assert alpha2.check(BRAVO, K, VIP, 1, 64, c_b) is Verdict.OK
    assert bravo.check(ALPHA, K, VIP, 1, 0, alpha2.counter(K, VIP, 1, 0, T0 + 1)) is Verdict.OK


def test_two_masters_after_a_partition_hear_each_other_within_one_advert() -> None:
    x, y = host(ALPHA), host(BRAVO)
    cx = x.counter(K, VIP, 1, 0, T0)
    cy = y.counter(K, VIP, 1, 64, T0 + 500)  # y's clock ahead
    assert x.check(BRAVO, K, VIP, 1, 64, cy) is Verdict.OK
    # y may drop x's older advert, but x's next one is above y's.
    y.check(ALPHA, K, VIP, 1, 0, cx)
    assert y.check(ALPHA, K, VIP, 1, 0, x.counter(K, VIP, 1, 0, T0 + 1)) is Verdict.OK


def test_seq_saturates_instead_of_wrapping() -> None:
    a = host(ALPHA)
    a.marks_of(K).sent = MAX_SEQ
    assert split(a.counter(K, VIP, 1, 0, T0))[0] == MAX_SEQ


def test_forget_keeps_only_planned_vips() -> None:
    a, b = host(ALPHA), host(BRAVO)
    other = (GROUP, 11)
    b.check(ALPHA, K, VIP, 1, 0, a.counter(K, VIP, 1, 0, T0))
    b.counter(other, IPv4Address("203.0.113.11"), 1, 0, T0)
    b.forget({K})
    assert set(b.sent) == set() and set(b.top) == {K} and set(b.heard) == {(ALPHA, K)}


def _lucky(src: IPv4Address, seq: int, advskew: int = 0) -> int:
    """What an attacker's one-in-2**32 tag guess looks like: a valid counter for `seq`."""
    return seq << 32 | tag(derive_key(PW), src, GROUP, K[1], VIP, 1, advskew, seq)


def test_one_advert_with_a_seq_near_the_top_cannot_lock_the_vip_for_good() -> None:
    """A seq near 2**32 accepted once (a lucky forged tag, or a clock decades ahead) lifted
    every mark of the VIP to the top, where seq saturates: from then on each advert of every
    host equalled its last and was dropped as a replay, every host master for good."""
    alpha, bravo = host(ALPHA), host(BRAVO)
    for i in range(3):
        c = alpha.counter(K, VIP, 1, 0, T0 + i)
        assert bravo.check(ALPHA, K, VIP, 1, 0, c, T0 + i) is Verdict.OK
    assert bravo.check(ALPHA, K, VIP, 1, 0, _lucky(ALPHA, MAX_SEQ), T0 + 3) is Verdict.FUTURE
    assert bravo.check(ALPHA, K, VIP, 1, 0, alpha.counter(K, VIP, 1, 0, T0 + 3), T0 + 3) is (
        Verdict.OK
    )
    # A clock eight years ahead is still heard.
    ahead = T0 + 8 * 365 * 86400
    assert bravo.check(CHARLIE, K, VIP, 1, 0, _lucky(CHARLIE, int(ahead)), T0 + 4) is Verdict.OK
    # A host that knows no seq of the VIP (just started) hears the master whatever its seq.
    assert host(ALPHA).check(BRAVO, K, VIP, 1, 64, _lucky(BRAVO, MAX_SEQ - 5, 64), T0) is (
        Verdict.OK
    )


@given(
    sent=st.none() | st.integers(0, MAX_SEQ),
    top=st.none() | st.integers(0, MAX_SEQ),
    wall=st.floats(-10.0, 2.0**33),
)
def test_a_sealed_seq_is_above_every_mark_and_the_wall_clock(
    sent: int | None, top: int | None, wall: float
) -> None:
    a = host(ALPHA)
    marks = a.marks_of(K)
    marks.sent, marks.top = sent, top
    seq = split(a.counter(K, VIP, 1, 0, wall))[0]
    assert seq == min(max((sent or 0) + 1, (top or 0) + 1, int(wall)), MAX_SEQ)
    assert marks.sent == seq
