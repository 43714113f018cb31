"""A client's view of who holds each VIP: which MAC answers an ARP request (IPv4) or a neighbour
solicitation (IPv6) for it.

Run inside a client namespace (`python -m iprotate.lab.probe --interface eth0 VIP...`); every
round it asks for every VIP and prints one JSON line,
`{"t": <monotonic>, "macs": {vip: [mac, ...]}}`, so the lab, the tests and the benchmarks see
several answers (two masters) and none (unserved) alike. With `--http PORT` each round also asks
the lab's service on every VIP (one GET each, all at once) and adds `"served": {vip: answer}`:
the name the service answered with, or why none (`refused`, `timeout`, `reset`, ...).
It only ever sends ARP requests and neighbour solicitations on its own interface, for the VIPs it
is given (an IPv6 one to the VIP's solicited-node group, from the client's own address6), and
HTTP requests to those VIPs.
"""

from __future__ import annotations

import errno
import json
import select
import selectors
import socket
import struct
import sys
import time
from ipaddress import IPv4Address, IPv6Address, ip_address

import click

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
NS_TYPE, NA_TYPE = 135, 136


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def solicitation(mac: bytes, src: IPv6Address, target: IPv6Address) -> bytes:
    """A neighbour solicitation from (mac, src) for `target`, to its solicited-node group."""
    group = IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + target.packed[13:])
    body = struct.pack("!BBH4x", NS_TYPE, 0, 0) + target.packed + struct.pack("!BB", 1, 1) + mac
    pseudo = src.packed + group.packed + struct.pack("!I3xB", len(body), ICMPV6)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, 255) + src.packed + group.packed
    eth = b"\x33\x33" + group.packed[12:] + mac + struct.pack("!H", ETH_P_IPV6)
    return eth + ip6 + body


def parse_advert(frame: bytes) -> tuple[IPv6Address, str] | None:
    """(target, Ethernet source MAC) of a neighbour advertisement frame, or None."""
    if len(frame) < 78 or frame[12:14] != b"\x86\xdd" or frame[20] != ICMPV6:
        return None
    if frame[54] != NA_TYPE:
        return None
    mac = ":".join(f"{b:02x}" for b in frame[6:12])
    return IPv6Address(frame[62:78]), mac


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


def probe_rounds(  # type: ignore[no-untyped-def]
    interface: str,
    src: IPv4Address,
    vips: list[IPv4Address | IPv6Address],
    period: float,
    src6: IPv6Address | None = None,
):
    """Yield (t, {vip: sorted MACs}) once per `period`, forever."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((interface, ETH_P_ARP))
    mac = s.getsockname()[4][:6]
    socks = [s]
    v6 = [v for v in vips if isinstance(v, IPv6Address)]
    if v6:
        if src6 is None:
            s.close()
            raise ValueError("IPv6 VIPs need --src6, this client's IPv6 address")
        s6 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        s6.bind((interface, ETH_P_IPV6))
        socks.append(s6)
    wanted = set(vips)
    try:
        while True:
            start = time.monotonic()
            for v in vips:
                if isinstance(v, IPv6Address):
                    assert src6 is not None
                    socks[1].send(solicitation(mac, src6, v))
                else:
                    s.send(arp_request(mac, src, v))
            seen: dict[IPv4Address | IPv6Address, set[str]] = {v: set() for v in vips}
            end = start + period
            while (left := end - time.monotonic()) > 0:
                ready, _, _ = select.select(socks, [], [], left)
                if not ready:
                    break
                for r_sock in ready:
                    frame = r_sock.recv(256)
                    r = parse_reply(frame) if r_sock is s else parse_advert(frame)
                    if r is not None and r[0] in wanted:
                        seen[r[0]].add(r[1])
            yield start, {str(v): sorted(m) for v, m in seen.items()}
    finally:
        for x in socks:
            x.close()


def http_round(vips: list[IPv4Address | IPv6Address], port: int, timeout: float) -> dict[str, str]:
    """GET / on every VIP at once; {vip: first line of the body, or why there is none}."""
    sel = selectors.DefaultSelector()
    out: dict[str, str] = {}
    bufs: dict[str, bytes] = {}
    try:
        for v in vips:
            family = socket.AF_INET6 if v.version == 6 else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((str(v), port))
            if err not in (0, errno.EINPROGRESS):
                out[str(v)] = errno.errorcode.get(err, str(err)).lower()
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE, str(v))
        end = time.monotonic() + timeout
        while sel.get_map() and (left := end - time.monotonic()) > 0:
            for key, mask in sel.select(left):
                s, v = key.fileobj, key.data
                assert isinstance(s, socket.socket)
                why = None
                try:
                    if mask & selectors.EVENT_WRITE:
                        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            raise OSError(err, "")
                        host = f"[{v}]" if ":" in v else v
                        s.send(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                        sel.modify(s, selectors.EVENT_READ, v)
                        continue
                    data = s.recv(4096)
                    if data and len(bufs.get(v, b"")) < 65536:
                        bufs[v] = bufs.get(v, b"") + data
                        continue
                    body = bufs.get(v, b"").partition(b"\r\n\r\n")[2]
                    why = body.decode(errors="replace").strip().split("\n")[0] or "empty"
                except OSError as e:
                    names = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}
                    why = names.get(e.errno or 0, errno.errorcode.get(e.errno or 0, "error"))
                    why = why.lower()
                out[v] = why
                sel.unregister(s)
                s.close()
        for key in list(sel.get_map().values()):
            out[key.data] = "timeout"
            key.fileobj.close()  # type: ignore[union-attr]
    finally:
        sel.close()
    return {str(v): out.get(str(v), "timeout") for v in vips}


@click.command()
@click.option("--interface", required=True)
@click.option("--src", required=True, help="This client's address (the ARP sender IP).")
@click.option("--src6", default=None, help="This client's IPv6 address (for IPv6 VIPs).")
@click.option("--period", type=float, default=0.2, show_default=True)
@click.option("--http", "http_port", type=int, default=None, help="Also GET / on PORT of each VIP.")
@click.argument("vips", nargs=-1, required=True)
def main(
    interface: str,
    src: str,
    src6: str | None,
    period: float,
    http_port: int | None,
    vips: tuple[str, ...],
) -> None:
    """Print one JSON line per round: which MACs answered ARP (or NS) for each VIP (and who
    served)."""
    addrs: list[IPv4Address | IPv6Address] = [ip_address(v) for v in vips]
    for t, macs in probe_rounds(
        interface, IPv4Address(src), addrs, period, IPv6Address(src6) if src6 else None
    ):
        line: dict[str, object] = {"t": t, "macs": macs}
        if http_port is not None:
            line["served"] = http_round(addrs, http_port, max(period, 0.3))
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
