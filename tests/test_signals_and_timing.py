"""Signals a user may send to `iprotate run`, and sub-second timing (advbase 0) keeping the plan's
order and the hold-down: each against real daemons in namespaces."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from labtools import settled, takeover_bound, wait_for
from test_operations import lost, pings, transitions

from iprotate.engine.signals import signal_name
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


def vips_on(lab: Lab, host: str) -> list[str]:
    return [ip for ip, hs in lab.holders().items() if host in hs]


# Every signal a user may send whose default would kill or freeze the daemon, and a few whose
# default is to ignore them: the daemon logs or ignores each and keeps its VIPs.
HARMLESS = [
    signal.SIGHUP, signal.SIGUSR1, signal.SIGPIPE, signal.SIGALRM, signal.SIGVTALRM,
    signal.SIGPROF, signal.SIGIO, signal.SIGPWR, signal.SIGXCPU, signal.SIGXFSZ, signal.SIGTRAP,
    signal.SIGSYS, signal.SIGSTKFLT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
    signal.SIGRTMIN, signal.SIGRTMIN + 5, signal.SIGRTMAX, signal.SIGURG, signal.SIGWINCH,
    signal.SIGCONT, signal.SIGCHLD,
]  # fmt: skip


def test_every_signal_a_user_may_send(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=4)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    (proc,) = lab.procs["alpha"]
    for s in HARMLESS:
        os.kill(proc.pid, s)
        time.sleep(0.1)
        assert proc.poll() is None, f"{signal_name(s)} killed it"
    time.sleep(0.5)
    assert settled(lab)(), lab.holders()
    log = (lab.workdir / "alpha.log").read_text()
    assert "SIGALRM ignored" in log and "SIGRTMIN+5 ignored" in log
    # SIGQUIT is a clean stop, as SIGTERM: every VIP handed over, exit 0.
    os.kill(proc.pid, signal.SIGQUIT)
    assert proc.wait(timeout=5.0) == 0
    lab.procs.pop("alpha")
    wait_for(settled(lab, {"alpha"}), 2.0)
    assert vips_on(lab, "alpha") == []


@pytest.mark.parametrize("advbase", [1, 0])
def test_sigusr2_demotes_hands_over_and_comes_back(
    make_lab: Callable[..., Lab], advbase: int
) -> None:
    lab = make_lab(
        hosts=3, vips=6, advbase=advbase, run_args=("--hold-down", "1", "--stagger", "0")
    )
    lab.start_all()
    wait_for(settled(lab), 8.0)
    mine = [str(v.ip) for v in lab.plan.vips if v.owner == "alpha"]
    ping = pings(lab, mine, 8.0)
    time.sleep(0.5)
    (proc,) = lab.procs["alpha"]
    t_sig = time.time()
    os.kill(proc.pid, signal.SIGUSR2)
    # Make-before-break to each VIP's first backup; alpha keeps none.
    wait_for(lambda: settled(lab, {"alpha"})() and not vips_on(lab, "alpha"), 2.0)
    log = (lab.workdir / "alpha.log").read_text()
    assert f"SIGUSR2: demoting {len(mine)} VIPs for 3 s" in log
    # It stays out for the demote (3 s) and the hold-down (1 s), then takes them back, alive.
    time.sleep(3.0)
    assert proc.poll() is None and not vips_on(lab, "alpha")
    wait_for(settled(lab), 1.0 + 4.0)
    back = [t for t, _ in transitions(lab, "alpha") if t > t_sig]
    assert len(back) == len(mine) and min(back) >= t_sig + 3.8
    assert lost(ping) == dict.fromkeys(mine, 0)
    assert proc.poll() is None
