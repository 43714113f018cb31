"""The IPv6 CARP socket (iprotate.engine.wire6) for real, between namespaces: what the kernel
puts on the wire and what it hands the receiver, and the kernel source filter for IPv6."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from ipaddress import IPv6Address

import pytest
from labtools import wait_for

from iprotate.engine.source_filter import MAX_SOURCES, program6
from iprotate.lab.netns import Segment

pytestmark = pytest.mark.netns

CARP = bytes.fromhex("2101000700010000") + bytes(range(28))  # 36 bytes, content irrelevant here

LISTENER = textwrap.dedent(
    """
    import json, select, socket, sys, time
    from ipaddress import IPv6Address
    from iprotate.engine.wire6 import CarpSocket6
    secs, me, *hosts = sys.argv[1:]
    idx = socket.if_nametoindex("eth1")
    s = CarpSocket6("eth1", idx, IPv6Address(me), [IPv6Address(h) for h in hosts])
    s.join(IPv6Address("ff02::12"))
    print("ready", flush=True)
    seen = {}
    end = time.monotonic() + float(secs)
    while time.monotonic() < end:
        if select.select([s], [], [], 0.1)[0]:
            while (r := s.recv()) is not None:
                key = f"{r.src} {r.dst} {r.hop_limit} {r.carp.hex()}"
                seen[key] = seen.get(key, 0) + 1
    print(json.dumps(seen), flush=True)
    """
)

SENDER = textwrap.dedent(
    """
    import socket, sys
    from ipaddress import IPv6Address
    from iprotate.engine.wire6 import CarpSocket6
    me, to, count, hops, carp = sys.argv[1:]
    idx = socket.if_nametoindex("eth1")
    s = CarpSocket6("eth1", idx, IPv6Address(me), [IPv6Address(me)])
    if hops != "255":
        s.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, int(hops))
    s.sock.setblocking(True)
    for _ in range(int(count)):
        s.send(bytes.fromhex(carp), IPv6Address(to))
    """
)


def test_program6_shape() -> None:
    a, b = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
    assert len(program6([a, b, a])) == 2 * 9 + 5
    assert len(program6([IPv6Address(f"2001:db8::{i:x}") for i in range(MAX_SOURCES)])) < 4096
    with pytest.raises(ValueError):
        program6([])


def test_adverts_between_namespaces_and_the_filter() -> None:
    with Segment() as seg:
        for i, n in enumerate(("alpha", "bravo", "charlie"), start=1):
            seg.add(n, i)
        me, host, stranger = (seg.members[n].address6 for n in ("alpha", "bravo", "charlie"))
        cap = seg.spawn(
            "alpha",
            ["tcpdump", "-l", "-n", "-v", "-i", "eth1", "-c", "1", "ip6 proto 112"],
            stdout=subprocess.PIPE,
        )
        lst = seg.spawn(
            "alpha",
            [sys.executable, "-c", LISTENER, "3.0", me, host],
            stdout=subprocess.PIPE,
        )
        assert lst.stdout is not None
        assert lst.stdout.readline().strip() == b"ready"
        send = [sys.executable, "-c", SENDER]
        seg.run("bravo", *send, host, "ff02::12", "5", "255", CARP.hex())
        seg.run("bravo", *send, host, "ff02::12", "1", "1", CARP.hex())
        seg.run("charlie", *send, stranger, "ff02::12", "1280", "255", CARP.hex())
        seen = json.loads(lst.stdout.readline())
        lst.wait(timeout=10)
        assert cap.stdout is not None
        wire = cap.stdout.read().decode()
        cap.wait(timeout=5)
    # The kernel gives source, destination (the group) and hop limit; the payload as sent.
    assert seen.pop(f"{host} ff02::12 255 {CARP.hex()}") == 5
    assert seen.pop(f"{host} ff02::12 1 {CARP.hex()}") == 1  # the node drops it, not the socket
    # The stranger's 1,280 packets: the kernel filter let through a sample (1 in 64, about 20).
    sampled = seen.pop(f"{stranger} ff02::12 255 {CARP.hex()}", 0)
    assert 3 <= sampled <= 60, sampled
    assert seen == {}
    # On the wire: IPv6, next header 112, hop limit 255, from address6, 36 bytes of payload.
    assert "hlim 255, next-header VRRP (112) payload length: 36)" in wire, wire
    assert f"{host} > ff02::12" in wire, wire


def test_a_link_local_address6_sources_adverts_once_dad_is_done() -> None:
    """address6 may be the interface's link-local address: sent with its ifindex (IPV6_PKTINFO),
    received with the scope stripped. While it is tentative the kernel refuses it as a source."""
    with Segment() as seg:
        seg.add("alpha", 1)
        seg.add("bravo", 2)
        # A fresh link-local address, tentative for about a second.
        ll = "fe80::2"
        seg.run("bravo", "ip", "addr", "add", f"{ll}/64", "dev", "eth1")
        early = subprocess.run(
            ["ip", "netns", "exec", seg.members["bravo"].netns, sys.executable, "-c", SENDER,
             ll, "ff02::12", "1", "255", CARP.hex()],
            capture_output=True, text=True,
        )  # fmt: skip
        assert early.returncode != 0 and "Invalid argument" in early.stderr, early.stderr

        def usable() -> bool:
            out = seg.run("bravo", "ip", "-6", "addr", "show", "dev", "eth1", "to", ll)
            return ll in out and "tentative" not in out

        wait_for(usable, 5.0)
        lst = seg.spawn(
            "alpha", [sys.executable, "-c", LISTENER, "2.0", seg.members["alpha"].address6, ll],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert lst.stdout is not None
        assert lst.stdout.readline().strip() == b"ready"
        seg.run("bravo", sys.executable, "-c", SENDER, ll, "ff02::12", "3", "255", CARP.hex())
        seen = json.loads(lst.stdout.readline())
        lst.wait(timeout=10)
    assert seen == {f"{ll} ff02::12 255 {CARP.hex()}": 3}


BURST_RECEIVER = textwrap.dedent(
    """
    import socket, sys, time
    from ipaddress import IPv6Address
    from iprotate.engine.wire6 import CarpSocket6
    me, host, vips, wait = sys.argv[1:]
    idx = socket.if_nametoindex("eth1")
    s = CarpSocket6("eth1", idx, IPv6Address(me), [IPv6Address(host)], vips=int(vips))
    s.join(IPv6Address("ff02::12"))
    print("ready", flush=True)
    time.sleep(float(wait))  # descheduled while the whole burst arrives
    n = 0
    while s.recv() is not None:
        n += 1
    print(n, flush=True)
    """
)


def test_the_ipv6_socket_holds_a_burst_of_every_ipv6_vip_of_a_large_segment() -> None:
    """A master's adverts leave in one burst per interval (engine.wire): the IPv6 socket must hold
    one advert per IPv6 VIP, as the IPv4 one does. Its buffer was a fixed 1 MiB: 2,521 of a burst
    of 4,000 stayed, and a survivor took the other VIPs over from their live master."""
    n = 4000
    with Segment() as seg:
        seg.add("alpha", 1)
        seg.add("bravo", 2)
        me, host = seg.members["alpha"].address6, seg.members["bravo"].address6
        rx = seg.spawn(
            "alpha", [sys.executable, "-c", BURST_RECEIVER, me, host, str(n), "3"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert rx.stdout is not None
        assert rx.stdout.readline().strip() == b"ready"
        seg.run("bravo", sys.executable, "-c", SENDER, host, "ff02::12", str(n), "255", CARP.hex())
        got = int(rx.stdout.readline())
        rx.wait(timeout=10)
    assert got == n
