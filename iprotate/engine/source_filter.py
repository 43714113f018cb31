"""A kernel socket filter for the CARP socket: adverts from addresses that are no host of the
cluster file never reach Python, so a flood of them costs the daemon nothing.

Classic BPF, run on every packet the raw IPv4 socket would queue (the data starts at the IP
header): load the source address, accept it if it is a host's; otherwise accept one packet in
2**SAMPLE_SHIFT at random (the kernel's `ld rand`) and drop the rest. The sampled ones let the
node count and name the senders that are no host (status, metrics, logs) at a bounded cost: a
flood of 230,000 packets a second reaches Python as about 3,600.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address

SO_ATTACH_FILTER = 26
SAMPLE_SHIFT = 6  # 1 in 64 packets from non-hosts is let through, to be counted
MAX_SOURCES = 256  # jump offsets are one byte

# Opcodes (linux/filter.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_AND_K = 0x54
_RET_K = 0x06
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_RANDOM
_IP_SRC = 12  # offset of the source address in the IPv4 header
_ACCEPT = 0xFFFF  # bytes to keep: the whole advert
_INSN = struct.Struct("=HBBI")


def program(sources: Iterable[IPv4Address], sample_shift: int = SAMPLE_SHIFT) -> list[bytes]:
    """The filter's instructions: accept `sources`, sample the rest."""
    addrs = sorted(set(sources))
    n = len(addrs)
    if not 1 <= n <= MAX_SOURCES:
        raise ValueError(f"a source filter takes 1..{MAX_SOURCES} addresses, got {n}")
    out = [_INSN.pack(_LD_W_ABS, 0, 0, _IP_SRC)]
    for j, a in enumerate(addrs, start=1):
        # Match: jump to the accept right after the last comparison. The last one's miss skips it.
        jt, jf = (n - j, 0) if j < n else (0, 1)
        out.append(_INSN.pack(_JEQ_K, jt, jf, int(a)))
    out += [
        _INSN.pack(_RET_K, 0, 0, _ACCEPT),
        _INSN.pack(_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),
        _INSN.pack(_AND_K, 0, 0, (1 << sample_shift) - 1),
        _INSN.pack(_JEQ_K, 0, 1, 0),
        _INSN.pack(_RET_K, 0, 0, _ACCEPT),
        _INSN.pack(_RET_K, 0, 0, 0),
    ]
    return out


def attach(sock: socket.socket, sources: Iterable[IPv4Address]) -> None:
    """Attach (or replace) the filter on `sock`; the kernel copies the program."""
    _attach(sock, program(sources))


def _attach(sock: socket.socket, insns: list[bytes]) -> None:
    buf = ctypes.create_string_buffer(b"".join(insns))
    fprog = struct.pack("HL", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# IPv6 (engine.wire6). A raw IPv6 socket's filter sees the packet from the CARP header on (the
# kernel pulled the IPv6 header before queueing it), so offset 12 is not the source; classic
# BPF's SKF_NET_OFF reaches the network header wherever the data starts: the source is the four
# words at SKF_NET_OFF + 8. One block per host: four compares, a miss anywhere jumps to the
# next host, a full match accepts (each block ends in its own accept: the jumps stay short).
_SKF_NET_OFF = -0x100000
_IP6_SRC = 8  # offset of the source address in the IPv6 header
_BLOCK6 = 9


def program6(sources: Iterable[IPv6Address], sample_shift: int = SAMPLE_SHIFT) -> list[bytes]:
    """The IPv6 filter's instructions: accept `sources`, sample the rest."""
    addrs = sorted(set(sources))
    n = len(addrs)
    if not 1 <= n <= MAX_SOURCES:
        raise ValueError(f"a source filter takes 1..{MAX_SOURCES} addresses, got {n}")
    out = []
    for a in addrs:
        words = struct.unpack("!4I", a.packed)
        for w, word in enumerate(words):
            at = (_SKF_NET_OFF + _IP6_SRC + 4 * w) & 0xFFFFFFFF
            out.append(_INSN.pack(_LD_W_ABS, 0, 0, at))
            # From the compare at 2w+1, the next block starts at _BLOCK6: skip what is between.
            out.append(_INSN.pack(_JEQ_K, 0, _BLOCK6 - (2 * w + 2), word))
        out.append(_INSN.pack(_RET_K, 0, 0, _ACCEPT))
    out += [
        _INSN.pack(_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),
        _INSN.pack(_AND_K, 0, 0, (1 << sample_shift) - 1),
        _INSN.pack(_JEQ_K, 0, 1, 0),
        _INSN.pack(_RET_K, 0, 0, _ACCEPT),
        _INSN.pack(_RET_K, 0, 0, 0),
    ]
    return out


def attach6(sock: socket.socket, sources: Iterable[IPv6Address]) -> None:
    """Attach (or replace) the IPv6 filter on `sock`, a raw IPv6 socket."""
    _attach(sock, program6(sources))
