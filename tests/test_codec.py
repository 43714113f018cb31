"""Tests for iprotate.carp.codec against real ucarp bytes, scapy's CARP layer, and fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import pickle
import re
import struct
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iprotate.carp import codec
from iprotate.carp.codec import (
    CARP_LEN,
    IP_HEADER_LEN,
    Advert,
    AdvertEncoder,
    DecodeError,
    Reject,
    build_ip_packet,
    checksum,
    decode_advert,
    decode_packet,
    digest,
    encode_advert,
    pack_advert,
    verify,
)

HERE = Path(__file__).parent
FIXTURES = json.loads((HERE / "fixtures" / "ucarp_adverts.json").read_text(encoding="utf-8"))

SRC = IPv4Address("198.51.100.7")
GROUP = IPv4Address("224.0.0.18")
VIP = IPv4Address("203.0.113.7")
PASSWORD = b"hunter2"


def good_carp(**overrides: Any) -> bytes:
    args: dict[str, Any] = {
        "vhid": 7,
        "advbase": 1,
        "advskew": 10,
        "counter": 0x0123456789ABCDEF,
        "vip": VIP,
        "password": PASSWORD,
    }
    return encode_advert(**(args | overrides))


def good_packet(**overrides: Any) -> bytes:
    return build_ip_packet(SRC, GROUP, good_carp(**overrides))


def resum_carp(carp: bytes | bytearray) -> bytes:
    """carp with its checksum recomputed (over exactly what is given)."""
    b = bytearray(carp)
    b[6:8] = b"\0\0"
    b[6:8] = checksum(bytes(b)).to_bytes(2, "big")
    return bytes(b)


def resum_ip(packet: bytes | bytearray) -> bytes:
    """packet with its IP header checksum recomputed."""
    b = bytearray(packet)
    ihl = (b[0] & 0x0F) * 4
    b[10:12] = b"\0\0"
    b[10:12] = checksum(bytes(b[:ihl])).to_bytes(2, "big")
    return bytes(b)


def patch_carp(offset: int, value: int, **overrides: Any) -> bytes:
    """A good packet whose CARP byte at offset is value, with valid checksums."""
    carp = bytearray(good_carp(**overrides))
    carp[offset] = value
    return build_ip_packet(SRC, GROUP, resum_carp(carp))


def with_ip_options(carp: bytes, src: IPv4Address = SRC, options: bytes = b"\1\1\1\1") -> bytes:
    """A packet with IP options (NOPs by default), both checksums valid."""
    plain = build_ip_packet(src, GROUP, carp)
    ihl = (IP_HEADER_LEN + len(options)) // 4
    header = bytearray(plain[:IP_HEADER_LEN] + options)
    header[0] = 0x40 | ihl
    header[2:4] = (len(header) + len(carp)).to_bytes(2, "big")
    return resum_ip(bytes(header) + carp)


def ucarp_sum(data: bytes) -> int:
    """ucarp's cksum() loop, written out independently: a running sum with end-around carry."""
    total = 0
    padded = data + b"\0" * (len(data) % 2)
    for i in range(0, len(padded), 2):
        total += (padded[i] << 8) | padded[i + 1]
        if total > 0xFFFF:
            total = (total & 0xFFFF) + 1
    return ~total & 0xFFFF if data else 0


@functools.cache  # once per session: its namespace names count up from a module-level serial
def load_recorder() -> ModuleType:
    """tests/record_ucarp_adverts.py, by path (tests/ is not a package)."""
    path = HERE / "record_ucarp_adverts.py"
    spec = importlib.util.spec_from_file_location("record_ucarp_adverts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


# --- 1. Real ucarp bytes --------------------------------------------------------------------------

FIXTURE_CASES = [
    pytest.param(capture, bytes.fromhex(packet), id=f"vhid{capture['vhid']}-{i}")
    for capture in FIXTURES["captures"]
    for i, packet in enumerate(capture["packets"])
]


def check_ucarp_packet(capture: dict[str, Any], packet: bytes) -> None:
    """Everything a codec must get right about one advert ucarp sent with capture's settings."""
    password = capture["password"].encode()
    vip = IPv4Address(capture["vip"])
    pkt = decode_packet(packet)
    assert pkt.src == IPv4Address(capture["srcip"])
    assert pkt.dst == IPv4Address(capture["group"])
    assert pkt.ttl == 255
    adv = pkt.advert
    assert (adv.vhid, adv.advbase, adv.advskew) == (
        capture["vhid"],
        capture["advbase"],
        capture["advskew"],
    )
    assert (adv.authlen, adv.pad) == (7, 0)
    assert decode_advert(packet[IP_HEADER_LEN:]) == adv

    assert verify(adv, password, vip)
    assert not verify(adv, password + b"x", vip)
    assert not verify(adv, password, vip + 1)
    assert not verify(dataclasses.replace(adv, vhid=adv.vhid % 255 + 1), password, vip)
    assert not verify(dataclasses.replace(adv, counter=adv.counter ^ 1), password, vip)

    carp = encode_advert(
        vhid=capture["vhid"],
        advbase=capture["advbase"],
        advskew=capture["advskew"],
        counter=adv.counter,
        vip=vip,
        password=password,
    )
    assert carp == packet[IP_HEADER_LEN:]
    # The whole packet too: ucarp's IP header is ours but for its random id.
    ident = int.from_bytes(packet[4:6], "big")
    assert build_ip_packet(pkt.src, pkt.dst, carp, ident=ident) == packet


@pytest.mark.parametrize(("capture", "packet"), FIXTURE_CASES)
def test_ucarp_fixture(capture: dict[str, Any], packet: bytes) -> None:
    check_ucarp_packet(capture, packet)


def test_fixture_file_covers_the_edges() -> None:
    captures = FIXTURES["captures"]
    assert FIXTURES["command"] and FIXTURES["ucarp_version"].startswith("1.5.2")
    assert {c["vhid"] for c in captures} >= {1, 255}
    assert any(c["advbase"] == 0 for c in captures)
    assert any(len(c["password"].encode()) == codec.MAX_PASSWORD_LEN for c in captures)
    assert any(not c["password"].isascii() for c in captures)
    assert all(len(c["packets"]) >= 3 for c in captures)


def test_fixture_counters_are_fresh_until_ucarp_hears_a_peer() -> None:
    # CARP.md: a ucarp that never received a valid advert sends a random counter every time.
    for capture in FIXTURES["captures"]:
        counters = [decode_packet(bytes.fromhex(p)).advert.counter for p in capture["packets"]]
        assert len(set(counters)) == len(counters)


@pytest.mark.netns
@pytest.mark.ucarp
@pytest.mark.timeout(30)
def test_live_ucarp_adverts() -> None:
    """Capture fresh adverts from ucarp in a namespace and check them like the fixtures.

    conftest.py skips (or, in CI, fails) the netns/ucarp tests where they cannot run.
    """
    recorder = load_recorder()
    # advbase 0 / advskew 32: master after ~0.25 s, then 8 adverts per second.
    preset = recorder.Preset(vhid=7, password="live-pw", vip="203.0.113.7", advbase=0, advskew=32)
    (capture,) = recorder.capture([preset], count=3, timeout=10)
    assert len(capture["packets"]) == 3
    for packet in capture["packets"]:
        check_ucarp_packet(capture, bytes.fromhex(packet))


# Runs in the injecting namespace: sends each hex line of stdin as one Ethernet frame, exactly as
# given (an AF_PACKET socket leaves the IP header alone, like ucarp's pcap writes).
SENDER = r"""
import socket, sys, time
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((sys.argv[1], 0))
for line in sys.stdin:
    if line.strip():
        sock.send(bytes.fromhex(line))
        time.sleep(0.005)
"""

INJECTOR = IPv4Address("198.51.100.2")  # the recorder's HOST_B

# What ucarp logs for each packet it judges, as a master. Silent drops log nothing at WARNING.
UCARP_VERDICTS = {
    "accept": "Non-preferred master advertising",  # valid, longer interval than ucarp's
    "Bad TTL": "Bad TTL",
    "Bad version": "Bad version",
    "Bad IP checksum": "Bad IP checksum",
    "Bad digest": "Bad digest",
}


def differential_cases() -> list[tuple[str, bytes, Reject | None, str | None]]:
    """(name, packet, codec's verdict, ucarp's verdict); None means accepted / silent."""
    live = {"vhid": 9, "advbase": 1, "advskew": 0, "vip": IPv4Address("203.0.113.9")}
    live["password"] = b"diff-pw"

    def carp(**kw: Any) -> bytes:
        return good_carp(**(live | kw))

    def packet(data: bytes, **kw: Any) -> bytes:
        return build_ip_packet(INJECTOR, GROUP, data, **kw)

    def patched(offset: int, value: int) -> bytes:
        b = bytearray(carp())
        b[offset] = value
        return packet(resum_carp(b))

    flipped = bytearray(carp())
    flipped[7] ^= 0x01
    trailer = bytearray(carp() + b"\xde\xad\xbe\xef")
    long_summed = packet(resum_carp(trailer))  # a sender summing its whole 40-byte payload
    # IP checksum one too high, CARP checksum one too low: each wrong, their sum right.
    skewed = bytearray(packet(carp()))
    ip_sum, carp_sum = struct.unpack_from("!H14xH", skewed, 10)
    assert ip_sum < 0xFFFF and carp_sum > 0  # holds for these fixed inputs
    struct.pack_into("!H", skewed, 10, ip_sum + 1)
    struct.pack_into("!H", skewed, 26, carp_sum - 1)
    short = packet(carp()[:30])
    return [
        ("valid", packet(carp()), None, "accept"),
        ("ttl 254", packet(carp(), ttl=254), Reject.BAD_TTL, "Bad TTL"),
        ("version 3", patched(0, 0x31), Reject.BAD_VERSION, "Bad version"),
        ("carp checksum", packet(bytes(flipped)), Reject.BAD_CHECKSUM, "Bad IP checksum"),
        ("wrong password", packet(carp(password=b"other")), Reject.BAD_DIGEST, "Bad digest"),
        (
            "wrong vip",
            packet(carp(vip=IPv4Address("203.0.113.10"))),
            Reject.BAD_DIGEST,
            "Bad digest",
        ),
        ("40 bytes, summed", long_summed, Reject.LONG, "Bad IP checksum"),
        ("protocol 113", packet(carp(), proto=113), Reject.BAD_PROTO, None),
        ("30 bytes", short, Reject.SHORT, None),
        ("authlen 0, pad 5", packet(resum_carp(carp()[:3] + b"\0\5" + carp()[5:])), None, "accept"),
        ("sums compensate", bytes(skewed), None, "accept"),
        # Where the codec is stricter than ucarp, on purpose: no CARP sender does these.
        ("type 2", patched(0, 0x22), Reject.BAD_TYPE, "accept"),
        ("40 bytes, zero tail", packet(carp() + bytes(4)), Reject.LONG, "accept"),
        ("ip options", with_ip_options(carp(), INJECTOR), Reject.IP_OPTIONS, "accept"),
        ("valid again", packet(carp(counter=1)), None, "accept"),
    ]


def codec_verdict(data: bytes) -> Reject | None:
    try:
        pkt = decode_packet(data)
    except DecodeError as e:
        return e.reason
    ok = verify(pkt.advert, b"diff-pw", IPv4Address("203.0.113.9"))
    return None if ok else Reject.BAD_DIGEST


def test_differential_cases_codec_side() -> None:
    for name, data, ours, _ in differential_cases():
        assert codec_verdict(data) == ours, name


@pytest.mark.netns
@pytest.mark.ucarp
@pytest.mark.timeout(30)
def test_live_ucarp_judges_packets_like_decode_packet() -> None:
    """Inject forged packets at a ucarp master and compare its verdicts with the codec's."""
    recorder = load_recorder()
    assert IPv4Address(recorder.HOST_B) == INJECTOR
    cases = differential_cases()
    expected = [UCARP_VERDICTS[theirs] for _, _, _, theirs in cases if theirs is not None]
    logged = [name for name, _, _, theirs in cases if theirs is not None]
    preset = recorder.Preset(vhid=9, password="diff-pw", vip="203.0.113.9", advbase=0, advskew=64)
    with recorder.Segment() as seg:
        argv = recorder.ucarp_argv(preset, seg.if_a, recorder.HOST_A)
        ucarp = seg.spawn(seg.ns_a, argv, stream="stderr")
        try:
            ucarp.expect(lambda line: "Switching to state: MASTER" in line, timeout=10)
            ethernet = bytes.fromhex("01005e000012" "02005e000009" "0800")  # fmt: skip
            frames = "".join((ethernet + data).hex() + "\n" for _, data, _, _ in cases)
            subprocess.run(
                ["ip", "netns", "exec", seg.ns_b, sys.executable, "-c", SENDER, seg.if_b],
                input=frames,
                text=True,
                check=True,
                timeout=10,
            )
            seen: list[str] = []
            deadline = time.monotonic() + 5  # ucarp's pcap hands packets over once a second
            while len(seen) < len(expected) and time.monotonic() < deadline:
                try:
                    line = ucarp.expect(lambda _: True, timeout=deadline - time.monotonic())
                except TimeoutError:
                    break
                seen += [v for v in UCARP_VERDICTS.values() if v in line]
            time.sleep(0.2)  # anything a silent case wrongly logged would follow at once
            seen += [v for line in ucarp.drain() for v in UCARP_VERDICTS.values() if v in line]
        finally:
            ucarp.stop()
    assert ucarp.popen.returncode is not None  # stopped
    assert seen == expected, list(zip(logged, seen, strict=False))


# --- 2. scapy as an independent decoder ----------------------------------------------------------


@pytest.fixture(scope="module")
def scapy() -> Any:
    import scapy.contrib.carp as carp  # slow, and it rebinds IP proto 112: only here
    import scapy.layers.inet as inet
    import scapy.utils as utils

    return SimpleNamespace(IP=inet.IP, CARP=carp.CARP, checksum=utils.checksum)


SCAPY_CASES = [
    pytest.param(
        {"vhid": 1, "advbase": 1, "advskew": 0, "counter": 0, "password": b"a"}, id="minimal"
    ),
    pytest.param(
        {
            "vhid": 255,
            "advbase": 255,
            "advskew": 255,
            "counter": 2**64 - 1,
            "password": b"0123456789abcdefghi",
        },
        id="maximal",
    ),
    pytest.param(
        {"vhid": 42, "advbase": 0, "advskew": 1, "counter": 0x8000000000000001, "password": b"pw"},
        id="subsecond",
    ),
]


@pytest.mark.parametrize("fields", SCAPY_CASES)
def test_scapy_reads_what_we_build(scapy: Any, fields: dict[str, Any]) -> None:
    carp = encode_advert(vip=VIP, **fields)
    data = build_ip_packet(SRC, GROUP, carp, ident=0x1234)
    ip = scapy.IP(data)
    assert (ip.version, ip.ihl, ip.tos, ip.len, ip.id) == (4, 5, 0x10, 56, 0x1234)
    assert (str(ip.flags), ip.frag, ip.ttl, ip.proto) == ("DF", 0, 255, 112)
    assert (ip.src, ip.dst) == (str(SRC), str(GROUP))
    c = ip[scapy.CARP]
    assert (c.version, c.type, c.vhid) == (2, 1, fields["vhid"])
    assert (c.advskew, c.authlen, c.demotion, c.advbase) == (
        fields["advskew"],
        7,
        0,
        fields["advbase"],
    )
    assert c.counter1 << 32 | c.counter2 == fields["counter"]
    md = b"".join(getattr(c, f"hmac{i}").to_bytes(4, "big") for i in range(1, 6))
    assert md == digest(fields["password"], fields["vhid"], VIP, fields["counter"])
    # scapy recomputes both checksums the same way...
    again = ip.copy()
    again.chksum = None
    again[scapy.CARP].chksum = None
    assert bytes(again) == data
    # ...and the sums ucarp checks are zero.
    assert scapy.checksum(carp) == 0
    assert scapy.checksum(data) == 0
    assert scapy.checksum(data[:IP_HEADER_LEN]) == 0


@pytest.mark.parametrize(("capture", "packet"), FIXTURE_CASES)
def test_scapy_agrees_on_ucarp_packets(scapy: Any, capture: dict[str, Any], packet: bytes) -> None:
    ip = scapy.IP(packet)
    c = ip[scapy.CARP]
    adv = decode_packet(packet).advert
    assert (c.vhid, c.advskew, c.advbase, c.authlen) == (adv.vhid, adv.advskew, adv.advbase, 7)
    assert c.counter1 << 32 | c.counter2 == adv.counter
    assert ip.ttl == 255 and str(ip.flags) == "DF" and ip.tos == 0x10
    again = ip.copy()
    again.chksum = None
    again[scapy.CARP].chksum = None
    assert bytes(again) == packet


# --- 3. Rejects ----------------------------------------------------------------------------------


def ip(carp: bytes, **kw: Any) -> bytes:
    return build_ip_packet(SRC, GROUP, carp, **kw)


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    """data with the bytes at offset replaced (no checksum fixed)."""
    return data[:offset] + new + data[offset + len(new) :]


def flip(data: bytes, offset: int, mask: int) -> bytes:
    """data with bits of one byte flipped (no checksum fixed)."""
    return patch(data, offset, bytes([data[offset] ^ mask]))


def _garbage() -> bytes:
    return bytes((i * 151 + 7) % 256 for i in range(56))


REJECT_CASES = [
    ("empty", b"", Reject.SHORT),
    ("truncated ip header", good_packet()[:19], Reject.SHORT),
    ("header only", build_ip_packet(SRC, GROUP, b""), Reject.SHORT),
    ("short carp", ip(good_carp()[:35]), Reject.SHORT),
    ("long 40", ip(good_carp() + bytes(4)), Reject.LONG),
    ("long summed", ip(resum_carp(good_carp() + b"\1\2\3\4")), Reject.LONG),
    ("ipv6 nibble", bytes([0x65]) + good_packet()[1:], Reject.NOT_IPV4),
    ("ihl 4", bytes([0x44]) + good_packet()[1:], Reject.BAD_IHL),
    ("ihl 0", bytes([0x40]) + good_packet()[1:], Reject.BAD_IHL),
    ("ip options", with_ip_options(good_carp()), Reject.IP_OPTIONS),
    ("ihl 15", bytes([0x4F]) + good_packet()[1:], Reject.IP_OPTIONS),
    ("trailing byte", good_packet() + b"\0", Reject.BAD_LENGTH),
    ("total length lies", resum_ip(patch(good_packet(), 2, b"\0\x3c")), Reject.BAD_LENGTH),
    ("protocol 113", ip(good_carp(), proto=113), Reject.BAD_PROTO),
    ("protocol tcp", ip(good_carp(), proto=6), Reject.BAD_PROTO),
    ("ttl 254", ip(good_carp(), ttl=254), Reject.BAD_TTL),
    ("ttl 1", ip(good_carp(), ttl=1), Reject.BAD_TTL),
    ("version 1", patch_carp(0, 0x11), Reject.BAD_VERSION),
    ("version 3", patch_carp(0, 0x31), Reject.BAD_VERSION),
    ("type 0", patch_carp(0, 0x20), Reject.BAD_TYPE),
    ("type 2", patch_carp(0, 0x22), Reject.BAD_TYPE),
    ("carp checksum", flip(good_packet(), 27, 0x01), Reject.BAD_CHECKSUM),
    ("digest bit", flip(good_packet(), 55, 0x80), Reject.BAD_CHECKSUM),
    ("counter bit", flip(good_packet(), 28, 0x80), Reject.BAD_CHECKSUM),
    ("ip id changed", patch(good_packet(), 4, b"\x12\x34"), Reject.BAD_CHECKSUM),
    # 0x0000 and 0xffff are both zero in ones'-complement: ucarp cannot tell them apart either.
    ("ip id 0 -> ffff", patch(good_packet(), 4, b"\xff\xff"), None),
    ("source changed", patch(good_packet(), 15, b"\x08"), Reject.BAD_CHECKSUM),
    ("all zero", bytes(56), Reject.NOT_IPV4),
    ("all ones", b"\xff" * 56, Reject.NOT_IPV4),
    ("garbage", _garbage(), Reject.NOT_IPV4),
    ("text", b"GET / HTTP/1.1\r\nHost: 198.51.100.1\r\n\r\n", Reject.IP_OPTIONS),  # "G" = 0x47
]


@pytest.mark.parametrize(("data", "reason"), [pytest.param(d, r, id=n) for n, d, r in REJECT_CASES])
def test_decode_packet_rejects(data: bytes, reason: Reject | None) -> None:
    if reason is None:
        decode_packet(data)
        return
    with pytest.raises(DecodeError) as info:
        decode_packet(data)
    assert info.value.reason is reason
    assert str(info.value).startswith(reason.value)


ADVERT_REJECTS = [
    ("empty", b"", Reject.SHORT),
    ("35 bytes", good_carp()[:35], Reject.SHORT),
    ("37 bytes", good_carp() + b"\0", Reject.LONG),
    ("version 3", resum_carp(b"\x31" + good_carp()[1:]), Reject.BAD_VERSION),
    ("type 2", resum_carp(b"\x22" + good_carp()[1:]), Reject.BAD_TYPE),
    ("checksum", good_carp()[:6] + b"\0\0" + good_carp()[8:], Reject.BAD_CHECKSUM),
    ("all zero", bytes(36), Reject.BAD_VERSION),
]


@pytest.mark.parametrize(
    ("data", "reason"), [pytest.param(d, r, id=n) for n, d, r in ADVERT_REJECTS]
)
def test_decode_advert_rejects(data: bytes, reason: Reject) -> None:
    with pytest.raises(DecodeError) as info:
        decode_advert(data)
    assert info.value.reason is reason


def test_checks_come_in_ucarps_order() -> None:
    carp = bytearray(good_carp())
    carp[0] = 0x31  # bad version, and now a bad checksum too
    bad = bytes(carp)
    cases = [
        (build_ip_packet(SRC, GROUP, bad[:30], ttl=1, proto=6), Reject.BAD_PROTO),
        (build_ip_packet(SRC, GROUP, bad[:30], ttl=1), Reject.SHORT),
        (build_ip_packet(SRC, GROUP, bad, ttl=1), Reject.BAD_TTL),
        (build_ip_packet(SRC, GROUP, bad), Reject.BAD_VERSION),
    ]
    for data, reason in cases:
        with pytest.raises(DecodeError) as info:
            decode_packet(data)
        assert info.value.reason is reason


def test_bad_digest_is_the_callers_verdict() -> None:
    pkt = decode_packet(good_packet())  # decoding needs no password
    adv = pkt.advert
    assert verify(adv, PASSWORD, VIP)
    assert not verify(adv, b"hunter3", VIP)
    assert not verify(adv, PASSWORD, IPv4Address("203.0.113.8"))
    assert not verify(dataclasses.replace(adv, vhid=8), PASSWORD, VIP)
    assert not verify(dataclasses.replace(adv, counter=adv.counter + 1), PASSWORD, VIP)
    assert not verify(dataclasses.replace(adv, digest=bytes(20)), PASSWORD, VIP)
    # advbase and advskew are not covered by the digest (CARP.md)
    assert verify(dataclasses.replace(adv, advbase=255, advskew=255), PASSWORD, VIP)


def test_both_ones_complement_zeros_are_accepted() -> None:
    def advert(counter: int) -> Advert:
        return Advert(vhid=7, advskew=10, advbase=1, counter=counter, digest=bytes(range(20)))

    # Adding the checksum of the counter-0 advert as the counter's low word makes the other words
    # sum to 0xffff: the checksum is then 0x0000, and 0xffff is just as valid.
    counter = int.from_bytes(pack_advert(advert(0))[6:8], "big")
    carp = pack_advert(advert(counter))
    assert carp[6:8] == b"\0\0"
    other = carp[:6] + b"\xff\xff" + carp[8:]
    for variant in (carp, other):
        assert ucarp_sum(variant) == 0
        assert decode_advert(variant).counter == counter
        assert decode_packet(build_ip_packet(SRC, GROUP, variant)).advert.counter == counter


def test_reject_values_are_metric_labels() -> None:
    values = [r.value for r in Reject]
    assert len(set(values)) == len(values)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", v) for v in values)


def test_decode_error_keeps_its_reason() -> None:
    e = DecodeError(Reject.BAD_TTL, "TTL 254")
    assert str(e) == "bad_ttl: TTL 254"
    assert str(DecodeError(Reject.SHORT)) == "short"
    copy = pickle.loads(pickle.dumps(e))
    assert (copy.reason, copy.detail) == (Reject.BAD_TTL, "TTL 254")


@pytest.mark.parametrize(
    "overrides",
    [
        {"vhid": 0},
        {"vhid": 256},
        {"advbase": -1},
        {"advskew": 256},
        {"advbase": 0, "advskew": 0},
        {"counter": -1},
        {"counter": 2**64},
        {"password": b""},
        {"password": b"x" * 20},
        {"password": b"nul\0byte"},
    ],
    ids=repr,
)
def test_encode_advert_refuses_what_ucarp_cannot_send(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        good_carp(**overrides)


def test_advert_encoder_reused_gives_encode_advert_bytes_and_refuses_bad_values() -> None:
    # The daemon keeps one encoder per VIP (vhid and password checked once): every advert it
    # encodes must be the bytes encode_advert gives, and bad values still raise.
    enc = AdvertEncoder(7, VIP, PASSWORD)
    for advbase, advskew, counter in [(1, 0, 1), (1, 100, 2**63), (255, 255, 2**64 - 1), (0, 1, 0)]:
        want = encode_advert(
            vhid=7, advbase=advbase, advskew=advskew, counter=counter, vip=VIP, password=PASSWORD
        )
        assert enc.encode(advbase, advskew, counter) == want
    for bad in [(0, 0, 1), (256, 0, 1), (1, -1, 1), (1, 0, -1), (1, 0, 2**64)]:
        with pytest.raises(ValueError):
            enc.encode(*bad)
    for vhid, password in [(0, PASSWORD), (256, PASSWORD), (1, b""), (1, b"a\0b")]:
        with pytest.raises(ValueError):
            AdvertEncoder(vhid, VIP, password)


def test_value_checks() -> None:
    with pytest.raises(ValueError):
        Advert(vhid=1, advskew=0, advbase=1, counter=0, digest=b"short")
    with pytest.raises(ValueError):
        Advert(vhid=1, advskew=0, advbase=1, counter=2**64, digest=bytes(20))
    with pytest.raises(ValueError):
        build_ip_packet(SRC, GROUP, b"", ttl=256)
    with pytest.raises(ValueError):
        build_ip_packet(SRC, GROUP, b"", ident=65536)
    with pytest.raises(ValueError):
        build_ip_packet(SRC, GROUP, bytes(65516))
    with pytest.raises(ValueError):
        digest(PASSWORD, 256, VIP, 0)


def test_digest_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    message = b"\x02\x01\x07" + VIP.packed + (0x0123456789ABCDEF).to_bytes(8, "big")
    expected = hmac.new(PASSWORD, message, hashlib.sha1).digest()
    assert digest(PASSWORD, 7, VIP, 0x0123456789ABCDEF) == expected
    assert good_carp()[16:] == expected
    assert good_carp()[:6] == bytes([0x21, 7, 10, 7, 0, 1])
    assert good_carp()[8:16] == (0x0123456789ABCDEF).to_bytes(8, "big")


def test_build_ip_packet_matches_ucarps_header() -> None:
    data = good_packet()
    assert len(data) == IP_HEADER_LEN + CARP_LEN == 56
    assert data[:10] == bytes.fromhex("45100038" "0000" "4000" "ff70")  # fmt: skip
    assert data[12:20] == SRC.packed + GROUP.packed
    assert ucarp_sum(data[:IP_HEADER_LEN]) == 0
    assert ucarp_sum(data) == 0


# --- 4. Properties -------------------------------------------------------------------------------

addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
passwords = st.binary(min_size=1, max_size=codec.MAX_PASSWORD_LEN).filter(lambda p: b"\0" not in p)
bytes_ = st.integers(0, 255)


@given(
    vhid=st.integers(1, 255),
    advbase=bytes_,
    advskew=bytes_,
    counter=st.integers(0, 2**64 - 1),
    vip=addresses,
    password=passwords,
    src=addresses,
    dst=addresses,
)
def test_round_trip(
    vhid: int,
    advbase: int,
    advskew: int,
    counter: int,
    vip: IPv4Address,
    password: bytes,
    src: IPv4Address,
    dst: IPv4Address,
) -> None:
    if advbase == advskew == 0:
        advbase = 1
    fields = {"vhid": vhid, "advbase": advbase, "advskew": advskew, "counter": counter}
    carp = encode_advert(vip=vip, password=password, **fields)
    assert len(carp) == CARP_LEN
    pkt = decode_packet(build_ip_packet(src, dst, carp))
    assert (pkt.src, pkt.dst, pkt.ttl) == (src, dst, 255)
    adv = pkt.advert
    assert (adv.vhid, adv.advbase, adv.advskew, adv.counter) == (vhid, advbase, advskew, counter)
    assert verify(adv, password, vip)
    assert decode_advert(carp) == adv
    assert pack_advert(adv) == carp


adverts = st.builds(
    Advert,
    vhid=bytes_,
    advskew=bytes_,
    advbase=bytes_,
    counter=st.integers(0, 2**64 - 1),
    digest=st.binary(min_size=20, max_size=20),
    authlen=bytes_,
    pad=bytes_,
)


@given(adverts)
def test_pack_round_trip(advert: Advert) -> None:
    assert decode_advert(pack_advert(advert)) == advert


@given(st.binary(min_size=1, max_size=200))  # ucarp special-cases length 0
def test_checksum_is_ucarps(data: bytes) -> None:
    assert checksum(data) == ucarp_sum(data)


def decode_or_reject(data: bytes) -> Reject | None:
    """None if data decodes; its reason if not; any other exception propagates (and fails)."""
    try:
        decode_packet(data)
    except DecodeError as e:
        assert isinstance(e.reason, Reject)
        return e.reason
    return None


@given(st.binary(max_size=120))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    decode_or_reject(data)
    with contextlib.suppress(DecodeError):
        decode_advert(data)


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=30, max_size=42))
def test_ipv4_looking_bytes_only_raise_decode_error(header: bytes, rest: bytes) -> None:
    # Get more of them past the IP checks: no options, right length, protocol 112, TTL 255.
    h = bytearray(header)
    h[0] = 0x45
    h[2:4] = (len(h) + len(rest)).to_bytes(2, "big")
    h[8:10] = bytes([255, codec.CARP_PROTO])
    data = bytes(h) + rest
    if decode_or_reject(data) is None:
        assert ucarp_sum(data) == 0


VALID = good_packet()


def test_every_single_byte_change_is_rejected() -> None:
    # Exhaustive: 56 offsets x 255 other values. A one-byte change always moves the
    # ones'-complement sum, so the checksum catches whatever the other checks do not.
    for offset in range(len(VALID)):
        for value in range(256):
            if value != VALID[offset]:
                data = patch(VALID, offset, bytes([value]))
                assert decode_or_reject(data) is not None, (offset, value)


@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), bytes_), max_size=8),
    st.integers(0, len(VALID) + 8),
    st.binary(max_size=8),
)
def test_mutations_only_raise_decode_error(
    changes: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(VALID)
    for offset, value in changes:
        data[offset] = value
    mutated = bytes(data[:cut]) + tail
    if decode_or_reject(mutated) is None:  # accepted: then ucarp's sum check holds too
        assert ucarp_sum(mutated) == 0


def fields_agree(data: bytes) -> None:
    """advert_fields accepts exactly what decode_fields accepts, with the same fields."""
    fast = codec.advert_fields(data)
    try:
        _, _, _, adv = codec.decode_fields(data)
    except DecodeError:
        assert fast is None
        return
    assert fast == (adv.advskew, adv.advbase, adv.counter, adv.digest)


@given(st.binary(max_size=120))
def test_advert_fields_agrees_with_decode_fields_on_any_bytes(data: bytes) -> None:
    fields_agree(data)


@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), bytes_), max_size=8),
    st.integers(0, len(VALID) + 8),
    st.binary(max_size=8),
)
def test_advert_fields_agrees_with_decode_fields_on_mutations(
    changes: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(VALID)
    for offset, value in changes:
        data[offset] = value
    fields_agree(bytes(data[:cut]) + tail)


def test_advert_fields_agrees_with_decode_fields_on_every_single_byte_change() -> None:
    fields_agree(VALID)
    assert codec.advert_fields(VALID) is not None
    for offset in range(len(VALID)):
        for value in range(256):
            fields_agree(patch(VALID, offset, bytes([value])))


@given(
    key=st.binary(max_size=200),  # longer than a block (64): hashed first (RFC 2104)
    msg=st.binary(max_size=200),
    name=st.sampled_from(["sha1", "sha256"]),
)
def test_keyed_mac_is_hmac(key: bytes, msg: bytes, name: str) -> None:
    import hmac

    mac = codec.KeyedMac(key, name)
    assert mac(msg) == hmac.digest(key, msg, name)
    assert mac(msg) == mac(msg)  # the keyed states are copied, never used up
