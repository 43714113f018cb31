"""A client's view of who holds each VIP: which MAC answers an ARP request for it.

Run inside a client namespace (`python -m iprotate.lab.probe --interface eth0 VIP...`); every
round it asks for every VIP and prints one JSON line,
`{"t": <monotonic>, "macs": {vip: [mac, ...]}}`, so the lab, the tests and the benchmarks see
several answers (two masters) and none (unserved) alike.
It only ever sends ARP requests on its own interface, for the VIPs it is given.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time
from ipaddress import IPv4Address

import click

ETH_P_ARP = 0x0806


def arp_request(mac: bytes, src: IPv4Address, target: IPv4Address) -> bytes:
    """A broadcast ARP request from (mac, src) for `target`."""
    eth = b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + src.packed + b"\x00" * 6 + target.packed
    return eth + arp


def parse_reply(frame: bytes) -> tuple[IPv4Address, str] | None:
    """(sender IP, sender MAC) of an ARP reply frame, or None for anything else."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x02":
        return None
    mac = ":".join(f"{b:02x}" for b in frame[22:28])
    return IPv4Address(frame[28:32]), mac


def probe_rounds(interface: str, src: IPv4Address, vips: list[IPv4Address], period: float):  # type: ignore[no-untyped-def]
    """Yield (t, {vip: sorted MACs}) once per `period`, forever."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((interface, ETH_P_ARP))
    mac = s.getsockname()[4][:6]
    wanted = set(vips)
    try:
        while True:
            start = time.monotonic()
            for v in vips:
                s.send(arp_request(mac, src, v))
            seen: dict[IPv4Address, set[str]] = {v: set() for v in vips}
            end = start + period
            while (left := end - time.monotonic()) > 0:
                ready, _, _ = select.select([s], [], [], left)
                if not ready:
                    break
                r = parse_reply(s.recv(128))
                if r is not None and r[0] in wanted:
                    seen[r[0]].add(r[1])
            yield start, {str(v): sorted(m) for v, m in seen.items()}
    finally:
        s.close()


@click.command()
@click.option("--interface", required=True)
@click.option("--src", required=True, help="This client's address (the ARP sender IP).")
@click.option("--period", type=float, default=0.2, show_default=True)
@click.argument("vips", nargs=-1, required=True)
def main(interface: str, src: str, period: float, vips: tuple[str, ...]) -> None:
    """Print one JSON line per round: which MACs answered ARP for each VIP."""
    for t, macs in probe_rounds(
        interface, IPv4Address(src), [IPv4Address(v) for v in vips], period
    ):
        sys.stdout.write(json.dumps({"t": t, "macs": macs}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
