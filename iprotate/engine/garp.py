"""Gratuitous ARP, as ucarp sends it (CARP.md): one 42-byte ARP request from the NIC's own MAC,
sender and target IP both the VIP. Sent through an AF_PACKET socket: microseconds, not scapy."""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import IPv4Address

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def garp_frame(mac: bytes, vip: IPv4Address) -> bytes:
    """The Ethernet frame: broadcast, ARP request, sender = target = (our MAC, VIP)."""
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    # htype Ethernet, ptype IPv4, hlen 6, plen 4, op request
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + vip.packed + mac + vip.packed
    return eth + arp


class GarpSender:
    """An AF_PACKET socket bound to one interface."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self.sock.bind((interface, ETH_P_ARP))

    @property
    def mac(self) -> bytes:
        """The interface's MAC now (see engine.unsolicited_na: it may change while we run)."""
        return bytes(self.sock.getsockname()[4][:6])

    def send(self, vip: IPv4Address) -> None:
        frame = garp_frame(self.mac, vip)
        try:
            self.sock.send(frame)
        except OSError as e:
            if e.errno != errno.ENETDOWN:
                raise
            # An admin down leaves ENETDOWN pending on a packet socket bound to the interface,
            # reported (and cleared) by the next send even after the link is back up: try once
            # more, so the first gratuitous ARP after a down/up goes out.
            self.sock.send(frame)

    def close(self) -> None:
        self.sock.close()
