"""Run inside a test namespace: send crafted CARP packets, or capture real ones.

    python wire_tool.py send IFACE GROUP HEX [HEX ...]    one raw IPv4 packet per HEX (IP_HDRINCL)
    python wire_tool.py capture IFACE GROUP SECONDS        print the hex of every CARP packet seen
    python wire_tool.py garp IFACE - SECONDS               print "time vip mac" per gratuitous ARP
    python wire_tool.py na IFACE - SECONDS                 the same per unsolicited NA (IPv6)
    python wire_tool.py send6 IFACE MAC HEX [HEX ...]      one whole IPv6 packet per HEX, framed
                                                           to MAC ("-": the group's multicast MAC)
    python wire_tool.py capture6 IFACE - SECONDS           print the hex of every IPv6 CARP packet

Only ever sends to the CARP group on the test's own interface.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time


def _join(s: socket.socket, iface: str, group: str) -> None:
    ifindex = socket.if_nametoindex(iface)
    mreqn = struct.pack("=4s4si", socket.inet_aton(group), b"\0" * 4, ifindex)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())


def send(iface: str, group: str, packets: list[str]) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # IP_HDRINCL implied
    _join(s, iface, group)
    for h in packets:
        s.sendto(bytes.fromhex(h), (group, 0))


def capture(iface: str, group: str, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    _join(s, iface, group)
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if select.select([s], [], [], left)[0]:
            print(s.recv(2048).hex(), flush=True)


def garp(iface: str, seconds: float) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((iface, 0x0806))
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if select.select([s], [], [], left)[0]:
            f = s.recv(128)
            # An ARP request whose sender and target IP are the same: gratuitous.
            if len(f) >= 42 and f[20:22] == b"\x00\x01" and f[28:32] == f[38:42]:
                mac = ":".join(f"{b:02x}" for b in f[22:28])
                print(f"{time.monotonic():.3f} {socket.inet_ntoa(f[28:32])} {mac}", flush=True)


def na(iface: str, seconds: float) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
    s.bind((iface, 0x86DD))
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if select.select([s], [], [], left)[0]:
            f = s.recv(256)
            # ICMPv6 (next header 58) type 136 to ff02::1: an unsolicited neighbour advertisement.
            if len(f) >= 78 and f[20] == 58 and f[54] == 136 and f[38:54] == ALL_NODES:
                mac = ":".join(f"{b:02x}" for b in f[6:12])
                target = socket.inet_ntop(socket.AF_INET6, f[62:78])
                print(f"{time.monotonic():.3f} {target} {mac}", flush=True)


ALL_NODES = socket.inet_pton(socket.AF_INET6, "ff02::1")


def send6(iface: str, mac: str, packets: list[str]) -> None:
    """Whole IPv6 packets (any source, hop limit, extension headers) in Ethernet frames from our
    MAC: the kernel's IPv6 stack never sees them, so nothing is rewritten on the way out."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    own = s.getsockname()[4][:6]
    for h in packets:
        pkt = bytes.fromhex(h)
        # "-": 33:33 and the group's last four bytes (RFC 2464)
        to = b"\x33\x33" + pkt[36:40] if mac == "-" else bytes.fromhex(mac.replace(":", ""))
        s.send(to + own + b"\x86\xdd" + pkt)


def capture6(iface: str, seconds: float) -> None:
    """Every IPv6 packet whose next header is CARP (112), whole, as seen on the wire."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
    s.bind((iface, 0x86DD))
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if select.select([s], [], [], left)[0]:
            f = s.recv(2048)
            if len(f) >= 54 and f[20] == 112:
                print(f[14:].hex(), flush=True)


if __name__ == "__main__":
    cmd, iface, group, *rest = sys.argv[1:]
    if cmd == "send":
        send(iface, group, rest)
    elif cmd == "garp":
        garp(iface, float(rest[0]))
    elif cmd == "na":
        na(iface, float(rest[0]))
    elif cmd == "send6":
        send6(iface, group, rest)
    elif cmd == "capture6":
        capture6(iface, float(rest[0]))
    else:
        capture(iface, group, float(rest[0]))
