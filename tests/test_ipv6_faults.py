"""IPv6 VIPs' addresses tampered with on the hosts, with the real daemon in namespaces: what the
kernel does differently from IPv4 (one copy of an address whatever its prefix, duplicate address
detection) must not leave a VIP on no host or on two."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from labtools import settled, wait_for

from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns


def v6(lab: Lab) -> list[Any]:
    return [v for v in lab.plan.vips if v.ip.version == 6]


def test_an_ipv6_vip_replaced_by_a_copy_with_another_prefix_comes_back(
    make_lab: Callable[..., Lab],
) -> None:
    """On the master, the VIP removed and added again as a /128 before the daemon could add it
    back (here: the daemon stopped meanwhile, as a loaded host's would be descheduled). IPv4 keeps
    both copies; IPv6 only one, so the daemon's add found the copy there, and removing the copy
    (another prefix than the plan's) removed the VIP: nobody held it while its master kept
    advertising."""
    lab = make_lab(hosts=2, vips=0, vips6=2, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in v6(lab) if v.owner == "alpha")
    (proc,) = lab.procs["alpha"]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        lab.seg.run("alpha", "ip", "addr", "del", str(v.address), "dev", "eth1")
        lab.seg.run("alpha", "ip", "addr", "add", f"{v.ip}/128", "dev", "eth1", "nodad")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    wait_for(lambda: str(v.address) in lab.seg.addresses("alpha", family=6), 2.0)
    assert f"{v.ip}/128" not in lab.seg.addresses("alpha", family=6)
    time.sleep(0.5)
    assert settled(lab)(), lab.holders()
    lab.seg.run(CLIENT, "ping", "-6", "-c", "1", "-W", "1", str(v.ip))


def _reload_all(lab: Lab, text: str) -> None:
    """Write a new cluster file and reload every daemon; each must take it."""
    from click.testing import CliRunner

    from iprotate.cli import main
    from iprotate.cluster.loader import load_cluster
    from iprotate.plan.planner import make_plan

    lab.cluster_file.write_text(text)
    for n in lab.names:
        r = CliRunner().invoke(main, ["reload", "--socket", str(lab.control_socket(n))])
        assert r.exit_code == 0, r.output
    lab.plan = make_plan(load_cluster(lab.cluster_file))


def test_a_reload_turns_an_ipv4_only_cluster_dual_stack_and_back(
    make_lab: Callable[..., Lab],
) -> None:
    """Going dual-stack means every host gains its address6 and the file its IPv6 VIPs: a reload
    takes both (it refused a new address6 with "restart", so the switch cost every host a
    restart). Back to IPv4 only, the IPv6 VIPs are released and no IPv6 VIP is left anywhere."""
    lab = make_lab(hosts=2, vips=2, vips6=2, run_args=("--hold-down", "0", "--stagger", "0"))
    from iprotate.cluster.loader import load_cluster
    from iprotate.plan.planner import make_plan

    dual = lab.cluster_file.read_text()
    pool6 = '[[vips]]\npool = "2001:db8:113::10-2001:db8:113::11/64"'
    assert pool6 in dual and 'address6 = "2001:db8::1"' in dual
    v4only = "\n".join(x for x in dual.replace(pool6, "").splitlines() if "address6" not in x)
    lab.cluster_file.write_text(v4only)
    lab.plan = make_plan(load_cluster(lab.cluster_file))
    lab.start_all()
    wait_for(settled(lab), 8.0)

    _reload_all(lab, dual)
    assert len(v6(lab)) == 2
    wait_for(settled(lab), 8.0)
    for v in v6(lab):
        lab.seg.run(CLIENT, "ping", "-6", "-c", "1", "-W", "1", str(v.ip))
    # The owners hear each other over IPv6: alpha killed, bravo takes its IPv6 VIP.
    lab.kill("alpha")
    wait_for(settled(lab, {"alpha"}), 6.0)
    lab.restore("alpha")
    wait_for(settled(lab), 8.0)

    _reload_all(lab, v4only)
    wait_for(settled(lab), 4.0)
    for n in lab.names:
        assert not [a for a in lab.seg.addresses(n, family=6) if a.startswith("2001:db8:113:")]
        assert "failed" not in (lab.workdir / f"{n}.log").read_text()


def test_a_reload_to_an_address6_still_tentative_waits_for_it(make_lab: Callable[..., Lab]) -> None:
    """The new address6 in duplicate address detection when the reload comes: no IPv6 advert can
    leave from it, so its IPv6 VIPs stay with the other host until it is usable."""
    from iprotate.cluster.loader import load_cluster
    from iprotate.plan.planner import make_plan

    lab = make_lab(hosts=2, vips=2, vips6=2, run_args=("--hold-down", "0", "--stagger", "0"))
    dual = lab.cluster_file.read_text()
    pool6 = '[[vips]]\npool = "2001:db8:113::10-2001:db8:113::11/64"'
    v4only = "\n".join(x for x in dual.replace(pool6, "").splitlines() if "address6" not in x)
    lab.cluster_file.write_text(v4only)
    lab.plan = make_plan(load_cluster(lab.cluster_file))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    a6 = "2001:db8::1/64"
    lab.seg.run("alpha", "sysctl", "-qw", "net.ipv6.conf.eth1.dad_transmits=4")
    lab.seg.run("alpha", "ip", "addr", "del", a6, "dev", "eth1")
    lab.seg.run("alpha", "ip", "addr", "add", a6, "dev", "eth1")  # with DAD: tentative
    _reload_all(lab, dual)
    time.sleep(3.5)  # past the master-down time: alpha would have taken its IPv6 VIP
    shown = lab.seg.run("alpha", "ip", "-6", "addr", "show", "dev", "eth1", "to", "2001:db8::1")
    assert "tentative" in shown
    assert all(lab.holders()[str(v.ip)] == ["bravo"] for v in v6(lab)), lab.holders()
    wait_for(settled(lab), 8.0)
    log = (lab.workdir / "alpha.log").read_text()
    assert "2001:db8::1: tentative or dadfailed on eth1" in log and "back on eth1" in log


def test_a_host_with_ipv6_off_on_its_interface_takes_no_ipv6_vip(
    make_lab: Callable[..., Lab],
) -> None:
    """IPv6 disabled on alpha's interface when it starts (so its address6 is not there): no IPv6
    advert can leave and no IPv6 VIP can be added. It heard no IPv6 advert either, so it made
    itself master of every IPv6 VIP, logged a failed add and a failed advert for each of them
    every second, and its status said it held them. Its IPv6 VIPs stand aside instead, its IPv4
    ones are served; once address6 is there they come back."""
    import json

    from click.testing import CliRunner

    from iprotate.cli import main

    lab = make_lab(hosts=2, vips=2, vips6=2, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.seg.run("alpha", "sysctl", "-qw", "net.ipv6.conf.eth1.disable_ipv6=1")
    lab.start_all()
    holders = {str(v.ip): [v.owner if v.ip.version == 4 else "bravo"] for v in lab.plan.vips}
    wait_for(lambda: lab.holders() == holders, 8.0)
    time.sleep(4.0)  # past alpha's master-down time
    assert lab.holders() == holders
    r = CliRunner().invoke(main, ["status", "--json", "--socket", str(lab.control_socket("alpha"))])
    states = {v["address"]: v["state"] for v in json.loads(r.output)["vips"]}
    assert all(states[str(v.address)] != "MASTER" for v in v6(lab)), states
    log = (lab.workdir / "alpha.log").read_text()
    assert "ERROR" not in log, log
    lab.seg.run("alpha", "sysctl", "-qw", "net.ipv6.conf.eth1.disable_ipv6=0")
    lab.seg.run("alpha", "ip", "addr", "add", "2001:db8::1/64", "dev", "eth1", "nodad")
    wait_for(settled(lab), 8.0)


def test_ipv6_off_on_the_vip_interface_stands_the_ipv6_vips_aside(
    make_lab: Callable[..., Lab],
) -> None:
    """alpha adds its VIPs on a NIC of their own (eth2) where IPv6 is off: its IPv6 VIP cannot
    be added there (EACCES). It still advertised it from eth1 as its master, so nobody held it.
    Now its IPv6 VIPs stand aside (bravo serves them) while its IPv4 ones are served, and come
    back when IPv6 is on again."""
    from iprotate.lab.lab import VIP_IFACE

    lab = make_lab(
        hosts=2, vips=2, vips6=2, vip_links=("alpha",),
        run_args=("--hold-down", "0", "--stagger", "0"),
    )  # fmt: skip
    lab.seg.run("alpha", "sysctl", "-qw", f"net.ipv6.conf.{VIP_IFACE}.disable_ipv6=1")
    lab.start_all()
    holders = {str(v.ip): [v.owner if v.ip.version == 4 else "bravo"] for v in lab.plan.vips}
    wait_for(lambda: lab.holders() == holders, 8.0)
    time.sleep(4.0)  # past alpha's master-down time
    assert lab.holders() == holders
    assert "ERROR" not in (lab.workdir / "alpha.log").read_text()
    lab.seg.run("alpha", "sysctl", "-qw", f"net.ipv6.conf.{VIP_IFACE}.disable_ipv6=0")
    wait_for(settled(lab), 8.0)
    lab.seg.run("alpha", "sysctl", "-qw", f"net.ipv6.conf.{VIP_IFACE}.disable_ipv6=1")
    wait_for(lambda: lab.holders() == holders, 8.0)
