"""The IPv6 side of iprotate.carp.codec (issue 11), against independent decoders.

- The digest: HMAC-SHA1 keyed with the password over 0x02 0x01 vhid VIP(16 bytes) counter(8), as
  FreeBSD's carp_hmac_prepare/carp_hmac_generate compute it for a vhid carrying one IPv6 address,
  recomputed here from that rule alone.
- scapy's CARP layer (scapy.contrib.carp) over scapy's IPv6 layer.
- Wireshark's CARP dissector: `tshark` reads a pcap of whole Ethernet/IPv6/CARP frames that the
  test writes, and its field output must agree on every field and call the checksum good (and bad
  where it is bad).
- Properties: round trips, and random bytes raise nothing but DecodeError.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import shutil
import struct
import subprocess
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iprotate.carp.codec import (
    CARP_LEN,
    IPV6_HEADER_LEN,
    DecodeError,
    Reject,
    build_ipv6_packet,
    checksum,
    decode_advert,
    decode_ipv6_packet,
    decode_packet6,
    digest,
    encode_advert,
    verify,
)

SRC = IPv6Address("2001:db8::7")
GROUP = IPv6Address("ff02::12")
VIP = IPv6Address("2001:db8:200::2a")
PASSWORD = b"hunter2"

CASES: list[dict[str, Any]] = [
    {"vhid": 1, "advbase": 1, "advskew": 0, "counter": 0, "password": b"a",
     "vip": IPv6Address("2001:db8::1"), "src": IPv6Address("fe80::1")},
    {"vhid": 255, "advbase": 255, "advskew": 255, "counter": 2**64 - 1,
     "password": b"0123456789abcdefghi", "vip": IPv6Address("fdff:ffff::ffff"),
     "src": IPv6Address("fd00::ff")},
    {"vhid": 42, "advbase": 0, "advskew": 16, "counter": 0x8000000000000001, "password": b"pw",
     "vip": VIP, "src": SRC},
    {"vhid": 7, "advbase": 1, "advskew": 64, "counter": 0x0123456789ABCDEF, "password": PASSWORD,
     "vip": IPv6Address("2001:db8:ffff:ffff:ffff:ffff:ffff:ff07"), "src": SRC},
]  # fmt: skip


def carp_of(case: dict[str, Any]) -> bytes:
    return encode_advert(**{k: v for k, v in case.items() if k != "src"})


def own_digest(password: bytes, vhid: int, vip: IPv6Address, counter: int) -> bytes:
    """The rule, written out: HMAC-SHA1(password, 0x02 0x01 vhid vip[16] counter[8])."""
    message = b"\x02\x01" + bytes([vhid]) + vip.packed + struct.pack("!Q", counter)
    assert len(message) == 27
    return hmac.new(password, message, hashlib.sha1).digest()


@pytest.mark.parametrize("case", CASES)
def test_digest_is_the_freebsd_rule_for_one_ipv6_address(case: dict[str, Any]) -> None:
    carp = carp_of(case)
    assert len(carp) == CARP_LEN
    want = own_digest(case["password"], case["vhid"], case["vip"], case["counter"])
    assert carp[16:36] == want
    assert digest(case["password"], case["vhid"], case["vip"], case["counter"]) == want
    adv = decode_advert(carp)
    assert verify(adv, case["password"], case["vip"])
    # Another VIP, password or vhid fails, and so does the IPv4 rule on the same bytes.
    assert not verify(adv, case["password"], IPv6Address(int(case["vip"]) ^ 1))
    assert not verify(adv, case["password"] + b"x", case["vip"])
    assert not verify(adv, case["password"], IPv4Address(case["vip"].packed[-4:]))


@pytest.mark.parametrize("case", CASES)
def test_header_bytes_and_checksum_over_carp_alone(case: dict[str, Any]) -> None:
    carp = carp_of(case)
    assert carp[0] == 0x21 and carp[1] == case["vhid"] and carp[2] == case["advskew"]
    assert carp[3:6] == bytes([7, 0, case["advbase"]])
    assert carp[8:16] == case["counter"].to_bytes(8, "big")
    # The checksum covers the 36 CARP bytes, no pseudo-header: zeroing it and summing again
    # gives the same value, and the addresses do not enter it.
    assert checksum(carp[:6] + b"\0\0" + carp[8:]) == int.from_bytes(carp[6:8], "big")
    pkt = build_ipv6_packet(case["src"], GROUP, carp)
    assert len(pkt) == IPV6_HEADER_LEN + CARP_LEN == 76
    assert pkt[:8] == bytes([0x60, 0, 0, 0, 0, 36, 112, 255])
    assert pkt[8:24] == case["src"].packed and pkt[24:40] == GROUP.packed
    p = decode_ipv6_packet(pkt)
    assert (p.src, p.dst, p.ttl) == (case["src"], GROUP, 255)
    assert p == decode_packet6(carp, case["src"], GROUP, 255)
    assert (p.advert.vhid, p.advert.advskew, p.advert.advbase) == (
        case["vhid"], case["advskew"], case["advbase"],
    )  # fmt: skip
    assert p.advert.counter == case["counter"]


# --- scapy ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scapy() -> Any:
    import scapy.contrib.carp as carp  # slow, and it rebinds IP proto 112: only here
    import scapy.layers.inet6 as inet6
    import scapy.utils as utils

    return SimpleNamespace(IPv6=inet6.IPv6, CARP=carp.CARP, checksum=utils.checksum)


@pytest.mark.parametrize("case", CASES)
def test_scapy_reads_what_we_build(scapy: Any, case: dict[str, Any]) -> None:
    carp = carp_of(case)
    data = build_ipv6_packet(case["src"], GROUP, carp)
    ip6 = scapy.IPv6(data)
    assert (ip6.version, ip6.tc, ip6.fl, ip6.plen, ip6.nh, ip6.hlim) == (6, 0, 0, 36, 112, 255)
    assert (ip6.src, ip6.dst) == (str(case["src"]), str(GROUP))
    c = scapy.CARP(bytes(ip6.payload))  # scapy binds CARP to IPv4 only: decode the payload
    assert (c.version, c.type, c.vhid, c.advskew, c.authlen, c.demotion, c.advbase) == (
        2, 1, case["vhid"], case["advskew"], 7, 0, case["advbase"],
    )  # fmt: skip
    assert c.counter1 << 32 | c.counter2 == case["counter"]
    md = b"".join(getattr(c, f"hmac{i}").to_bytes(4, "big") for i in range(1, 6))
    assert md == own_digest(case["password"], case["vhid"], case["vip"], case["counter"])
    # scapy's own checksum (over the CARP bytes) is ours, and the sum over them is zero.
    again = c.copy()
    again.chksum = None
    assert bytes(again) == carp
    assert scapy.checksum(carp) == 0


@pytest.mark.parametrize("case", CASES)
def test_we_read_what_scapy_builds(scapy: Any, case: dict[str, Any]) -> None:
    md = own_digest(case["password"], case["vhid"], case["vip"], case["counter"])
    words = {f"hmac{i}": int.from_bytes(md[4 * i - 4 : 4 * i], "big") for i in range(1, 6)}
    c = scapy.CARP(
        version=2, type=1, vhid=case["vhid"], advskew=case["advskew"], authlen=7,
        advbase=case["advbase"], counter1=case["counter"] >> 32,
        counter2=case["counter"] & 0xFFFFFFFF, **words,
    )  # fmt: skip
    pkt = bytes(scapy.IPv6(src=str(case["src"]), dst=str(GROUP), nh=112, hlim=255) / c)
    p = decode_ipv6_packet(pkt)
    assert verify(p.advert, case["password"], case["vip"])
    assert p.advert.counter == case["counter"] and p.src == case["src"]


# --- Wireshark -----------------------------------------------------------------------------------

TSHARK_FIELDS = [
    "ipv6.src", "ipv6.dst", "ipv6.hlim", "ipv6.nxt", "ipv6.plen", "carp.version", "carp.type",
    "carp.vhid", "carp.advskew", "carp.authlen", "carp.demotion", "carp.adver_int",
    "carp.checksum", "carp.checksum.status", "carp.counter", "carp.hmac",
]  # fmt: skip


def write_pcap(path: Path, packets: list[bytes]) -> None:
    """A classic pcap of Ethernet frames: IPv6 multicast to 33:33:00:00:00:12."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # LINKTYPE_ETHERNET
    for i, pkt in enumerate(packets):
        frame = bytes.fromhex("33330000001202000000000186dd") + pkt
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def tshark_fields(path: Path) -> list[dict[str, str]]:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (./setup installs it)")
    # Wireshark dissects protocol 112 as VRRP unless its CARP heuristic goes first.
    cmd = [tshark, "-n", "-o", "ipv6.try_heuristic_first:TRUE", "-r", str(path), "-T", "fields"]
    cmd += [a for f in TSHARK_FIELDS for a in ("-e", f)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return [dict(zip(TSHARK_FIELDS, ln.split("\t"), strict=True)) for ln in r.stdout.splitlines()]


def test_wireshark_agrees_on_every_field_and_the_checksum(tmp_path: Path) -> None:
    packets = [build_ipv6_packet(c["src"], GROUP, carp_of(c)) for c in CASES]
    bad = bytearray(packets[3])
    bad[IPV6_HEADER_LEN + 6] ^= 0xFF  # the checksum's high byte
    write_pcap(tmp_path / "adverts.pcap", [*packets, bytes(bad)])
    rows = tshark_fields(tmp_path / "adverts.pcap")
    assert len(rows) == len(CASES) + 1
    for case, pkt, row in zip(CASES, packets, rows, strict=False):
        carp = pkt[IPV6_HEADER_LEN:]
        md = own_digest(case["password"], case["vhid"], case["vip"], case["counter"])
        want = {
            "ipv6.src": str(case["src"]), "ipv6.dst": str(GROUP), "ipv6.hlim": "255",
            "ipv6.nxt": "112", "ipv6.plen": "36", "carp.version": "2", "carp.type": "1",
            "carp.vhid": str(case["vhid"]), "carp.advskew": str(case["advskew"]),
            "carp.authlen": "7", "carp.demotion": "0", "carp.adver_int": str(case["advbase"]),
            "carp.checksum": f"0x{int.from_bytes(carp[6:8], 'big'):04x}",
            "carp.checksum.status": "1",  # Wireshark's PROTO_CHECKSUM_E_GOOD
            "carp.counter": str(case["counter"]),
            "carp.hmac": md.hex(),
        }  # fmt: skip
        assert row == want
    # The one we broke: Wireshark says bad, and so do we.
    assert rows[-1]["carp.checksum.status"] == "0"  # PROTO_CHECKSUM_E_BAD
    with pytest.raises(DecodeError) as e:
        decode_ipv6_packet(bytes(bad))
    assert e.value.reason is Reject.BAD_CHECKSUM


# --- rejects -------------------------------------------------------------------------------------


def good() -> bytes:
    return carp_of(CASES[3])


@pytest.mark.parametrize(
    ("carp", "hop", "reason"),
    [
        (good()[:35], 255, Reject.SHORT),
        (good() + b"\0\0", 255, Reject.LONG),
        (good(), 254, Reject.BAD_TTL),
        (good(), 1, Reject.BAD_TTL),
        (bytes([0x31]) + good()[1:], 255, Reject.BAD_VERSION),
        (bytes([0x22]) + good()[1:], 255, Reject.BAD_TYPE),
        (good()[:20] + bytes([good()[20] ^ 1]) + good()[21:], 255, Reject.BAD_CHECKSUM),
    ],
)
def test_decode_packet6_rejects(carp: bytes, hop: int, reason: Reject) -> None:
    with pytest.raises(DecodeError) as e:
        decode_packet6(carp, SRC, GROUP, hop)
    assert e.value.reason is reason


def test_decode_packet6_wants_ipv6_addresses() -> None:
    with pytest.raises(DecodeError) as e:
        decode_packet6(good(), IPv4Address("198.51.100.7"), GROUP, 255)  # type: ignore[arg-type]
    assert e.value.reason is Reject.NOT_IPV6


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p[:39], Reject.SHORT),
        (lambda p: bytes([0x40]) + p[1:], Reject.NOT_IPV6),
        (lambda p: p[:5] + bytes([37]) + p[6:], Reject.BAD_LENGTH),
        (lambda p: p[:6] + bytes([0]) + p[7:], Reject.BAD_PROTO),  # a hop-by-hop header
        (lambda p: p[:7] + bytes([64]) + p[8:], Reject.BAD_TTL),
    ],
)
def test_decode_ipv6_packet_rejects(mutate: Any, reason: Reject) -> None:
    with pytest.raises(DecodeError) as e:
        decode_ipv6_packet(mutate(build_ipv6_packet(SRC, GROUP, good())))
    assert e.value.reason is reason


def test_build_ipv6_packet_bounds() -> None:
    for kw in ({"hop_limit": 256}, {"traffic_class": -1}, {"flow_label": 1 << 20}):
        with pytest.raises(ValueError):
            build_ipv6_packet(SRC, GROUP, good(), **kw)
    with pytest.raises(ValueError):
        build_ipv6_packet(SRC, GROUP, bytes(65536))


# --- properties ----------------------------------------------------------------------------------

v6 = st.ip_addresses(v=6)


@given(
    vhid=st.integers(1, 255), advbase=st.integers(0, 255), advskew=st.integers(1, 255),
    counter=st.integers(0, 2**64 - 1), vip=v6, src=v6, dst=v6,
    password=st.binary(min_size=1, max_size=19).filter(lambda b: b"\0" not in b),
)  # fmt: skip
def test_round_trip(
    vhid: int, advbase: int, advskew: int, counter: int, vip: IPv6Address,
    src: IPv6Address, dst: IPv6Address, password: bytes,
) -> None:  # fmt: skip
    carp = encode_advert(
        vhid=vhid, advbase=advbase, advskew=advskew, counter=counter, vip=vip, password=password
    )
    p = decode_ipv6_packet(build_ipv6_packet(src, dst, carp))
    assert (p.src, p.dst, p.ttl) == (src, dst, 255)
    a = p.advert
    assert (a.vhid, a.advbase, a.advskew, a.counter) == (vhid, advbase, advskew, counter)
    assert a.digest == own_digest(password, vhid, vip, counter)
    assert verify(a, password, vip)


@given(st.binary(max_size=120), st.integers(-5, 300), v6, v6)
def test_decode_packet6_raises_only_decode_error(
    data: bytes, hop: int, src: IPv6Address, dst: IPv6Address
) -> None:
    try:
        p = decode_packet6(data, src, dst, hop)
    except DecodeError:
        return
    assert len(data) == CARP_LEN and hop == 255 and p.src == src


@given(st.binary(max_size=140))
def test_decode_ipv6_packet_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_ipv6_packet(data)


@given(st.binary(min_size=40, max_size=40), st.binary(min_size=30, max_size=42))
def test_decode_ipv6_packet_on_random_headers(header: bytes, carp: bytes) -> None:
    """A random header around random bytes: DecodeError or a packet whose fields are the bytes."""
    try:
        p = decode_ipv6_packet(header + carp)
    except DecodeError:
        return
    assert header[0] >> 4 == 6 and header[6] == 112 and header[7] == 255 and len(carp) == 36
    assert p.src.packed == header[8:24] and json.dumps(str(p.dst))
