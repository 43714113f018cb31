"""`iprotate keepalived` and `iprotate freebsd`: golden files, the limits each engine puts on the
plan, FreeBSD's wire rules written out independently, and Debian's keepalived in namespaces."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import shutil
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from labtools import wait_for

from iprotate.carp import codec
from iprotate.carp.machine import SendAdvert
from iprotate.carp.node import Node
from iprotate.cli import main
from iprotate.cluster.loader import load_cluster, parse_cluster
from iprotate.cluster.model import ClusterError
from iprotate.export import freebsd, keepalived
from iprotate.lab.keepalived_lab import KeepalivedLab
from iprotate.plan.model import Plan
from iprotate.plan.planner import FREEBSD_MAX_ADVSKEW, make_plan

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "exports"
UPDATE = os.environ.get("IPROTATE_UPDATE_GOLDEN") == "1"


def golden(name: str, text: str) -> None:
    """`text` must equal the golden file `name` (IPROTATE_UPDATE_GOLDEN=1 rewrites it)."""
    path = FIXTURES / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs; IPROTATE_UPDATE_GOLDEN=1 to accept"


def fixture_plan(name: str) -> Plan:
    return make_plan(load_cluster(FIXTURES / name))


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


# --- keepalived ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "args", "gold"),
    [
        ("alpha", (), "keepalived-alpha.conf"),
        ("bravo", ("--unicast",), "keepalived-bravo-unicast.conf"),
        ("charlie", (), "keepalived-charlie.conf"),
    ],
)
def test_keepalived_golden(
    host: str, args: tuple[str, ...], gold: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(FIXTURES)  # the file's path, as given, is in the header
    r = cli("keepalived", "keepalived.toml", "--host", host, *args)
    assert r.exit_code == 0, r.output
    golden(gold, r.stdout)
    assert "password is not used" in r.stderr


def test_keepalived_priorities_follow_the_plan_order() -> None:
    p = fixture_plan("keepalived.toml")
    for v in p.vips:
        prios = [keepalived.priority(v.order.index(h), len(v.order)) for h in v.order]
        assert prios == sorted(prios, reverse=True) and len(set(prios)) == len(prios)
        for h in v.order:
            text = keepalived.keepalived_conf(p, h)
            name = keepalived.instance_name(v)
            block = text.split(f"vrrp_instance {name} {{", 1)[1].split("\n}", 1)[0]
            assert ("version 3" in block) == (v.address.version == 6)  # VRRPv3 for IPv6
            assert f"priority {prios[v.order.index(h)]}" in block
            assert ("nopreempt" in block) == (h == "charlie")  # charlie has preempt = false


def test_keepalived_refuses_a_mixed_cluster_with_a_clear_message(tmp_path: Path) -> None:
    doc = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [
            {"name": "a", "address": "198.51.100.1", "engine": "keepalived"},
            {"name": "b", "address": "198.51.100.2", "engine": "ucarp"},
        ],
        "vips": [{"address": "203.0.113.10/24"}],
    }
    with pytest.raises(ClusterError, match="VRRP and CARP cannot share a VIP"):
        parse_cluster(doc, "t.toml")
    # No keepalived host in the file, but a CARP engine named: the export refuses too.
    doc["hosts"][0]["engine"] = "iprotate"
    p = make_plan(parse_cluster(doc, "t.toml"))
    with pytest.raises(keepalived.KeepalivedError, match=r"CARP runs on b \(ucarp\)"):
        keepalived.keepalived_conf(p, "a")


def test_keepalived_refuses_what_vrrp_cannot_say() -> None:
    base = {
        "cluster": {"interface": "eth1", "password": "pw", "advbase": 0},
        "hosts": [{"name": "a", "address": "198.51.100.1"}],
        "vips": [{"address": "203.0.113.10/24", "group": "224.0.0.19"}],
    }
    p = make_plan(parse_cluster(base, "t.toml"))
    with pytest.raises(keepalived.KeepalivedError) as e:
        keepalived.keepalived_conf(p, "a")
    assert "advbase is 0" in str(e.value) and "group 224.0.0.19" in str(e.value)
    base["cluster"] = {"interface": "eth1", "password": "pw", "up_script": '/x" ; rm -rf "/'}
    base["vips"] = [{"address": "203.0.113.10/24"}]
    p = make_plan(parse_cluster(base, "t.toml"))
    with pytest.raises(keepalived.KeepalivedError, match="quote"):
        keepalived.keepalived_conf(p, "a")


# --- FreeBSD -------------------------------------------------------------------------------------


def test_freebsd_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    r = cli("freebsd", "freebsd.toml", "--host", "bsd1")
    assert r.exit_code == 0, r.output
    golden("freebsd-bsd1.txt", r.stdout)
    assert "mode 600" in r.stderr and "rc.conf" in r.stderr
    assert "net.inet.carp.preempt=0" in r.stdout  # bsd1 has preempt = false


def _six(engine_of_last: str, **cluster: Any) -> dict[str, Any]:
    hosts = [{"name": f"h{i}", "address": f"198.51.100.{i + 1}"} for i in range(6)]
    hosts[-1]["engine"] = engine_of_last
    return {
        "cluster": {"interface": "em0", "password": "pw", "backups": 5, **cluster},
        "hosts": hosts,
        "vips": [{"pool": "203.0.113.10-203.0.113.21/24"}],
    }


def test_freebsd_caps_the_ladder_at_240_where_it_takes_part() -> None:
    """FreeBSD accepts advskew up to 254 but sends and compares min(advskew + demotion, 240)
    (DEMOTE_ADVSKEW, CARP_MAXSKEW): the ladder stops at 240 so the plan's skews are what it
    sends."""
    linux = make_plan(parse_cluster(_six("ucarp"), "t.toml"))
    assert max(max(v.advskew) for v in linux.vips) == 255  # today's ladder for six participants
    bsd = make_plan(parse_cluster(_six("freebsd"), "t.toml"))
    for v in bsd.vips:
        assert max(v.advskew) <= FREEBSD_MAX_ADVSKEW == 240
        assert list(v.advskew) == sorted(set(v.advskew))  # still strictly ordered
    # The owners and orders do not change: only the priorities that express them.
    assert [v.order for v in bsd.vips] == [v.order for v in linux.vips]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"advbase": 0}, "FreeBSD's carp accepts advbase 1..255 only"),
        ({"dead_ratio": 4}, "FreeBSD's backups always wait 3 intervals"),
        ({"multicast": "224.0.0.19"}, "FreeBSD sends CARP to 224.0.0.18 only"),
    ],
)
def test_freebsd_limits_refuse_the_plan(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        make_plan(parse_cluster(_six("freebsd", **change), "t.toml"))
    make_plan(parse_cluster(_six("ucarp", **{**change, "advbase": 1}), "t.toml"))  # fine w/o BSD


def test_freebsd_refuses_what_rc_conf_cannot_carry() -> None:
    doc = _six("freebsd")
    doc["cluster"]["password"] = "has space"
    p = make_plan(parse_cluster(doc, "t.toml"))
    with pytest.raises(freebsd.FreebsdError, match="password"):
        freebsd.render(p, "h5")
    doc = _six("freebsd")
    doc["hosts"][-1]["vip_interface"] = "em1"
    p = make_plan(parse_cluster(doc, "t.toml"))
    with pytest.raises(freebsd.FreebsdError, match="cannot be apart"):
        freebsd.render(p, "h5")
    assert freebsd.rc_name("vlan0.100") == "vlan0_100"


def test_freebsd_preemption_is_one_switch_per_host() -> None:
    """FreeBSD's net.inet.carp.preempt is global; the plan's preempt is per host already, so every
    VIP of a host has the same preempt and the host's sysctl says it."""
    p = fixture_plan("freebsd.toml")
    for host in p.cluster.host_names:
        assert len({v.preempt_of(host) for v in p.for_host(host)}) == 1


# FreeBSD's wire rules, written from sys/netinet/ip_carp.c (not from iprotate's codec):
# - carp_input: TTL 255; at least IP header + 36 bytes; the Internet checksum over the CARP
#   header alone (in_cksum over len - iplen).
# - carp_input_c: the vhid must be configured on the receiving interface, version 2, then the
#   HMAC (carp_hmac_verify); the counter is not checked ("XXX Replay protection goes here").
#   The type nibble, authlen, source and destination are not checked.
# - carp_hmac_prepare/carp_hmac_generate: HMAC-SHA1 with the key (<= 19 bytes, zero padded)
#   over version, type, vhid, every IPv4 address of the vhid in ascending order, every IPv6 one
#   likewise, then the two counter words as they are on the wire.
# - carp_send_ad_locked: TOS IPTOS_LOWDELAY, DF, TTL 255, proto 112, to 224.0.0.18, from the
#   interface's first address; authlen 7, pad 0.


def bsd_hmac(key: bytes, vhid: int, addrs: list[Any], counter: bytes) -> bytes:
    pad = key[:19].ljust(64, b"\0")
    ipad = bytes(b ^ 0x36 for b in pad)
    opad = bytes(b ^ 0x5C for b in pad)
    inner = hashlib.sha1(ipad + bytes((2, 1, vhid)))
    for family in (4, 6):  # every IPv4 address ascending, then every IPv6 one
        for a in sorted(a for a in addrs if a.version == family):
            inner.update(a.packed)
    inner.update(counter)
    return hashlib.sha1(opad + inner.digest()).digest()


def bsd_cksum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def bsd_accepts(pkt: bytes, vhids: dict[int, tuple[bytes, list[Any]]]) -> str | None:
    """None if FreeBSD's carp_input (IPv4) or carp6_input (IPv6), then carp_input_c, would take
    `pkt`, else why it drops it."""
    v6 = pkt[0] >> 4 == 6
    if pkt[7 if v6 else 8] != 255:  # TTL, or the hop limit
        return "badttl"
    iplen = 40 if v6 else (pkt[0] & 0x0F) * 4
    if len(pkt) < iplen + 36:
        return "badlen"
    ch = pkt[iplen : iplen + 36]
    if bsd_cksum(ch) != 0:
        return "badsum"
    if ch[1] not in vhids:
        return "badvhid"
    if ch[0] >> 4 != 2:
        return "badver"
    key, addrs = vhids[ch[1]]
    if not hmac.compare_digest(bsd_hmac(key, ch[1], addrs, ch[8:16]), ch[16:36]):
        return "badauth"
    return None


def bsd_advert(src: str, vhid: int, advbase: int, advskew: int, key: bytes,
               addrs: list[IPv4Address], counter: int) -> bytes:  # fmt: skip
    """An advert as FreeBSD's carp_send_ad_locked builds it."""
    c = counter.to_bytes(8, "big")
    head = struct.pack("!BBBBBBH", 0x21, vhid, advskew, 7, 0, advbase, 0)
    ch = head + c + bsd_hmac(key, vhid, addrs, c)
    ch = ch[:6] + struct.pack("!H", bsd_cksum(ch)) + ch[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0x10, 56, 0x1234, 0x4000, 255, 112, 0,
                     IPv4Address(src).packed, IPv4Address("224.0.0.18").packed)  # fmt: skip
    ip = ip[:10] + struct.pack("!H", bsd_cksum(ip)) + ip[12:]
    return ip + ch


def bsd_advert6(src: str, vhid: int, advbase: int, advskew: int, key: bytes,
                addrs: list[Any], counter: int) -> bytes:  # fmt: skip
    """An IPv6 advert as carp_send_ad_locked builds it: hop limit 255, to ff02::12."""
    c = counter.to_bytes(8, "big")
    head = struct.pack("!BBBBBBH", 0x21, vhid, advskew, 7, 0, advbase, 0)
    ch = head + c + bsd_hmac(key, vhid, addrs, c)
    ch = ch[:6] + struct.pack("!H", bsd_cksum(ch)) + ch[8:]
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, 36, 112, 255, IPv6Address(src).packed,
                      IPv6Address("ff02::12").packed)  # fmt: skip
    return ip6 + ch


def test_iprotate_adverts_pass_freebsds_checks_and_freebsds_pass_iprotates() -> None:
    full = load_cluster(FIXTURES / "freebsd.toml")
    # The node of this branch runs IPv4 VIPs (IPv6 below, at the codec).
    p = make_plan(dataclasses.replace(full, vips=tuple(v for v in full.vips
                                                       if v.address.version == 4)))  # fmt: skip
    key = p.cluster.password
    bsd = {v.vhid: (key, [v.ip]) for v in p.for_host("bsd1")}
    node = Node.build(p, "alpha")
    node.start(0.0)
    sent = 0
    now = 0.0
    while now < 6.0 and node.deadline is not None:
        now = node.deadline
        for e in node.timers(now):
            if isinstance(e.action, SendAdvert) and e.vip.vhid in bsd:
                a = e.action
                carp = codec.encode_advert(
                    vhid=e.vip.vhid,
                    advbase=a.advbase,
                    advskew=a.advskew,
                    counter=a.counter,
                    vip=e.vip.ip,
                    password=key,
                )
                pkt = codec.build_ip_packet(IPv4Address("198.51.100.1"), e.vip.group, carp)
                assert bsd_accepts(pkt, bsd) is None
                sent += 1
    assert sent >= 4
    # A second address on the vhid changes FreeBSD's digest: the same advert then fails.
    v = p.for_host("bsd1")[0]
    pkt = codec.build_ip_packet(
        IPv4Address("198.51.100.1"),
        v.group,
        codec.encode_advert(vhid=v.vhid, advbase=1, advskew=0, counter=7, vip=v.ip, password=key),
    )
    two = {v.vhid: (key, [v.ip, IPv4Address("203.0.113.99")])}
    assert bsd_accepts(pkt, two) == "badauth"
    # FreeBSD's adverts, from bsd1, are taken by iprotate's receive path as a peer's.
    b = Node.build(p, "bravo")
    b.start(0.0)
    for i, v in enumerate(p.for_host("bsd1")):
        skew = v.advskew_of("bsd1")
        adv = bsd_advert("198.51.100.3", v.vhid, 1, skew, key, [v.ip], 1000 + i)
        assert bsd_accepts(adv, bsd) is None  # the helper agrees with itself
        before = b.counters["adverts_received"]
        if "bravo" in v.order:
            b.packet(0.5, adv)
            assert b.counters["adverts_received"] == before + 1, dict(b.counters)
    # IPv6, at the codec (carp6_input: hop limit 255, the checksum over the CARP header alone,
    # the HMAC over the VIP's 16 bytes).
    for v in (v for v in make_plan(full).vips if v.address.version == 6):
        carp = codec.encode_advert(vhid=v.vhid, advbase=1, advskew=64, counter=99, vip=v.ip,
                                   password=key)  # fmt: skip
        src6, grp6 = IPv6Address("2001:db8::1"), IPv6Address("ff02::12")
        assert (
            bsd_accepts(codec.build_ipv6_packet(src6, grp6, carp), {v.vhid: (key, [v.ip])}) is None
        )
        theirs = bsd_advert6("2001:db8::3", v.vhid, 1, 0, key, [v.ip], 1234)
        assert bsd_accepts(theirs, {v.vhid: (key, [v.ip])}) is None
        pkt6 = codec.decode_ipv6_packet(theirs)
        assert pkt6.advert.vhid == v.vhid and codec.verify(pkt6.advert, key, v.ip)
        assert not codec.verify(pkt6.advert, b"other", v.ip)
    # And a FreeBSD advert under another password is dropped by iprotate.
    v = next(v for v in p.for_host("bsd1") if "bravo" in v.order)
    bad = bsd_advert("198.51.100.3", v.vhid, 1, 0, b"other", [v.ip], 5)
    before = b.counters["adverts_received"]
    b.packet(0.6, bad)
    assert b.counters["adverts_received"] == before


# --- keepalived in namespaces --------------------------------------------------------------------


def holders_both(lab: KeepalivedLab, skip: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Which hosts hold each VIP, IPv4 and IPv6 (the lab's own view is IPv4 only); hosts in
    `skip` (killed, cable out) are not looked at."""
    out: dict[str, list[str]] = {str(v.ip): [] for v in lab.plan.vips}
    for n in lab.names:
        if n in skip:
            continue
        for fam in ("-4", "-6"):
            text = lab.seg.run(n, "ip", "-o", fam, "addr", "show", "dev", "eth1", check=False)
            for line in text.splitlines():
                ip = str(ip_address(line.split()[3].split("/")[0]))
                if ip in out:
                    out[ip].append(n)
    return out


def holds(lab: KeepalivedLab, down: set[str], killed: frozenset[str] = frozenset()) -> Any:
    """Every VIP, both families, on exactly the host the plan says with `down` failed. A host
    whose check failed is alive and looked at (it must hold none); a killed one is not."""
    want = {str(v.ip): [v.holder(down)] for v in lab.plan.vips}
    return lambda: holders_both(lab, killed) == want


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("keepalived") is None, reason="needs Debian's keepalived")
def test_keepalived_runs_the_plan_checks_and_failover(tmp_path: Path) -> None:
    """Debian's keepalived on the generated files, 3 hosts, 12 IPv4 VIPs (VRRPv2) and 3 IPv6
    ones (VRRPv3) with a check on bravo: every VIP on its planned owner; bravo's check failing
    moves its VIPs to the plan's next hosts and passing again brings them back; a killed host's
    VIPs land on the plan's next hosts."""
    flag = tmp_path / "bravo-service-down"
    script = tmp_path / "check-service"
    script.write_text(f"#!/bin/sh\ntest ! -e {flag}\n")
    script.chmod(0o755)
    # Dual-stack lab: every host has its address6, and 3 IPv6 VIPs follow the 12 IPv4 ones.
    lab = KeepalivedLab(tmp_path / "lab", hosts=3, vips=12, vips6=3)
    text = lab.cluster_file.read_text()
    text += (f'\n[[checks]]\nname = "service"\nexec = ["{script}"]\nhosts = ["bravo"]\n'
             "interval = 1\ntimeout = 1\nfall = 1\nrise = 1\n")  # fmt: skip
    lab.cluster_file.write_text(text)
    lab.plan = make_plan(load_cluster(lab.cluster_file))
    assert len(lab.plan.vips) == 15
    conf = keepalived.keepalived_conf(lab.plan, "bravo")
    assert "track_script" in conf and "version 3" in conf
    bound = 3 * lab.plan.cluster.advbase + 1 + 2.0  # VRRP's master-down, plus the lab's second
    with lab:
        lab.start_all()
        wait_for(holds(lab, set()), 20.0)
        flag.touch()
        wait_for(holds(lab, {"bravo"}), 2 + bound)  # the check's interval, then VRRP
        flag.unlink()
        wait_for(holds(lab, set()), 2 + bound)
        victim = "alpha"
        nexts = {v.holder({victim}) for v in lab.plan.vips if v.owner == victim}
        assert len(nexts) == 2  # the plan spreads alpha's VIPs over both survivors
        lab.kill(victim)
        wait_for(holds(lab, {victim}, frozenset({victim})), bound)


def test_freebsd_one_address_per_vhid_across_families() -> None:
    """On FreeBSD a vhid is one per interface for both families: an IPv4 and an IPv6 VIP with
    the same vhid on a FreeBSD host would both enter its HMAC. Refused, naming both."""
    doc: dict[str, Any] = {
        "cluster": {"interface": "em0", "password": "pw"},
        "hosts": [
            {"name": "a", "address": "198.51.100.1", "address6": "2001:db8::1"},
            {"name": "b", "address": "198.51.100.2", "address6": "2001:db8::2"},
        ],
        "vips": [{"address": "203.0.113.10/24"}, {"address": "2001:db8::a/64"}],
    }
    make_plan(parse_cluster(doc, "t.toml"))  # fine between Linux hosts: two protocols
    doc["hosts"][1]["engine"] = "freebsd"
    with pytest.raises(ClusterError, match="vhid 10 of 2001:db8::a is also the vhid of 203"):
        make_plan(parse_cluster(doc, "t.toml"))
    doc["vips"][1]["vhid"] = 11
    make_plan(parse_cluster(doc, "t.toml"))


def test_keepalived_refuses_check_words_it_would_split() -> None:
    doc: dict[str, Any] = {
        "cluster": {"interface": "eth1", "password": "pw"},
        "hosts": [{"name": "a", "address": "198.51.100.1"}],
        "vips": [{"address": "203.0.113.10/24"}],
        "checks": [{"name": "c", "exec": ["/usr/bin/test", "-e", "/run/my file"]}],
    }
    with pytest.raises(keepalived.KeepalivedError, match="cannot be one word"):
        keepalived.keepalived_conf(make_plan(parse_cluster(doc, "t.toml")), "a")
    doc["checks"] = [{"name": "c", "exec": ["/usr/bin/true"], "user": "no body"}]
    with pytest.raises(keepalived.KeepalivedError, match="not a user name"):
        keepalived.keepalived_conf(make_plan(parse_cluster(doc, "t.toml")), "a")


@pytest.mark.parametrize("iface", ["eth}0", "e{th", 'et"h', "#eth", "!eth", "eth\\0"])
def test_keepalived_refuses_an_interface_its_parser_would_split(iface: str) -> None:
    """Linux allows braces, quotes, '#' and '!' in an interface name (only '/', ':' and blanks
    are out), and so does the cluster file; keepalived's parser splits a word at a brace or a
    quote and reads '#'/'!' as a comment: `interface eth}0` would close the vrrp_instance."""
    for key in ("interface", "vip_interface"):
        doc = {
            "cluster": {"interface": "eth1", "password": "pw", key: iface},
            "hosts": [{"name": "a", "address": "198.51.100.1"}],
            "vips": [{"address": "203.0.113.10/24"}],
        }
        p = make_plan(parse_cluster(doc, "t.toml"))
        with pytest.raises(keepalived.KeepalivedError, match=f"{key} .*rename the interface"):
            keepalived.keepalived_conf(p, "a")


@pytest.mark.parametrize(
    ("command", "engine"),
    [("freebsd", "freebsd"), ("keepalived", "keepalived"), ("ucarp", "ucarp")],
)
def test_a_newline_in_the_cluster_file_name_never_becomes_a_line(
    tmp_path: Path, command: str, engine: str
) -> None:
    """rc.conf is sourced by sh and /etc/network/interfaces read by ifupdown: a cluster file
    named "c<newline>reboot<newline>.toml" put `reboot` on a line of its own in the header."""
    name = tmp_path / "c\nreboot\n.toml"
    name.write_text(
        '[cluster]\ninterface = "em0"\npassword = "pw"\n'
        f'[[hosts]]\nname = "a"\naddress = "198.51.100.1"\nengine = "{engine}"\n'
        '[[hosts]]\nname = "b"\naddress = "198.51.100.2"\nengine = "' + engine + '"\n'
        '[[vips]]\naddress = "203.0.113.10/24"\n'
    )
    extra = ["--format", "ifupdown"] if command == "ucarp" else []
    r = cli(command, str(name), "--host", "a", *extra)
    assert r.exit_code == 0, r.output
    assert "reboot" in r.stdout and "\nreboot\n" not in r.stdout
    assert all(line.startswith("#") or "reboot" not in line for line in r.stdout.splitlines())
