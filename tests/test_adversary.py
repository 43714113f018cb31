"""Attacks found by trying to break the fault-proof engine, each the shortest reproduction on the
wire (or in the lab) of something that went wrong before its fix."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from labtools import settled, status_counters, takeover_bound, wait_for
from test_security import address, capture, holders_of, rewrite, send

from iprotate.lab.lab import Lab

pytestmark = pytest.mark.netns


def test_an_advert_rewritten_under_a_ucarp_host_outside_the_vips_order_is_dropped(
    make_lab: Callable[..., Lab],
) -> None:
    """ucarp hosts' adverts carry no tag, so anyone can send an advert under a ucarp host's
    address. For the VIPs that host serves that is CARP's own limit (README, Security); but a
    VIP whose order does not name that host was open too: alpha's own advert, rewritten to a
    shorter interval and sent from charlie (ucarp, no part in the VIP), made alpha yield and
    kept bravo waiting, so the VIP stayed on no host for as long as it was sent."""
    lab = make_lab(hosts=3, vips=6, legacy=1, extra_cluster={"backups": 1})
    v = next(v for v in lab.plan.vips if v.order == ("alpha", "bravo"))
    lab.start("alpha")
    lab.start("bravo")
    others = {str(u.ip) for u in lab.plan.vips if "charlie" in u.order}

    def v_on(hosts: list[str]) -> Callable[[], bool]:
        return lambda: holders_of(lab, v) == hosts

    wait_for(v_on(["alpha"]), 8.0)
    (p,) = capture(lab, v, address(lab, "alpha"), 1.5)[-1:]
    forged = rewrite(p, src=address(lab, "charlie"), advbase=0, advskew=1)
    t0 = time.monotonic()
    while time.monotonic() - t0 < takeover_bound(lab, "alpha") + 1.0:
        send(lab, v, *[forged] * 4)
        time.sleep(0.1)
    assert holders_of(lab, v) == ["alpha"], lab.holders()
    assert status_counters(lab, "alpha").get("drop_not_in_order", 0) >= 1
    assert others  # charlie's own VIPs exist: the lab really is a mixed one


# Imported by every `iprotate run` of the test below (its directory first on PYTHONPATH): the
# engine's imports take a second longer, as on a loaded machine, so signals surely arrive during
# the start-up.
SLOW_IMPORTS = """
import sys, time


class SlowImports:
    def find_spec(self, name, path=None, target=None):
        if name == "pyroute2":
            time.sleep(1.0)
        return None


sys.meta_path.insert(0, SlowImports())
"""


def _caught(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (/proc's SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = int(status.split("SigCgt:", 1)[1].split()[0], 16)
    return bool(mask >> (signum - 1) & 1)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_during_start_up_is_obeyed_once_running(
    make_lab: Callable[..., Lab], tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGHUP or SIGUSR1 during the start-up (imports, the plan, the cleanup) kept its default
    action and killed the daemon; SIGINT ended it with a KeyboardInterrupt traceback. Now a stop
    signal stops it cleanly as soon as it runs and the others are done once it runs."""
    lab = make_lab(hosts=2, vips=2)
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_IMPORTS)
    path = os.pathsep.join(p for p in (str(slow), os.environ.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "iprotate", "run", str(lab.cluster_file), "--host", "alpha"]
    argv += ["--control-socket", str(lab.control_socket("alpha"))]
    argv += ["--state-dir", str(lab.workdir / "state")]
    log = lab.workdir / "alpha.log"
    proc = lab.seg.spawn("alpha", argv, log=str(log), env={**os.environ, "PYTHONPATH": path})
    lab.procs["alpha"] = [proc]
    wait_for(lambda: _caught(proc.pid, signal.SIGINT), 10.0)  # the interpreter runs
    time.sleep(0.3)  # our first line holds the signals; the slow import is under way
    assert "taking part" not in log.read_text()
    os.kill(proc.pid, sig)
    if sig == signal.SIGINT:
        assert proc.wait(15.0) == 0, log.read_text()
        assert "SIGINT during start-up: stopping" in log.read_text()
    else:
        wait_for(lambda: "taking part" in log.read_text() or proc.poll() is not None, 15.0)
        time.sleep(0.5)
        assert proc.poll() is None, f"killed by {sig.name} during start-up: {log.read_text()}"
        done = "reloaded" if sig == signal.SIGHUP else "status counters:"
        wait_for(lambda: done in log.read_text(), 3.0)
        lab.stop("alpha")
        assert proc.returncode == 0
    assert "Traceback" not in log.read_text()
    assert lab.holders() == {str(v.ip): [] for v in lab.plan.vips}


def test_signals_while_stopping_neither_reload_nor_kill(make_lab: Callable[..., Lab]) -> None:
    """SIGTERM, then SIGHUP and SIGUSR1 every few ms until the daemon is gone (a reload script
    racing a stop). The reload used to run during the hand-over (a new plan's machines started
    on the way out, READY sent after STOPPING), and once the loop's handlers were removed the
    next SIGHUP killed the daemon: exit -1 instead of 0."""
    lab = make_lab(hosts=2, vips=2)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    (proc,) = lab.procs.pop("alpha")
    os.kill(proc.pid, signal.SIGTERM)
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 10.0:
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                break
        time.sleep(0.003)
    assert proc.wait(1.0) == 0, (lab.workdir / "alpha.log").read_text()
    after = (lab.workdir / "alpha.log").read_text().split("SIGTERM: stopping", 1)[1]
    assert "reloaded" not in after
    assert "Traceback" not in after
    wait_for(settled(lab, {"alpha"}), takeover_bound(lab, "alpha") + 1.0)


def test_a_master_whose_own_address_is_removed_stands_aside(make_lab: Callable[..., Lab]) -> None:
    """alpha's own address removed from its advert interface while it is master: every advert
    failed (ENETUNREACH) yet it stayed master, bravo took over after D, and each VIP stayed on
    both hosts for as long as the address was gone. Now alpha releases them at once and takes
    them back (after the hold-down) once the address is back."""
    lab = make_lab(hosts=2, vips=2, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    lab.seg.run("alpha", "ip", "addr", "del", f"{address(lab, 'alpha')}/24", "dev", "eth1")
    wait_for(settled(lab, {"alpha"}), takeover_bound(lab, "alpha") + 1.0)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        assert all("alpha" not in hs for hs in lab.holders().values()), lab.holders()
        time.sleep(0.1)
    lab.seg.run("alpha", "ip", "addr", "add", f"{address(lab, 'alpha')}/24", "dev", "eth1")
    wait_for(settled(lab), takeover_bound(lab, "bravo") + 3.0)


def test_a_copy_of_a_vip_with_another_prefix_does_not_stay_behind(
    make_lab: Callable[..., Lab],
) -> None:
    """203.0.113.10/32 added by hand beside the master's 203.0.113.10/24: the hand-over (here a
    drain) released the /24 only, and the /32 kept the VIP on both hosts for good."""
    lab = make_lab(hosts=2, vips=2, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in lab.plan.vips if v.owner == "alpha")
    lab.seg.run("alpha", "ip", "addr", "add", f"{v.ip}/32", "dev", "eth1")
    from click.testing import CliRunner

    from iprotate.cli import main

    sock = str(lab.control_socket("alpha"))
    assert CliRunner().invoke(main, ["drain", "--socket", sock, "--vip", str(v.ip)]).exit_code == 0
    wait_for(lambda: holders_of(lab, v) == [v.order[1]], takeover_bound(lab, "alpha") + 1.0)
    time.sleep(1.0)
    assert holders_of(lab, v) == [v.order[1]], lab.holders()
    assert f"{v.ip}/" not in lab.seg.run("alpha", "ip", "-4", "addr", "show", "dev", "eth1")


def test_a_drain_while_stopping_is_refused_and_not_remembered(
    make_lab: Callable[..., Lab],
) -> None:
    """`drain --vip X` during the stop's hand-over (here stretched to its 0.5 s limit: bravo
    frozen) saved the drained state of every VIP, since the hand-over drains them all: alpha
    came back from the restart with every VIP drained, and never took them back."""
    lab = make_lab(hosts=2, vips=2)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in lab.plan.vips if v.owner == "alpha")
    (bravo,) = lab.procs["bravo"]
    (alpha,) = lab.procs.pop("alpha")
    from iprotate.engine.control import ControlError, request

    os.kill(bravo.pid, signal.SIGSTOP)
    try:
        os.kill(alpha.pid, signal.SIGTERM)
        time.sleep(0.15)
        try:
            answer: dict[str, object] = request(
                str(lab.control_socket("alpha")), {"cmd": "drain", "vip": str(v.ip)}
            )
        except ControlError as e:
            answer = {"ok": False, "error": str(e)}
        assert alpha.wait(10.0) == 0
    finally:
        os.kill(bravo.pid, signal.SIGCONT)
    assert not answer["ok"] and "stopping" in str(answer["error"]), answer
    state = lab.workdir / "state" / "drained-alpha.json"
    assert not state.exists() or json.loads(state.read_text())["vips"] == []


def test_a_drain_that_cannot_be_remembered_says_so(make_lab: Callable[..., Lab]) -> None:
    """state_dir is a file: the drain was done and answered 'drained' as if it would survive a
    restart, while the daemon only logged that it could not save it."""
    lab = make_lab(hosts=2, vips=2)
    (lab.workdir / "state").write_text("not a directory\n")
    lab.start_all()
    wait_for(settled(lab), 8.0)
    from click.testing import CliRunner

    from iprotate.cli import main

    sock = str(lab.control_socket("alpha"))
    r = CliRunner().invoke(main, ["drain", "--socket", sock])
    assert r.exit_code == 0, r.output
    assert "warning: done, but not remembered across a restart" in r.output, r.output
    wait_for(settled(lab, {"alpha"}), takeover_bound(lab, "alpha") + 1.0)


def test_a_daemon_started_while_the_previous_one_stops_waits_for_it(
    make_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """`kill` then `iprotate run` at once, the old daemon still stopping (its down hook takes
    2 s): the new one was refused ("already run by pid ...") and the host was left with no
    daemon. Now it waits for the old one to finish, then runs."""
    hook = tmp_path / "down.sh"
    hook.write_text("#!/bin/sh\nsleep 2\n")
    hook.chmod(0o755)
    lab = make_lab(hosts=2, vips=2, extra_cluster={"down_script": str(hook)})
    lab.start_all()
    wait_for(settled(lab), 8.0)
    (old,) = lab.procs.pop("alpha")
    os.kill(old.pid, signal.SIGTERM)
    lab.start("alpha")
    (new,) = lab.procs["alpha"]
    assert old.wait(15.0) == 0
    wait_for(settled(lab), takeover_bound(lab, "bravo") + 8.0)
    assert new.poll() is None, (lab.workdir / "alpha.log").read_text()[-500:]
