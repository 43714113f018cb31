"""BGP mode in namespaces, against a real router (BIRD 2): its best path for every VIP is the
plan's owner; a killed, unplugged or frozen owner's VIPs move to the plan's next host, with BFD
and without; drain and undrain lose no ping at 10 ms; reload adds and removes VIPs without
touching the others' routes; a BIRD that dies is restarted."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labtools import settled, wait_for

from iprotate.cluster.loader import load_cluster
from iprotate.lab.bgplab import BgpLab
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

pytestmark = pytest.mark.netns
VIPS = 12


def planned(lab: BgpLab) -> Plan:
    return make_plan(load_cluster(lab.cluster_file))


def holders(plan: Plan, down: tuple[str, ...] = ()) -> dict[str, str | None]:
    return {f"{v.ip}/32": v.holder(down) for v in plan.vips}


def all_paths(lab: BgpLab) -> dict[str, set[str]]:
    return {k: {p.host for p in ps} for k, ps in lab.routes().items()}


@pytest.fixture
def bgp_lab(tmp_path: Path) -> Iterator[type[BgpLab]]:
    labs: list[BgpLab] = []

    def make(**kw: object) -> BgpLab:
        lab = BgpLab(workdir=str(tmp_path / f"lab{len(labs)}"), **kw)  # type: ignore[arg-type]
        labs.append(lab)
        lab.__enter__()
        lab.wait(lambda: len(lab.sessions_up()) == lab.hosts, 30)
        plan = planned(lab)
        lab.wait(lambda: lab.best() == holders(plan), 30)
        # and every backup's route too: the router knows the whole order
        lab.wait(lambda: all_paths(lab) == {f"{v.ip}/32": set(v.order) for v in plan.vips}, 30)
        return lab

    try:
        yield make  # type: ignore[misc]
    finally:
        for lab in labs:
            lab.close()


def test_every_vips_best_path_is_its_planned_owner_with_the_planned_meds(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    plan = planned(lab)
    routes = lab.routes()
    for v in plan.vips:
        paths = routes[f"{v.ip}/32"]
        assert [p.host for p in paths if p.best] == [v.owner]
        assert {p.host: p.med for p in paths} == {h: 100 + 100 * r for r, h in enumerate(v.order)}
    assert lab.ping(str(plan.vips[0].ip), count=2) == 2
    status = lab.ask("alpha", "status", "--json")
    assert '"established": true' in status and '"mode": "bgp"' in status
    text = lab.ask("alpha", "status")
    assert text.startswith("IPROTATE OK - alpha (BGP mode, AS 64513)"), text
    assert "router0" in text and "Established" in text
    metrics = lab.metrics("alpha")
    assert 'iprotate_bgp_session_up{session="router0"} 1.0' in metrics
    owned = next(v for v in plan.vips if v.owner == "alpha")
    assert f'iprotate_bgp_vip_med{{vip="{owned.ip}"}} 100.0' in metrics
    assert f'iprotate_bgp_vip_state{{state="announced",vip="{owned.ip}"}} 1.0' in metrics


FAULTS = ["killed", "unplugged", "frozen"]


@pytest.mark.parametrize("bfd", [True, False], ids=["bfd", "nobfd"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_owners_vips_move_to_the_plans_next_host(bgp_lab, fault: str, bfd: bool) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS, bfd=bfd, hold_time=3)
    plan = planned(lab)
    victim = "alpha"
    vip = next(str(v.ip) for v in plan.vips if v.owner == victim)
    want = holders(plan, (victim,))
    pinger = lab.pinger(vip)
    time.sleep(0.5)
    t0 = time.monotonic()
    if fault == "killed":
        lab.kill(victim, signal.SIGKILL)
    elif fault == "unplugged":
        lab.link(victim, False)
    else:
        lab.freeze(victim)
    try:
        # Bounds: a killed iprotate takes BIRD with it (a Cease: at once); a silent host is seen
        # by BFD (100 ms x 3) or by the hold time (3 s), plus the router's scan.
        bound = 1.0 if fault == "killed" or bfd else 3 + 1.0
        moved = lab.wait(lambda: lab.best() == want, timeout=bound + 5, step=0.01)
        time.sleep(0.3)
        sent, got = lab.ping_result(pinger)
    finally:
        if fault == "frozen":
            lab.freeze(victim, False)
    lost_ms = (sent - got) * 10
    print(f"\n{fault} bfd={bfd}: router moved in {moved * 1000:.0f} ms, {sent - got} pings lost")
    assert time.monotonic() - t0 < bound + 5
    assert moved <= bound, f"moved after {moved:.2f} s, bound {bound} s"
    assert lost_ms <= bound * 1000 + 200


@pytest.mark.parametrize("rank", ["med", "prepend"])
def test_drain_and_undrain_lose_no_ping(bgp_lab, rank: str) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS, rank=rank, hold_down=1.0, drain_wait=1.0)
    plan = planned(lab)
    owned = [f"{v.ip}/32" for v in plan.vips if v.owner == "alpha"]
    vip = owned[0].split("/")[0]
    pinger = lab.pinger(vip)
    time.sleep(0.5)
    assert "drained: 203.0.113" in lab.ask("alpha", "drain")
    want = holders(plan, ("alpha",))
    lab.wait(lambda: lab.best() == want, timeout=5)
    # withdrawn after the wait, not before: make-before-break
    lab.wait(lambda: all(p.host != "alpha" for ps in lab.routes().values() for p in ps), 5)
    assert "still drained: nothing" in lab.ask("alpha", "undrain")
    lab.wait(lambda: lab.best() == holders(plan), timeout=10)
    time.sleep(0.3)
    sent, got = lab.ping_result(pinger)
    assert sent > 100
    assert got == sent, f"{sent - got} of {sent} pings lost"


def test_a_clean_stop_hands_over_without_losing_a_ping(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS, drain_wait=1.0)
    plan = planned(lab)
    vip = next(str(v.ip) for v in plan.vips if v.owner == "bravo")
    pinger = lab.pinger(vip)
    time.sleep(0.3)
    lab.kill("bravo", signal.SIGTERM)
    assert lab.best() == holders(plan, ("bravo",))
    sent, got = lab.ping_result(pinger)
    assert got == sent, f"{sent - got} of {sent} pings lost"
    out = lab.seg.run("bravo", "ip", "-o", "addr", "show", "dev", "lo")
    assert "203.0.113." not in out  # the addresses go once the routes are gone


def _seconds(since: str) -> float:
    h, m, sec = since.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def _untouched(before: dict[str, list], after: dict[str, list], keys: set[str]) -> list[str]:  # type: ignore[type-arg]
    """The prefixes among `keys` whose routes changed (host, MED, or the time of last change:
    BIRD prints that from its monotonic clock, so it may wobble by a millisecond)."""
    changed = []
    for k in sorted(keys):
        b = {p.host: (p.med, _seconds(p.since)) for p in before[k]}
        a = {p.host: (p.med, _seconds(p.since)) for p in after[k]}
        if b.keys() != a.keys() or any(
            b[h][0] != a[h][0] or abs(b[h][1] - a[h][1]) > 0.05 for h in b
        ):
            changed.append(k)
    return changed


def test_reload_adds_and_removes_vips_without_touching_the_others(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS, hold_down=0.5)
    old = planned(lab)
    before = lab.routes()
    lab.write_cluster(vips=VIPS + 3)
    bigger = planned(lab)
    for h in lab.names:
        assert "reloaded: " in lab.ask(h, "reload")
    lab.wait(lambda: lab.best() == holders(bigger), timeout=10)
    # The VIPs whose plan did not change keep their routes untouched (the planner may rebalance
    # a few others: property 5 of the plan).
    same = {f"{v.ip}/32" for v, w in zip(old.vips, bigger.vips, strict=False) if v.order == w.order}
    assert len(same) >= VIPS // 2
    after = lab.routes()
    assert _untouched(before, after, same) == []
    lab.write_cluster(vips=VIPS)
    for h in lab.names:
        lab.ask(h, "reload")
    lab.wait(lambda: lab.best() == holders(old), timeout=10)
    assert len(lab.routes()) == VIPS
    assert _untouched(after, lab.routes(), same) == []


def test_a_dead_speaker_is_restarted_and_its_routes_come_back(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    plan = planned(lab)
    iprotate = lab.procs["charlie"].pid
    birds = [p for p in lab.host_pids("charlie") if p != iprotate]
    assert len(birds) == 1
    os.kill(birds[0], signal.SIGKILL)
    lab.wait(lambda: lab.best() == holders(plan, ("charlie",)), timeout=5)
    lab.wait(lambda: lab.best() == holders(plan), timeout=15)
    assert lab.procs["charlie"].poll() is None
    assert sys.executable


def test_lab_bgp_demo_settles_every_step_and_leaves_nothing() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "iprotate", "lab", "--bgp", "--bfd", "--hosts", "3", "--vips", "6",
         "--demo"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    for step in ("fail alpha (SIGKILL): settled", "start alpha: settled", "drain bravo: settled",
                 "undrain bravo: settled"):  # fmt: skip
        assert step in r.stdout
    assert "router's best" in r.stdout and "lab removed" in r.stdout
    # dual stack by default (--vips6 3): the IPv6 VIPs' /128s settle with the rest
    assert "2001:db8:113::a/128" in r.stdout and "IPv6 alpha:up" in r.stdout
    # Only this lab's own namespaces: other labs may run beside it.
    m = re.search(r"BGP lab (ipr[0-9a-f]+):", r.stdout)
    assert m, r.stdout
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert [n for n in left.split() if n.startswith(m.group(1))] == []


# --- adversary -----------------------------------------------------------------------------------


def _run(
    lab: BgpLab, name: str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", lab.seg.members[name].netns, sys.executable, "-m", "iprotate",
         "run", str(lab.cluster_file), "--host", name, *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_second_daemon_for_the_host_is_refused_and_touches_nothing(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    before = lab.routes()
    other = str(lab.dir / "alpha" / "second.sock")
    r = _run(lab, "alpha", "--control-socket", other)
    assert r.returncode == 1 and "alpha" in r.stderr, r.stderr
    time.sleep(0.5)
    assert _untouched(before, lab.routes(), set(before)) == []
    assert lab.procs["alpha"].poll() is None


def test_a_broken_reload_is_refused_and_keeps_every_route(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    before = lab.routes()
    good = lab.cluster_file.read_text()
    for bad in ("[bgp\n", good.replace("asn = 64512", "asn = 0"), good.split("[bgp]")[0]
                + good.split("[bgp]")[1].split("\n", 8)[-1]):  # fmt: skip
        lab.cluster_file.write_text(bad)
        out = lab.ask("alpha", "reload")
        assert "error" in out, out
    lab.cluster_file.write_text(good)
    os.kill(lab.procs["bravo"].pid, signal.SIGHUP)  # the same through the signal
    time.sleep(1.0)
    assert _untouched(before, lab.routes(), set(before)) == []
    assert all(lab.procs[h].poll() is None for h in lab.names)


def test_no_speaker_fails_cleanly_and_leaves_no_address(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    lab.kill("charlie", signal.SIGTERM)
    text = lab.cluster_file.read_text().replace("[bgp]\n", '[bgp]\nspeaker = "/nonexistent/bird"\n')
    broken = lab.dir / "nospeaker.toml"
    broken.write_text(text)
    (lab.dir / "password").chmod(0o600)
    r = subprocess.run(
        ["ip", "netns", "exec", lab.seg.members["charlie"].netns, sys.executable, "-m",
         "iprotate", "run", str(broken), "--host", "charlie", "--control-socket",
         str(lab.dir / "charlie" / "x.sock")],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 1 and "cannot start BIRD" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert "203.0.113." not in lab.seg.run("charlie", "ip", "-o", "addr", "show", "dev", "lo")


def test_hosts_running_different_plans_show_as_drift_on_the_router(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    assert lab.drift() == set()
    plan = planned(lab)
    other = lab.dir / "other.toml"
    text = lab.cluster_file.read_text()
    other.write_text(text.replace('name = "charlie"', 'name = "charlie"\nweight = 3'))
    theirs = make_plan(load_cluster(other))
    differ = {
        f"{v.ip}/32" for v, w in zip(plan.vips, theirs.vips, strict=True) if v.order != w.order
    }
    assert differ
    lab.kill("alpha", signal.SIGTERM)
    lab.start("alpha", other)
    lab.wait(lambda: lab.drift() == differ, timeout=15)


def test_a_failed_health_check_moves_its_vips_and_they_come_back(tmp_path: Path) -> None:
    service = str(Path(__file__).with_name("check_service.py"))
    check = ('\n[[checks]]\nname = "web"\nhttp = "http://127.0.0.1:8080/"\ninterval = 0.2\n'
             "timeout = 0.2\nfall = 2\nrise = 2\n")  # fmt: skip
    with BgpLab(vips=VIPS, workdir=str(tmp_path / "lab"), checks=check) as lab:
        services = {h: lab.seg.spawn(h, [sys.executable, service, "8080"]) for h in lab.names}
        plan = planned(lab)
        lab.wait(lambda: lab.best() == holders(plan), 30)
        vip = next(str(v.ip) for v in plan.vips if v.owner == "alpha")
        pinger = lab.pinger(vip)
        time.sleep(0.3)
        lab.seg.stop(services["alpha"])
        moved = lab.wait(lambda: lab.best() == holders(plan, ("alpha",)), timeout=10)
        # then withdrawn (make-before-break), and status says why
        lab.wait(lambda: all(p.host != "alpha" for ps in lab.routes().values() for p in ps), 5)
        assert "check web not up" in lab.ask("alpha", "status")
        services["alpha"] = lab.seg.spawn("alpha", [sys.executable, service, "8080"])
        lab.wait(lambda: lab.best() == holders(plan), timeout=15)
        sent, got = lab.ping_result(pinger)
        print(f"\nfailed check: router moved in {moved * 1000:.0f} ms, {sent - got} pings lost")
        assert moved < 0.2 * 2 + 0.2 + 1.0  # fall x interval + a timeout, with room
        assert got == sent  # the host answers until the router has moved


def test_cleanup_after_a_killed_daemon_removes_the_addresses(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    lab.kill("bravo", signal.SIGKILL)
    plan = planned(lab)
    lab.wait(lambda: lab.best() == holders(plan, ("bravo",)), timeout=5)  # BIRD went with it
    assert "203.0.113." in lab.seg.run("bravo", "ip", "-o", "addr", "show", "dev", "lo")
    r = subprocess.run(
        ["ip", "netns", "exec", lab.seg.members["bravo"].netns, sys.executable, "-m", "iprotate",
         "cleanup", str(lab.cluster_file), "--host", "bravo"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "203.0.113." not in lab.seg.run("bravo", "ip", "-o", "addr", "show", "dev", "lo")


def test_a_hung_speaker_is_replaced_and_a_drain_still_happens(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    plan = planned(lab)
    iprotate = lab.procs["alpha"].pid
    bird = next(p for p in lab.host_pids("alpha") if p != iprotate)
    os.kill(bird, signal.SIGSTOP)  # hung: its sessions stay up until the hold time runs out
    out = lab.ask("alpha", "drain")  # birdc configure hangs: BIRD is replaced on the new file
    assert "drained: 203.0.113" in out, out
    lab.wait(lambda: all(p.host != "alpha" for ps in lab.routes().values() for p in ps), 15)
    assert lab.best() == holders(plan, ("alpha",))
    assert lab.procs["alpha"].poll() is None
    new = [p for p in lab.host_pids("alpha") if p != iprotate]
    assert bird not in new and len(new) == 1
    lab.ask("alpha", "undrain")
    lab.wait(lambda: lab.best() == holders(plan), timeout=20)


def test_a_removed_vip_address_is_added_back(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    plan = planned(lab)
    vip = next(str(v.ip) for v in plan.vips if v.owner == "charlie")
    lab.seg.run("charlie", "ip", "addr", "del", f"{vip}/32", "dev", "lo")
    lab.wait(lambda: f"{vip}/32" in lab.seg.run("charlie", "ip", "-o", "addr", "show", "dev", "lo"),
             timeout=5)  # fmt: skip
    assert lab.ping(vip, count=2) == 2


def _bird_of(lab: BgpLab, name: str) -> int:
    iprotate = lab.procs[name].pid
    birds = [p for p in lab.host_pids(name) if p != iprotate]
    assert len(birds) == 1, birds
    return birds[0]


def test_a_frozen_speaker_is_replaced_without_waiting_for_a_change(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """SIGSTOP BIRD and nothing else: the router drops the host's routes at the hold time, and
    only a change (drain, check, reload) used to restart BIRD; the host's traffic stayed on its
    backups for good, and status still said Established."""
    lab = bgp_lab(vips=VIPS)
    plan = planned(lab)
    frozen = _bird_of(lab, "alpha")
    os.kill(frozen, signal.SIGSTOP)
    try:
        lab.wait(lambda: lab.best() == holders(plan, ("alpha",)), timeout=10)  # the hold time
        # a watch (1 s) + a birdc timeout (5 s) + a restart, twice over
        lab.wait(lambda: lab.best() == holders(plan), timeout=25)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)
    assert _bird_of(lab, "alpha") != frozen
    assert lab.procs["alpha"].poll() is None
    assert "does not answer" in (lab.dir / "alpha.log").read_text()


def test_a_removed_run_directory_does_not_stop_the_announcements(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """The directory of BIRD's file removed under the daemon: the next change used to fail on
    the write inside the timer task (dead for good: nothing announced or withdrawn after it)."""
    lab = bgp_lab(vips=VIPS, hold_down=0.5)
    run_dir = lab.dir / "charlie"
    assert (run_dir / "charlie.bird.conf").exists()
    shutil.rmtree(run_dir)
    lab.write_cluster(vips=VIPS + 3)
    os.kill(lab.procs["charlie"].pid, signal.SIGHUP)  # its control socket went with the dir
    for h in ("alpha", "bravo"):
        assert "reloaded: " in lab.ask(h, "reload")
    bigger = planned(lab)
    lab.wait(lambda: lab.best() == holders(bigger), timeout=15)
    new = {f"{v.ip}/32" for v in bigger.vips[VIPS:] if "charlie" in v.order}
    assert new and all("charlie" in all_paths(lab)[k] for k in new)
    assert lab.procs["charlie"].poll() is None


def test_a_reload_that_moves_the_vip_interface_is_refused(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """It used to answer "reloaded" and keep the old interface (the host is fixed at start):
    the operator believes the addresses moved."""
    lab = bgp_lab(vips=VIPS)
    before = lab.routes()
    good = lab.cluster_file.read_text()
    lab.cluster_file.write_text(good.replace('vip_interface = "lo"', 'vip_interface = "vips0"'))
    out = lab.ask("alpha", "reload")
    assert "vip_interface lo -> vips0: restart" in out, out
    lab.cluster_file.write_text(good)
    time.sleep(0.5)
    assert _untouched(before, lab.routes(), set(before)) == []
    assert "203.0.113." in lab.seg.run("alpha", "ip", "-o", "addr", "show", "dev", "lo")


def test_a_carp_daemon_refuses_a_reload_into_bgp_mode(make_lab) -> None:  # type: ignore[no-untyped-def]
    """CARP -> BGP by SIGHUP used to be taken: CARP went on, [bgp] ignored."""
    lab = make_lab(hosts=2, vips=2)
    lab.start_all()
    wait_for(settled(lab), 8.0)  # every daemon has read the CARP file
    good = lab.cluster_file.read_text()
    lab.cluster_file.write_text(
        good + '\n[bgp]\nasn = 64513\nrouters = [{ address = "198.51.100.254", asn = 64512 }]\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "iprotate", "reload", "--socket", str(lab.control_socket("alpha"))],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 1 and "[bgp] (BGP mode) needs a restart" in r.stdout + r.stderr, (
        r.stdout + r.stderr
    )


def test_a_reload_of_a_huge_file_never_stalls_the_daemon(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """The largest file the loader takes needs seconds to check and plan: it was read in the
    event loop (status, timers and systemd's watchdog pings stalled: WatchdogSec=10 would kill
    the daemon and BIRD with it), and a SIGHUP storm ran one load after another."""
    lab = bgp_lab(vips=VIPS)
    before = lab.routes()
    good = lab.cluster_file.read_text()
    lines = ['[cluster]\ninterface = "eth1"\npassword_file = "password"', good.split("[bgp]")[1]]
    lines[1] = "[bgp]" + lines[1].split("[[hosts]]")[0]
    for i in range(256):
        lines += ["[[hosts]]", f'name = "h{i}"', f'address = "198.51.101.{i}"']
    for g in range(255):
        lines += ["[[vips]]", f'pool = "198.18.{g}.1-198.18.{g}.255/32"', f'group = "239.1.0.{g}"']
    lab.cluster_file.write_text("\n".join(lines) + "\n")
    pid = lab.procs["alpha"].pid
    for _ in range(20):
        os.kill(pid, signal.SIGHUP)
    took = []
    t_end = time.monotonic() + 4.0
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        assert '"mode": "bgp"' in lab.ask("alpha", "status", "--json")
        took.append(time.monotonic() - t0)
    lab.cluster_file.write_text(good)
    assert max(took) < 2.0, took  # a CLI start (~0.3 s) and an answer, not a stalled loop
    assert lab.procs["alpha"].poll() is None
    lab.wait(lambda: "not in it" in (lab.dir / "alpha.log").read_text(), timeout=60)
    assert _untouched(before, lab.routes(), set(before)) == []


def test_a_drained_host_stays_drained_across_a_restart_and_a_reload(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """BGP mode ignored --state-dir: a host drained for maintenance came back into service when
    its daemon restarted; and a reload that added VIPs announced them from the drained host."""
    lab = bgp_lab(vips=VIPS, hold_down=0.5, drain_wait=0.5)
    plan = planned(lab)
    assert "drained: 203.0.113" in lab.ask("alpha", "drain")
    gone = lambda: all(p.host != "alpha" for ps in lab.routes().values() for p in ps)  # noqa: E731
    lab.wait(gone, timeout=10)
    lab.kill("alpha", signal.SIGTERM)
    lab.start("alpha")
    lab.wait(lambda: '"drained": true' in lab.ask("alpha", "status", "--json"), timeout=15)
    time.sleep(1.5)  # past the hold-down: nothing comes back
    assert gone() and lab.best() == holders(plan, ("alpha",))
    lab.write_cluster(vips=VIPS + 3)
    for h in lab.names:
        assert "reloaded: " in lab.ask(h, "reload")
    bigger = planned(lab)
    lab.wait(lambda: lab.best() == holders(bigger, ("alpha",)), timeout=10)
    time.sleep(1.5)
    assert gone()
    assert "still drained: nothing" in lab.ask("alpha", "undrain")
    lab.wait(lambda: lab.best() == holders(bigger), timeout=15)


def test_sigterm_while_the_speaker_is_frozen_still_stops_on_time_and_withdraws(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    lab = bgp_lab(vips=VIPS)
    plan = planned(lab)
    frozen = _bird_of(lab, "bravo")
    os.kill(frozen, signal.SIGSTOP)
    t0 = time.monotonic()
    os.kill(lab.procs["bravo"].pid, signal.SIGTERM)
    lab.procs["bravo"].wait(25)  # the unit's TimeoutStopSec is 30
    took = time.monotonic() - t0
    print(f"\nstop with a frozen BIRD: {took:.1f} s")
    assert lab.host_pids("bravo") == []  # no BIRD left behind, frozen or not
    assert lab.best() == holders(plan, ("bravo",))
    assert all(p.host != "bravo" for ps in lab.routes().values() for p in ps)
    assert "203.0.113." not in lab.seg.run("bravo", "ip", "-o", "addr", "show", "dev", "lo")


def test_a_restart_after_sigkill_with_a_frozen_speaker_replaces_it(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """iprotate SIGKILLed while its BIRD is SIGSTOPped: BIRD's death signal waits for a SIGCONT
    that never comes. The next daemon must not be blocked by it (its socket, its port 179)."""
    lab = bgp_lab(vips=VIPS)
    plan = planned(lab)
    frozen = _bird_of(lab, "charlie")
    os.kill(frozen, signal.SIGSTOP)
    lab.kill("charlie", signal.SIGKILL)
    try:
        lab.start("charlie")
        lab.wait(lambda: frozen not in lab.host_pids("charlie"), timeout=15)
        lab.wait(lambda: lab.best() == holders(plan), timeout=15)
        assert len(lab.host_pids("charlie")) == 2  # iprotate and one BIRD
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)


def test_a_reload_that_would_reset_the_sessions_is_refused(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """BIRD restarts a session whose settings change: a reload of a new hold time, sent to
    every host at once, withdrew every route of every host together (no worst-route step)."""
    lab = bgp_lab(vips=VIPS)
    before = lab.routes()
    good = lab.cluster_file.read_text()
    lab.cluster_file.write_text(good.replace("hold_time = 3", "hold_time = 4"))
    for h in lab.names:
        out = lab.ask(h, "reload")
        assert "restart the hosts one at a time" in out, out
    time.sleep(2.5)  # a reset session comes back within a connect delay or two
    assert _untouched(before, lab.routes(), set(before)) == []


def test_a_vip_interface_set_down_or_deleted_never_leaves_routes_to_nowhere(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """Only the /32s were watched: the VIP interface set down (its addresses accept nothing) or
    deleted (the addresses gone with it) left this host's routes announced to no address."""
    lab = bgp_lab(vips=VIPS)
    lab.kill("alpha", signal.SIGTERM)
    text = lab.cluster_file.read_text().replace('vip_interface = "lo"', 'vip_interface = "vips0"')
    own = lab.dir / "vips0.toml"
    own.write_text(text)
    # a bridge: this kernel may have no dummy module (the daemon could not make one again)
    lab.seg.run("alpha", "ip", "link", "add", "vips0", "type", "bridge")
    lab.start("alpha", own)
    plan = planned(lab)
    lab.wait(lambda: lab.best() == holders(plan), timeout=20)
    vip = next(str(v.ip) for v in plan.vips if v.owner == "alpha")
    lab.seg.run("alpha", "ip", "link", "set", "vips0", "down")
    flags = lambda: lab.seg.run("alpha", "ip", "-o", "link", "show", "vips0").split("<")[1]  # noqa: E731
    lab.wait(lambda: "UP" in flags().split(">")[0].split(","), timeout=5)
    assert lab.ping(vip, count=2) == 2
    lab.seg.run("alpha", "ip", "link", "del", "vips0")
    lab.wait(lambda: all(p.host != "alpha" for ps in lab.routes().values() for p in ps), 10)
    assert lab.procs["alpha"].wait(10) == 1
    assert "vips0 is gone and cannot be made again" in (lab.dir / "alpha.log").read_text()
    assert lab.best() == holders(plan, ("alpha",))


def test_a_stop_asks_systemd_for_the_time_its_hand_over_takes(bgp_lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """drain_wait may be up to 300 s, TimeoutStopSec is 30: systemd SIGKILLed the hand-over
    halfway. The daemon extends the stop timeout by what it needs (EXTEND_TIMEOUT_USEC)."""
    lab = bgp_lab(vips=VIPS)
    lab.kill("bravo", signal.SIGTERM)
    lab.cluster_file.write_text(
        lab.cluster_file.read_text().replace("drain_wait = 1.0", "drain_wait = 40")
    )
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    os.environ["NOTIFY_SOCKET"] = path
    try:
        lab.start("bravo")
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        while "READY=1" not in sock.recv(4096).decode():
            pass
        os.kill(lab.procs["bravo"].pid, signal.SIGTERM)
        got = ""
        while "EXTEND_TIMEOUT_USEC=" not in got:
            got = sock.recv(4096).decode()
        usec = int(got.split("EXTEND_TIMEOUT_USEC=")[1].split()[0])
        assert usec >= 40_000_000, got
    finally:
        sock.close()
        lab.kill("bravo", signal.SIGKILL)


def test_a_reloaded_drain_wait_is_the_one_a_drain_waits(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """The announcer kept the drain_wait it started with: a reload's answer said yes to the new
    one, and drains went on withdrawing on the old clock."""
    lab = bgp_lab(vips=VIPS, drain_wait=1.0)
    text = lab.cluster_file.read_text()
    lab.cluster_file.write_text(text.replace("drain_wait = 1.0", "drain_wait = 4.0"))
    assert "reloaded: " in lab.ask("alpha", "reload")
    assert "drained: 203.0.113" in lab.ask("alpha", "drain")
    t0 = time.monotonic()
    here = lambda: any(p.host == "alpha" for ps in lab.routes().values() for p in ps)  # noqa: E731
    lab.wait(lambda: not here(), timeout=10)
    assert time.monotonic() - t0 > 2.5  # 4 s, not 1 s


def test_a_vip_a_reload_takes_away_keeps_its_address_until_the_router_has_moved(bgp_lab) -> None:  # type: ignore[no-untyped-def]
    """The address went the moment `birdc configure` returned, before the router had the
    withdrawal: packets already on their way met a host without it."""
    lab = bgp_lab(vips=VIPS, drain_wait=2.0)
    plan = planned(lab)
    lab.write_cluster(vips=VIPS - 3)
    gone = [str(v.ip) for v in plan.vips[VIPS - 3 :]]
    addrs = lambda: lab.seg.run("alpha", "ip", "-o", "addr", "show", "dev", "lo")  # noqa: E731
    assert "reloaded: " in lab.ask("alpha", "reload")
    assert all(f"{ip}/32" in addrs() for ip in gone)  # routes withdrawn, addresses still here
    lab.wait(lambda: all(f"{ip}/32" not in addrs() for ip in gone), timeout=5)
    assert not any(p.host == "alpha" for ip in gone for p in lab.routes().get(f"{ip}/32", []))
