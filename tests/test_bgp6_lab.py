"""BGP mode with IPv6 VIPs, in namespaces, against the real router (BIRD 2, an IPv6 session per
host): every IPv6 VIP's best path on the router is its planned owner, as a /128 with the planned
MEDs; a killed owner's /128s move to the plan's next host and the client's ping -6 follows; drain
and undrain lose no ping -6; cleanup after a crash removes the /128s."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iprotate.cluster.loader import load_cluster
from iprotate.engine.bgp import tool
from iprotate.lab.bgplab import BgpLab
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

pytestmark = pytest.mark.netns
VIPS, VIPS6 = 3, 6


def planned(lab: BgpLab) -> Plan:
    return make_plan(load_cluster(lab.cluster_file))


def holders6(plan: Plan, down: tuple[str, ...] = ()) -> dict[str, str | None]:
    return {f"{v.ip}/128": v.holder(down) for v in plan.vips if v.ip.version == 6}


def best6(lab: BgpLab) -> dict[str, str]:
    return {p: h for p, h in lab.best().items() if p.endswith("/128")}


def paths6(lab: BgpLab) -> dict[str, set[str]]:
    return {k: {p.host for p in ps} for k, ps in lab.routes().items() if k.endswith("/128")}


@pytest.fixture
def lab6(tmp_path: Path) -> Iterator[BgpLab]:
    lab = BgpLab(workdir=str(tmp_path / "lab"), vips=VIPS, vips6=VIPS6)
    with lab:
        lab.wait(lambda: len(lab.sessions6_up()) == lab.hosts, 30)
        plan = planned(lab)
        lab.wait(lambda: best6(lab) == holders6(plan), 30)
        want = {f"{v.ip}/128": set(v.order) for v in plan.vips if v.ip.version == 6}
        lab.wait(lambda: paths6(lab) == want, 30)
        yield lab


def test_every_ipv6_vips_best_path_is_its_planned_owner(lab6: BgpLab) -> None:
    plan = planned(lab6)
    routes = lab6.routes()
    v6 = [v for v in plan.vips if v.ip.version == 6]
    assert len(v6) == VIPS6
    for v in v6:
        paths = routes[f"{v.ip}/128"]
        assert [p.host for p in paths if p.best] == [v.owner]
        assert {p.host: p.med for p in paths} == {h: 100 + 100 * r for r, h in enumerate(v.order)}
    # the IPv4 VIPs go on as before, over their own sessions
    assert len(lab6.sessions_up()) == lab6.hosts
    assert {p for p in routes if p.endswith("/32")} == {
        f"{v.ip}/32" for v in plan.vips if v.ip.version == 4
    }
    # the /128s sit on the host usable at once (nodad: never tentative)
    lo = lab6.seg.run("alpha", "ip", "-o", "-6", "addr", "show", "dev", "lo")
    mine = [v for v in v6 if "alpha" in v.order]
    for v in mine:
        line = next(x for x in lo.splitlines() if f" {v.ip}/128 " in x)
        assert "tentative" not in line and "dadfailed" not in line
    for owner in lab6.names:
        vip = next(str(v.ip) for v in v6 if v.owner == owner)
        assert lab6.ping(vip, count=2) == 2, vip
    status = lab6.ask("alpha", "status", "--json")
    assert f'"prefix": "{mine[0].ip}/128"' in status and "router1" in status
    assert lab6.ask("alpha", "status").startswith("IPROTATE OK - alpha")
    # the router drops alpha's IPv6 session: alpha's /128s reach no router, which is critical
    lab6.seg.run("router", tool("birdc"), "-s", lab6.router_ctl, "disable", "h6_alpha")
    lab6.wait(lambda: "IPROTATE CRITICAL" in lab6.ask("alpha", "status"), timeout=10)
    assert "no IPv6 BGP session" in lab6.ask("alpha", "status")


def test_a_killed_owners_ipv6_vips_move_to_the_plans_next_host(lab6: BgpLab) -> None:
    plan = planned(lab6)
    vip = next(v for v in plan.vips if v.ip.version == 6 and v.owner == "bravo")
    lab6.kill("bravo", signal.SIGKILL)  # BIRD goes with it: its sessions close
    lab6.wait(lambda: best6(lab6) == holders6(plan, ("bravo",)), timeout=5)
    assert best6(lab6)[f"{vip.ip}/128"] == vip.holder(("bravo",)) != "bravo"
    assert lab6.ping(str(vip.ip), count=2) == 2
    # cleanup after the crash removes the /128s the dead daemon left on lo
    assert str(vip.ip) in lab6.seg.run("bravo", "ip", "-o", "-6", "addr", "show", "dev", "lo")
    r = subprocess.run(
        ["ip", "netns", "exec", lab6.seg.members["bravo"].netns, sys.executable, "-m", "iprotate",
         "cleanup", str(lab6.cluster_file), "--host", "bravo"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lo = lab6.seg.run("bravo", "ip", "-o", "-6", "addr", "show", "dev", "lo")
    assert "2001:db8:113:" not in lo


def test_ipv6_drain_and_undrain_lose_no_ping(lab6: BgpLab) -> None:
    plan = planned(lab6)
    vip = next(str(v.ip) for v in plan.vips if v.ip.version == 6 and v.owner == "alpha")
    pinger = lab6.pinger(vip)
    time.sleep(0.5)
    out = lab6.ask("alpha", "drain", "--vip", vip)
    assert "drained: 2001:db8:113::" in out, out
    gone = f"{vip}/128"
    lab6.wait(lambda: best6(lab6).get(gone) not in (None, "alpha"), timeout=5)
    # withdrawn after the wait, not before: make-before-break
    lab6.wait(lambda: "alpha" not in paths6(lab6)[gone], timeout=5)
    assert best6(lab6)[gone] == next(v for v in plan.vips if str(v.ip) == vip).holder(("alpha",))
    lab6.ask("alpha", "undrain", "--vip", vip)
    lab6.wait(lambda: best6(lab6) == holders6(plan), timeout=10)
    time.sleep(0.3)
    sent, got = lab6.ping_result(pinger)
    assert sent > 100
    assert got == sent, f"{sent - got} of {sent} pings lost"


def test_a_pulled_owners_ipv6_vips_move_within_a_second_with_bfd(tmp_path: Path) -> None:
    """BFD on the IPv6 sessions as on the IPv4 ones: a dead link is seen well inside the 3 s
    hold time."""
    with BgpLab(workdir=str(tmp_path / "lab"), vips=VIPS, vips6=VIPS6, bfd=True) as lab:
        lab.wait(lambda: len(lab.sessions6_up()) == lab.hosts, 30)
        plan = planned(lab)
        lab.wait(lambda: best6(lab) == holders6(plan), 30)
        vip = next(v for v in plan.vips if v.ip.version == 6 and v.owner == "charlie")
        lab.link("charlie", False)
        took = lab.wait(lambda: best6(lab) == holders6(plan, ("charlie",)), timeout=5)
        assert took < 1.5, f"{took:.2f} s: BFD did not act on the IPv6 session"
        assert lab.ping(str(vip.ip), count=2) == 2


def test_reload_adds_and_removes_ipv6_vips_and_their_addresses(lab6: BgpLab) -> None:
    old = planned(lab6)
    lab6.vips6 = VIPS6 + 2
    lab6.write_cluster()
    bigger = planned(lab6)
    for h in lab6.names:
        assert "reloaded: " in lab6.ask(h, "reload")
    lab6.wait(lambda: best6(lab6) == holders6(bigger), timeout=10)
    new = [v for v in bigger.vips if v.ip.version == 6 and v.ip not in {w.ip for w in old.vips}]
    assert len(new) == 2
    owner = new[0].owner
    assert owner is not None
    lo = lab6.seg.run(owner, "ip", "-o", "-6", "addr", "show", "dev", "lo")
    assert f" {new[0].ip}/128 " in lo
    assert lab6.ping(str(new[0].ip), count=2) == 2
    lab6.vips6 = VIPS6
    lab6.write_cluster()
    for h in lab6.names:
        lab6.ask(h, "reload")
    lab6.wait(lambda: best6(lab6) == holders6(old), timeout=10)

    # Withdrawn, then the address goes drain_wait later (packets already sent are answered).
    def gone() -> bool:
        for h in lab6.names:
            lo = lab6.seg.run(h, "ip", "-o", "-6", "addr", "show", "dev", "lo")
            if f" {new[0].ip}/128 " in lo or f" {new[1].ip}/128 " in lo:
                return False
        return True

    lab6.wait(gone, timeout=8.0)  # drain_wait (2 s by default) and a margin


def test_a_removed_128_is_added_back(lab6: BgpLab) -> None:
    plan = planned(lab6)
    vip = next(str(v.ip) for v in plan.vips if v.ip.version == 6 and v.owner == "alpha")
    log = lab6.dir / "alpha.log"
    time.sleep(1.2)  # a full pass of the restore loop: nothing is missing, nothing is said
    assert "were removed" not in log.read_text()
    lab6.seg.run("alpha", "ip", "addr", "del", f"{vip}/128", "dev", "lo")

    def back() -> bool:
        lo = lab6.seg.run("alpha", "ip", "-o", "-6", "addr", "show", "dev", "lo")
        return f" {vip}/128 " in lo

    lab6.wait(back, timeout=5)
    assert lab6.ping(vip, count=2) == 2
    assert f"were removed from lo ({vip}...)" in log.read_text()
