"""The benchmark's client: ping every VIP every 10 ms and note which host (MAC) answered each ping.

Run inside the lab's client namespace (bench/failover.py starts it):

    python bench/pinger.py --interface eth0 --interval 0.01 --out FILE VIP...

Requests go out through an ordinary kernel ICMP socket, so the client resolves the VIPs with its own
ARP cache and learns moves from gratuitous ARP exactly as a real client on the segment would; the
replies are read from a packet socket on the interface, because only the Ethernet header says which
host sent them. It appends one line per event to FILE (a file, not a pipe: a reader that falls
behind must never hold up the sender):

    s SEQ T                 one round: every VIP was sent request SEQ at monotonic time T
    r VIP_INDEX SEQ T MAC   a reply to request SEQ for VIPS[VIP_INDEX] arrived at T from MAC
    e VIP_INDEX SEQ ERRNO   the kernel refused to send (e.g. EHOSTUNREACH after ARP failed)

T is `time.monotonic()`, the clock the benchmark notes its faults with. It only ever sends echo
requests to the VIPs it is given (203.0.113.0/24 and 2001:db8:113::/64 in the lab), on the
interface it is given. IPv6 VIPs are pinged with ICMPv6 echo requests through an ICMPv6 socket
(the client resolves them with its own neighbour cache, and learns moves from unsolicited
neighbour advertisements), their replies read from a second packet socket.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import select
import signal
import socket
import struct
import sys
import time
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from types import FrameType

ETH_P_IP = 0x0800
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
SOL_RAW = 255
ICMP_FILTER = 1
SO_ATTACH_FILTER = 26
LAB_VIPS = IPv4Network("203.0.113.0/24")
LAB_VIPS6 = IPv6Network("2001:db8:113::/64")
ETH_P_IPV6 = 0x86DD
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ICMP6_FILTER = 1  # at level IPPROTO_ICMPV6

# The same for IPv6 frames: next header ICMPv6 (offset 14 + 6), type echo reply (14 + 40).
_BPF6 = (
    (0x30, 0, 0, 20),  # ldb [20]        next header
    (0x15, 0, 3, 58),  # jeq #58 (ICMPv6) else drop
    (0x30, 0, 0, 54),  # ldb [54]        ICMPv6 type
    (0x15, 0, 1, ICMP6_ECHO_REPLY),  # jeq #129 else drop
    (0x06, 0, 0, 0xFFFF),  # ret #65535  keep
    (0x06, 0, 0, 0),  # ret #0  drop
)

# A classic BPF program for the packet socket: keep IPv4 frames carrying ICMP (protocol byte at
# offset 14 + 9) whose ICMP type (at 14 + 20: the kernel sends no IP options) is echo reply. The
# kernel then wakes us for the replies only, not for our own 1,200 requests a second.
_BPF = (
    (0x30, 0, 0, 23),  # ldb [23]        IP protocol
    (0x15, 0, 3, 1),  # jeq #1 (ICMP)   else drop
    (0x30, 0, 0, 34),  # ldb [34]        ICMP type
    (0x15, 0, 1, ICMP_ECHO_REPLY),  # jeq #0 else drop
    (0x06, 0, 0, 0xFFFF),  # ret #65535  keep
    (0x06, 0, 0, 0),  # ret #0  drop
)


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(ident: int, seq: int, vip_index: int) -> bytes:
    """An ICMP echo request whose payload carries the full 32-bit round number and the VIP index
    (the header's 16-bit sequence would wrap after 11 minutes at 100 rounds a second)."""
    payload = struct.pack("!IH", seq, vip_index) + b"iprotate-bench"
    head = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF)
    csum = checksum(head + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, csum, ident, seq & 0xFFFF) + payload


def echo_request6(ident: int, seq: int, vip_index: int) -> bytes:
    """The ICMPv6 twin of `echo_request`; the kernel fills the checksum (over the pseudo-header,
    which only it knows the source of) for an ICMPv6 raw socket."""
    payload = struct.pack("!IH", seq, vip_index) + b"iprotate-bench"
    return struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, ident, seq & 0xFFFF) + payload


def parse_reply6(frame: bytes, ident: int) -> tuple[int, int, str] | None:
    """`parse_reply` for an IPv6 frame carrying an ICMPv6 echo reply (no extension headers)."""
    if len(frame) < 14 + 40 + 8 + 6 or frame[12:14] != b"\x86\xdd" or frame[20] != 58:
        return None
    icmp = frame[54:]
    if icmp[0] != ICMP6_ECHO_REPLY or struct.unpack("!H", icmp[4:6])[0] != ident:
        return None
    seq, vip_index = struct.unpack("!IH", icmp[8:14])
    return seq, vip_index, frame[6:12].hex(":")


def _packet_socket(interface: str, proto: int, bpf: tuple[tuple[int, int, int, int], ...]):  # type: ignore[no-untyped-def]
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter}: the kernel copies
    # the program during setsockopt, so the buffer only has to outlive that call.
    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in bpf))
    fprog = struct.pack("HL", len(bpf), ctypes.addressof(prog))
    rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    rx.bind((interface, proto))
    rx.setblocking(False)
    return rx


def parse_reply(frame: bytes, ident: int) -> tuple[int, int, str] | None:
    """(seq, vip_index, sender MAC) of one of our echo replies, or None for any other frame."""
    if len(frame) < 14 + 20 + 8 + 6 or frame[12:14] != b"\x08\x00" or frame[23] != 1:
        return None
    ihl = (frame[14] & 0x0F) * 4
    icmp = frame[14 + ihl :]
    if len(icmp) < 14 or icmp[0] != ICMP_ECHO_REPLY:
        return None
    if struct.unpack("!H", icmp[4:6])[0] != ident:
        return None
    seq, vip_index = struct.unpack("!IH", icmp[8:14])
    return seq, vip_index, frame[6:12].hex(":")


class Pinger:
    """One ICMP socket to send, one packet socket to hear who answers."""

    def __init__(self, interface: str, vips: list[IPv4Address | IPv6Address], out: str) -> None:
        for v in vips:
            # The benchmark's safety rule: lab addresses only.
            if v not in (LAB_VIPS if v.version == 4 else LAB_VIPS6):
                raise SystemExit(f"pinger: {v} is not a lab VIP ({LAB_VIPS}, {LAB_VIPS6})")
        self.vips = vips
        self.ident = os.getpid() & 0xFFFF
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        self.tx.setblocking(False)
        # Every raw ICMP socket gets a copy of every ICMP packet: filter all types out, we read
        # replies from the packet socket only.
        self.tx.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", 0xFFFFFFFF))
        self.tx6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        self.tx6.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        self.tx6.setblocking(False)
        # struct icmp6_filter: a set bit blocks that type; block all of them.
        self.tx6.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)
        self.rx = _packet_socket(interface, ETH_P_IP, _BPF)
        self.rx6 = _packet_socket(interface, ETH_P_IPV6, _BPF6)
        self.out = open(out, "a", buffering=1 << 16)  # noqa: SIM115 - closed in run()

    def run(self, interval: float) -> None:
        """Send a round every `interval` s until SIGTERM/SIGINT; log every reply as it comes."""
        stop = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        seq = 0
        due = time.monotonic()
        w = self.out.write
        try:
            while not stop:
                now = time.monotonic()
                if now >= due:
                    seq += 1
                    w(f"s {seq} {now:.6f}\n")
                    for i, v in enumerate(self.vips):
                        try:
                            if v.version == 6:
                                self.tx6.sendto(echo_request6(self.ident, seq, i), (str(v), 0))
                            else:
                                self.tx.sendto(echo_request(self.ident, seq, i), (str(v), 0))
                        except OSError as e:  # unresolved neighbour, full queue: a lost ping
                            w(f"e {i} {seq} {e.errno or errno.EIO}\n")
                    # Keep the 10 ms grid; after a stall (a busy machine) skip the missed rounds
                    # rather than burst them out, so the rate a host sees stays 100 a second.
                    due += interval
                    if due < now:
                        due = now + interval
                    self.out.flush()
                rxs = [self.rx, self.rx6]
                ready, _, _ = select.select(rxs, [], [], max(0.0, due - time.monotonic()))
                if ready:
                    self._drain()
        finally:
            self._drain()
            self.out.close()
            for s in (self.tx, self.tx6, self.rx, self.rx6):
                s.close()

    def _drain(self) -> None:
        for rx, parse in ((self.rx, parse_reply), (self.rx6, parse_reply6)):
            self._drain_one(rx, parse)

    def _drain_one(self, rx: socket.socket, parse) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                frame = rx.recv(2048)
            except BlockingIOError:
                return
            t = time.monotonic()
            r = parse(frame, self.ident)
            if r is not None and r[1] < len(self.vips):
                self.out.write(f"r {r[1]} {r[0]} {t:.6f} {r[2]}\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interface", required=True)
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--out", required=True, help="File the events are appended to.")
    ap.add_argument("vips", nargs="+", type=ip_address)
    args = ap.parse_args(argv)
    Pinger(args.interface, args.vips, args.out).run(args.interval)


if __name__ == "__main__":
    sys.exit(main())
