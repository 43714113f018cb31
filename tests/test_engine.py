"""The engine for real: `iprotate run` in network namespaces, real sockets, a real client.

Each test builds its own lab (a bridge, host namespaces and a client, all named uniquely and
removed afterwards, also on failure) and checks what the hosts have configured and what the client
sees. Timing bounds come from the protocol (CARP.md), not from guesses.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
from labtools import (
    WIRE_TOOL,
    client_mac,
    settled,
    status_counters,
    takeover_bound,
    wait_for,
)

from iprotate.carp import codec
from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns


def test_owner_fails_and_returns(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=9)
    lab.start_all()
    wait_for(settled(lab), 8.0)

    # The client reaches every VIP at its owner's MAC.
    for v in lab.plan.vips:
        lab.seg.run(CLIENT, "ping", "-c", "1", "-W", "1", str(v.ip))
        assert client_mac(lab, v.ip) == lab.seg.members[v.owner].mac, v.address

    owner = lab.names[0]
    mine = [v for v in lab.plan.vips if v.owner == owner]
    assert mine
    lab.kill(owner)
    took = wait_for(settled(lab, {owner}), 10.0)
    assert took <= takeover_bound(lab, owner) + 0.5
    # The new holders announced themselves: the client's entries moved without a new ARP query.
    for v in mine:
        assert client_mac(lab, v.ip) == lab.seg.members[v.holder({owner})].mac, v.address

    lab.restore(owner)
    wait_for(settled(lab), 8.0)
    for v in mine:
        wait_for(lambda v=v: client_mac(lab, v.ip) == lab.seg.members[owner].mac, 2.0)


def test_clean_stop_hands_over_before_the_timeout(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=9)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    leaving = lab.names[1]
    t0 = time.monotonic()
    codes = lab.stop(leaving)
    wait_for(settled(lab, {leaving}), 3.0, step=0.01)
    took = time.monotonic() - t0
    assert codes == [0]
    assert took < 1.0 < takeover_bound(lab, leaving)
    assert lab.seg.addresses(leaving) == ["198.51.100.2/24"]


def test_restart_after_sigkill_removes_leftovers(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=4)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    host = lab.names[0]
    (proc,) = lab.procs.pop(host)
    lab.seg.stop(proc, signal.SIGKILL)  # the cable stays in: the addresses stay behind
    lab.seg.link(host, False)
    wait_for(settled(lab, {host}), 8.0)
    assert any(a.startswith("203.0.113.") for a in lab.seg.addresses(host))
    lab.restore(host)  # cable in, engine started: it must clean up before it takes part
    wait_for(settled(lab), 8.0)


def test_link_down_releases_and_link_up_rejoins(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=2, vips=4)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    host = lab.names[0]
    lab.seg.link(host, False)  # the engine keeps running
    wait_for(lambda: not any(a.startswith("203.") for a in lab.seg.addresses(host)), 2.0)
    wait_for(settled(lab, {host}), 8.0)
    lab.seg.link(host, True)
    wait_for(settled(lab), 8.0)
    assert lab.running(host)


def _advert(vip: Any, src: str, password: bytes, **over: Any) -> bytes:
    """A whole IP packet advertising `vip` with a priority better than any host's."""
    fields = {"vhid": vip.vhid, "advbase": 0, "advskew": 1, "counter": 1 << 62}
    fields.update({k: v for k, v in over.items() if k in fields})
    carp = codec.encode_advert(vip=vip.ip, password=password, **fields)
    carp = carp[: over.get("cut", 36)] + b"\0" * over.get("pad", 0)
    return codec.build_ip_packet(IPv4Address(src), vip.group, carp, ttl=over.get("ttl", 255))


def test_bad_packets_are_dropped_and_counted(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=3)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    owner = lab.names[0]
    v = next(v for v in lab.plan.vips if v.owner == owner)
    pw = lab.plan.cluster.password
    # Sent in the name of a host of the cluster (the kernel filter drops strangers before any of
    # these checks): each is dropped for its own reason. "forged": a valid CARP digest, but the
    # counter carries no tag of charlie's (how a rewritten priority looks).
    charlie = str(lab.plan.cluster.host(lab.names[2]).address)
    bad = {
        "bad_digest": _advert(v, charlie, b"wrong-password"),
        "unknown_vhid": _advert(v, charlie, pw, vhid=200),
        "bad_ttl": _advert(v, charlie, pw, ttl=254),
        "short": _advert(v, charlie, pw, cut=30),
        "long": _advert(v, charlie, pw, pad=4),
        "forged": _advert(v, charlie, pw),
    }
    before = status_counters(lab, owner)
    for _ in range(3):
        lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "send", "eth0", str(v.group),
                    *(p.hex() for p in bad.values()))  # fmt: skip
        time.sleep(0.2)
    time.sleep(1.0)
    assert settled(lab)(), "a bad packet changed who holds a VIP"
    after = status_counters(lab, owner)
    for reason in bad:
        assert after.get(f"drop_{reason}", 0) - before.get(f"drop_{reason}", 0) == 3, reason
    assert after.get("to_backup", 0) == before.get("to_backup", 0)


def test_replayed_adverts_do_not_hold_off_a_takeover(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=3)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    owner = lab.names[0]
    v = next(v for v in lab.plan.vips if v.owner == owner)
    src = str(lab.plan.cluster.host(owner).address)
    out = lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "capture", "eth0", str(v.group), "2.5")
    captured = []
    for h in out.split():
        p = codec.decode_packet(bytes.fromhex(h))
        if str(p.src) == src and p.advert.vhid == v.vhid:
            captured.append(h)
    assert captured, "no advert of the owner captured"

    # The owner dies (cable in, so only its adverts stop); an attacker replays what it said.
    (proc,) = lab.procs.pop(owner)
    lab.seg.stop(proc, signal.SIGKILL)
    t0 = time.monotonic()
    rank1 = v.order[1]
    while time.monotonic() - t0 < takeover_bound(lab, owner) + 0.5:
        lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "send", "eth0", str(v.group), *captured)
        if str(v.address) in lab.seg.addresses(rank1):
            break
        time.sleep(0.3)
    assert str(v.address) in lab.seg.addresses(rank1), "the replayed adverts held it off"
    assert status_counters(lab, rank1).get("drop_replay", 0) >= 1


def test_subsecond_failover(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(hosts=3, vips=3, advbase=0)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    owner = lab.names[0]
    v = next(v for v in lab.plan.vips if v.owner == owner)
    rank1 = v.order[1]
    (proc,) = lab.procs.pop(owner)
    os.kill(proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    lab.seg.link(owner, False)
    took = wait_for(lambda: str(v.address) in lab.seg.addresses(rank1), 2.0, step=0.005)
    proc.wait()
    assert took < 0.3, f"sub-second failover took {took:.3f} s"
    assert time.monotonic() - t0 >= took


@pytest.mark.ucarp
def test_mixed_cluster_with_ucarp(make_lab: Callable[..., Lab]) -> None:
    """Two native hosts and one running the generated lines under Debian's ucarp."""
    lab = make_lab(hosts=3, vips=9, legacy=1)
    legacy = lab.names[-1]
    native = lab.names[0]
    assert lab.plan.cluster.host(legacy).engine == "ucarp"
    lab.start_all()
    wait_for(settled(lab), 10.0)

    # ucarp reacts to the wire up to ~1 s late (pcap's timeout) and checks its timer only when it
    # wakes, up to one interval after D (CARP.md): it gets that much more time than a native host.
    ucarp_lag = 1.0 + lab.plan.cluster.advbase + 0.5
    for failed in (legacy, native):
        lab.kill(failed)
        bound = takeover_bound(lab, failed)
        heirs = {v.holder({failed}) for v in lab.plan.vips if v.owner == failed}
        slack = ucarp_lag if legacy in heirs else 0.5
        took = wait_for(settled(lab, {failed}), bound + slack + 2.0)
        assert took <= bound + slack, f"{failed}'s VIPs took {took:.2f} s"
        lab.restore(failed)
        wait_for(settled(lab), 10.0)


def test_run_refuses_clearly_without_an_interface_or_a_host(make_lab: Callable[..., Lab]) -> None:
    import subprocess

    lab = make_lab(hosts=2, vips=2)
    bad = lab.workdir / "bad.toml"
    bad.write_text(lab.cluster_file.read_text().replace('interface = "eth1"', 'interface = "eth9"'))

    def run(member: str, path: str, *more: str) -> subprocess.CompletedProcess[str]:
        argv = ["ip", "netns", "exec", lab.seg.members[member].netns, sys.executable, "-m"]
        argv += ["iprotate", "run", path, "--control-socket", "", *more]
        return subprocess.run(argv, capture_output=True, text=True, timeout=20)

    r = run("alpha", str(bad))
    assert r.returncode == 1 and "interface 'eth9' not found" in r.stderr, r.stderr
    r = run(CLIENT, str(lab.cluster_file))
    assert r.returncode == 1 and "no host of the cluster file" in r.stderr, r.stderr
    r = run("alpha", str(lab.cluster_file), "--host", "nosuch")
    assert r.returncode == 2 and "nosuch" in r.stderr, r.stderr
    assert lab.holders() == {str(v.ip): [] for v in lab.plan.vips}


def test_a_vip_removed_behind_its_back_comes_back_and_others_stay(
    make_lab: Callable[..., Lab],
) -> None:
    """VIPs of one subnet are secondaries of the first one added: handing that one back must not
    take the others with it, and an address someone deletes while we are master comes back."""
    lab = make_lab(hosts=2, vips=6)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    host = "alpha"
    mine = [a for a in lab.seg.addresses(host) if a.startswith("203.")]
    assert len(mine) >= 2
    primary = mine[0]  # the first one listed is the subnet's primary
    lab.seg.run(host, "ip", "addr", "del", primary, "dev", "eth1")
    wait_for(lambda: set(mine) <= set(lab.seg.addresses(host)), 2.0)
    assert settled(lab)()
    assert status_counters(lab, host).get("addresses_restored", 0) >= 1
    # Drain just the primary: the other VIPs stay where they are.
    primary_ip = primary.split("/")[0]
    from iprotate.engine.control import request

    request(str(lab.control_socket(host)), {"cmd": "drain", "vip": primary_ip})
    v = lab.vip(primary_ip)
    wait_for(lambda: lab.holders()[primary_ip] == [v.order[1]], 3.0)
    time.sleep(0.5)
    assert set(mine) - {primary} <= set(lab.seg.addresses(host))
    # ... because the daemon had the kernel promote secondaries on its VIP interface.
    conf = "/proc/sys/net/ipv4/conf/eth1/promote_secondaries"
    assert lab.seg.run(host, "cat", conf).strip() == "1"
