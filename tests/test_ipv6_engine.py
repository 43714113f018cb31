"""IPv6 VIPs with the real daemon, in namespaces: a dual-stack cluster of 3 hosts with IPv4 and
IPv6 VIPs. A failed owner's IPv6 VIPs answer from the planned next host within the protocol's
bound, and the client's neighbour cache follows the unsolicited NAs without re-resolving; a clean
stop, drain and undrain lose no ping; status, drain --vip and cleanup take IPv6 VIPs; a mixed
cluster with a ucarp host leaves it out of the IPv6 VIPs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from labtools import WIRE_TOOL, settled, takeover_bound, wait_for

from iprotate.cli import main
from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def client_mac6(lab: Lab, vip: object) -> str | None:
    """The client's neighbour entry for an IPv6 VIP: the MAC it sends to, whatever its state."""
    out = lab.seg.run(CLIENT, "ip", "-6", "neigh", "show", str(vip), "dev", "eth0")
    m = re.search(r"lladdr (\S+)", out)
    return m.group(1) if m else None


def pings(lab: Lab, vips: list[str], seconds: float) -> list[subprocess.Popen[bytes]]:
    """The client pinging each VIP every 10 ms for `seconds` (ping's summary counts losses)."""
    argv = ["ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", str(int(seconds * 100))]
    return [lab.seg.spawn(CLIENT, [*argv, v], stdout=subprocess.PIPE) for v in vips]


def lost(procs: list[subprocess.Popen[bytes]]) -> dict[str, int]:
    out = {}
    for p in procs:
        text = p.communicate(timeout=60)[0].decode()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
        assert m, text
        out[text.split("---")[1].split()[0]] = int(m.group(1)) - int(m.group(2))
    return out


def v6(lab: Lab) -> list:  # type: ignore[type-arg]
    return [v for v in lab.plan.vips if v.ip.version == 6]


def test_dual_stack_owner_fails_and_returns(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=3, vips6=6)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    # The client reaches every IPv6 VIP at its owner's MAC.
    for v in v6(lab):
        lab.seg.run(CLIENT, "ping", "-6", "-c", "1", "-W", "1", str(v.ip))
        assert client_mac6(lab, v.ip) == lab.seg.members[v.owner].mac, v.address

    owner = lab.names[0]
    mine = [v for v in v6(lab) if v.owner == owner]
    assert mine
    lab.kill(owner)
    took = wait_for(settled(lab, {owner}), 10.0)
    assert took <= takeover_bound(lab, owner) + 0.5
    # The new holders' unsolicited NAs moved the client's entries: no new solicitation needed.
    for v in mine:
        new = lab.seg.members[v.holder({owner})].mac
        wait_for(lambda v=v, new=new: client_mac6(lab, v.ip) == new, 0.5)
        lab.seg.run(CLIENT, "ping", "-6", "-c", "1", "-W", "1", str(v.ip))

    lab.restore(owner)
    wait_for(settled(lab), 8.0)
    for v in mine:
        wait_for(lambda v=v: client_mac6(lab, v.ip) == lab.seg.members[owner].mac, 2.0)
    # The IPv6 VIPs were added without DAD: never tentative, never dadfailed.
    for n in lab.names:
        shown = lab.seg.run(n, "ip", "-6", "addr", "show", "dev", "eth1")
        assert "tentative" not in shown.replace("scope link tentative", "")
        assert "dadfailed" not in shown


def test_ipv6_clean_stop_drain_and_undrain_lose_no_ping(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=1, vips6=6, run_args=("--hold-down", "1", "--stagger", "0.2"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    host = lab.names[0]
    mine = [str(v.ip) for v in v6(lab) if v.owner == host]
    sock = str(lab.control_socket(host))

    ping = pings(lab, mine, 3.0)
    time.sleep(0.5)
    code, out = cli("drain", "--socket", sock)
    assert code == 0, out
    wait_for(settled(lab, {host}), 3.0)
    assert lost(ping) == dict.fromkeys(mine, 0)

    ping = pings(lab, mine, 4.0)
    time.sleep(0.5)
    code, out = cli("undrain", "--socket", sock)
    assert code == 0, out
    wait_for(settled(lab), 4.0)
    assert lost(ping) == dict.fromkeys(mine, 0)

    # One IPv6 VIP alone, by its address.
    one = mine[0]
    code, out = cli("drain", "--socket", sock, "--vip", one)
    assert code == 0 and one in out, out
    wait_for(lambda: lab.holders()[one] == [lab.vip(one).holder({host})], 3.0)
    code, out = cli("undrain", "--socket", sock, "--vip", one)
    assert code == 0, out
    wait_for(settled(lab), 4.0)

    # A clean stop hands every VIP over before letting go.
    ping = pings(lab, mine, 2.5)
    time.sleep(0.5)
    assert lab.stop(host) == [0]
    wait_for(settled(lab, {host}), 2.0)
    assert lost(ping) == dict.fromkeys(mine, 0)
    assert lab.seg.addresses(host, family=6) == ["2001:db8::1/64"]


def test_ipv6_status_and_cleanup(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=1, vips6=3)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    code, out = cli("status", "--json", "--socket", str(lab.control_socket("alpha")))
    doc = json.loads(out)
    assert code == 0, doc["problems"]
    seen = {v["address"]: v["master"] for v in doc["vips"]}
    for v in v6(lab):
        assert seen[str(v.address)] == [v.owner]
    # An IPv6 VIP added by hand on a backup (with DAD: tentative, then dadfailed, as its master
    # has it) answers nobody and is no VIP of that host: removed.
    v = next(v for v in v6(lab) if v.owner == "alpha")
    lab.seg.run("bravo", "ip", "addr", "add", str(v.address), "dev", "eth1")
    wait_for(lambda: lab.holders()[str(v.ip)] == ["alpha"], 3.0)
    assert (
        f"{v.address}: tentative or dadfailed on eth1: removed"
        in (lab.workdir / "bravo.log").read_text()
    )
    # A killed daemon leaves its IPv6 VIPs behind; `iprotate cleanup` removes them.
    (proc,) = lab.procs.pop("alpha")
    lab.seg.stop(proc, signal.SIGKILL)
    left = lab.seg.addresses("alpha", family=6)
    assert any(a.startswith("2001:db8:113::") for a in left), left
    lab.seg.run("alpha", *lab.run_argv("alpha")[:3], "cleanup", str(lab.cluster_file),
                "--host", "alpha")  # fmt: skip
    assert lab.seg.addresses("alpha", family=6) == ["2001:db8::1/64"]


@pytest.mark.ucarp
def test_a_ucarp_host_keeps_its_ipv4_vips_and_takes_no_ipv6_one(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=3, vips=6, vips6=4, legacy=1)
    legacy = lab.names[-1]
    assert all(legacy not in v.order for v in v6(lab))
    assert any(v.owner == legacy for v in lab.plan.vips if v.ip.version == 4)
    lab.start_all()
    wait_for(settled(lab), 10.0)
    # A native host fails: its IPv6 VIPs go to the other native host, never to ucarp.
    native = lab.names[0]
    lab.kill(native)
    wait_for(settled(lab, {native}), 10.0)
    assert not [a for a in lab.seg.addresses(legacy, family=6) if a.startswith("2001:db8:113:")]
    lab.restore(native)
    wait_for(settled(lab), 10.0)


def test_address6_removed_or_tentative_stands_only_the_ipv6_vips_aside(
    make_lab: Callable[..., Lab],
) -> None:
    """Our address6 is the IPv6 adverts' source: removed, its IPv6 VIPs go to the next host and
    the IPv4 ones stay; added back with duplicate address detection it is tentative (unusable)
    for about a second, and the VIPs come back once it is not."""
    lab = make_lab(hosts=2, vips=2, vips6=2, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    host = lab.names[0]
    a6 = f"{lab.plan.cluster.host(host).address6}/64"
    mine4 = [str(v.ip) for v in lab.plan.vips if v.owner == host and v.ip.version == 4]
    assert mine4 and any(v.owner == host for v in v6(lab))
    lab.seg.run(host, "ip", "addr", "del", a6, "dev", "eth1")

    def moved() -> bool:
        h = lab.holders()
        return all(h[str(v.ip)] == [v.holder({host})] for v in v6(lab)) and all(
            h[ip] == [host] for ip in mine4
        )

    wait_for(moved, takeover_bound(lab, host) + 1.0)
    lab.seg.run(host, "ip", "addr", "add", a6, "dev", "eth1")  # with DAD: tentative at first
    assert "tentative" in lab.seg.run(host, "ip", "-6", "addr", "show", "dev", "eth1")
    time.sleep(0.5)
    assert moved()  # not back while tentative
    wait_for(settled(lab), 6.0)
    log = (lab.workdir / f"{host}.log").read_text()
    assert f"{a6.split('/')[0]}: removed from eth1" in log and "back on eth1" in log


def _replan(lab: Lab, text: str) -> None:
    """Write a new cluster file, reload every daemon, and expect the new plan."""
    from iprotate.cluster.loader import load_cluster
    from iprotate.plan.planner import make_plan

    lab.cluster_file.write_text(text)
    for n in lab.names:
        code, out = cli("reload", "--socket", str(lab.control_socket(n)))
        assert code == 0, out
    lab.plan = make_plan(load_cluster(lab.cluster_file))


def test_reload_drops_and_brings_back_every_ipv6_vip(make_lab: Callable[..., Lab]) -> None:
    """The IPv6 socket exists only while the plan has IPv6 VIPs: a reload without them releases
    them (and closes it), a reload with them back opens it again and takes them."""
    lab = make_lab(hosts=2, vips=2, vips6=2)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    dual = lab.cluster_file.read_text()
    pool6 = '[[vips]]\npool = "2001:db8:113::10-2001:db8:113::11/64"'
    assert pool6 in dual
    _replan(lab, dual.replace(pool6, ""))
    wait_for(lambda: not any(a.startswith("2001:db8:113:") for n in lab.names
                             for a in lab.seg.addresses(n, family=6)), 3.0)  # fmt: skip
    wait_for(settled(lab), 3.0)
    _replan(lab, dual)
    wait_for(settled(lab), 8.0)


def test_interface_recreated_rebuilds_the_ipv6_socket(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=1, vips6=3, run_args=("--hold-down", "1"))
    lab.start_all()
    wait_for(settled(lab), 10.0)
    host = lab.names[0]
    lab.seg.recreate(host, gap=0.5)
    # Rejoined on the new index: heard over IPv6 again, it takes its IPv6 VIPs back.
    wait_for(settled(lab), 10.0)
    assert "eth1: re-created" in (lab.workdir / f"{host}.log").read_text()
    for v in v6(lab):
        lab.seg.run(CLIENT, "ping", "-6", "-c", "1", "-W", "1", str(v.ip))


def test_a_daemon_started_while_its_address6_is_tentative_waits_for_it(
    make_lab: Callable[..., Lab],
) -> None:
    """A fresh boot: address6 still in duplicate address detection when the daemon starts. No
    IPv6 advert could leave, so the IPv6 VIPs are not taken (the IPv4 ones are) until it is
    usable."""
    lab = make_lab(hosts=2, vips=1, vips6=2, run_args=("--hold-down", "0"))
    host = lab.names[0]
    a6 = f"{lab.plan.cluster.host(host).address6}/64"
    lab.seg.run(host, "sysctl", "-qw", "net.ipv6.conf.eth1.dad_transmits=30")
    lab.seg.run(host, "ip", "addr", "del", a6, "dev", "eth1")
    lab.seg.run(host, "ip", "addr", "add", a6, "dev", "eth1")
    lab.start(host)  # alone: it takes every VIP it can
    mine4 = [str(v.ip) for v in lab.plan.vips if v.ip.version == 4]
    wait_for(lambda: all(lab.holders()[ip] == [host] for ip in mine4), 8.0)
    time.sleep(0.5)
    assert "tentative" in lab.seg.run(host, "ip", "-6", "addr", "show", "dev", "eth1", "to", a6)
    assert not [a for a in lab.seg.addresses(host, family=6) if a.startswith("2001:db8:113:")]
    # Usable now (added again without DAD): the IPv6 VIPs follow.
    lab.seg.run(host, "ip", "addr", "del", a6, "dev", "eth1")
    lab.seg.run(host, "ip", "addr", "add", a6, "dev", "eth1", "nodad")
    wait_for(lambda: all(lab.holders()[str(v.ip)] == [host] for v in v6(lab)), 6.0)
    assert "failed" not in (lab.workdir / f"{host}.log").read_text()


def _nas(lab: Lab, seconds: float) -> subprocess.Popen[bytes]:
    argv = [sys.executable, WIRE_TOOL, "na", "eth0", "-", str(seconds)]
    return lab.seg.spawn(CLIENT, argv, stdout=subprocess.PIPE)


def _lines(p: subprocess.Popen[bytes]) -> list[tuple[float, str, str]]:
    out = p.communicate(timeout=30)[0].decode().split("\n")
    return [(float(t), ip, mac) for t, ip, mac in (x.split() for x in out if x)]


def test_unsolicited_nas_go_out_when_gratuitous_arps_would(make_lab: Callable[..., Lab]) -> None:
    """A takeover sends one NA at once and one about two intervals later (ucarp's gratuitous
    ARPs); `--garp-refresh` repeats them while master."""
    lab = make_lab(hosts=2, vips=0, vips6=2)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    owner = lab.names[0]
    mine = [v for v in v6(lab) if v.owner == owner]
    time.sleep(2.5)  # past the second NA of the start-up takeovers
    cap = _nas(lab, 6.5)
    time.sleep(0.3)
    t0 = time.monotonic()
    lab.kill(owner)
    wait_for(settled(lab, {owner}), 6.0)
    seen = _lines(cap)
    for v in mine:
        new = lab.seg.members[v.holder({owner})].mac
        times = [t - t0 for t, ip, mac in seen if ip == str(v.ip) and mac == new]
        assert len(times) == 2, (v.address, seen)
        assert 1.5 < times[1] - times[0] < 2.6, times  # about two intervals (advbase 1)
        assert not [x for x in seen if x[1] == str(v.ip) and x[2] != new]

    lab2 = make_lab(hosts=2, vips=0, vips6=2, run_args=("--garp-refresh", "1"))
    lab2.start_all()
    wait_for(settled(lab2), 8.0)
    time.sleep(3.0)  # past the two of the takeover
    seen = _lines(_nas(lab2, 3.3))
    for v in v6(lab2):
        macs = [mac for _, ip, mac in seen if ip == str(v.ip)]
        assert len(macs) >= 3 and set(macs) == {lab2.seg.members[v.owner].mac}, seen
