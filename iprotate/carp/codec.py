"""CARP advertisements on the wire, as ucarp 1.5.2 sends and accepts them.

Pure functions over bytes: no sockets, no clock, no randomness. See CARP.md for the protocol; the
receive checks here follow ucarp's order so that a rejected packet gets the reason ucarp would log.

Every decode failure raises :class:`DecodeError` carrying a :class:`Reject`; malformed bytes can
raise nothing else. Encoding functions raise ``ValueError`` for out-of-range arguments.
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

CARP_PROTO = 112
CARP_LEN = 36  # CARP header bytes
IP_HEADER_LEN = 20  # IPv4 header without options
CARP_VERSION = 2
CARP_TYPE_ADVERTISEMENT = 1
CARP_AUTHLEN = 7  # counter + digest in 32-bit words; sent, never checked by ucarp
CARP_TTL = 255
IPTOS_LOWDELAY = 0x10  # the TOS ucarp sends
DIGEST_LEN = 20
MAX_PASSWORD_LEN = 19  # ucarp keeps the password NUL-terminated in a 20-byte key

_IP_DF = 0x4000
_MAX_COUNTER = (1 << 64) - 1
# version/type, vhid, advskew, authlen, pad, advbase, checksum, counter, digest
_CARP = struct.Struct("!BBBBBBHQ20s")
# version/IHL, TOS, total length, id, flags/fragment, TTL, protocol, checksum, src, dst
_IP = struct.Struct("!BBHHHBBH4s4s")
# 16-bit words of the two lengths every advert is summed at (CARP bytes alone; IP header + CARP).
_WORDS = {n: struct.Struct(f"!{n // 2}H") for n in (36, 56)}


class Reject(enum.Enum):
    """Why a packet was dropped. Values are short snake_case strings, usable as metric labels.

    The decode functions raise the first group; the receive path (which knows its own address,
    vhids, group and passwords) uses the second for the checks it makes after decoding. Where
    ucarp would accept the packet, the comment says so: no CARP sender produces those.
    """

    # Raised by decode_packet / decode_advert.
    SHORT = "short"  # fewer bytes than an IPv4 header, or than 36 CARP bytes after it
    LONG = "long"  # over 36 bytes after the IP header (ucarp sums only 36: a zero tail passes)
    NOT_IPV4 = "not_ipv4"  # IP version nibble is not 4 (the kernel never delivers one)
    BAD_IHL = "bad_ihl"  # IP header length field below 5 words
    IP_OPTIONS = "ip_options"  # IP header longer than 20 bytes (ucarp accepts, summing them)
    BAD_LENGTH = "bad_length"  # IP total length differs from the bytes given (the kernel trims)
    BAD_PROTO = "bad_proto"  # IP protocol is not 112
    BAD_TTL = "bad_ttl"  # TTL is not 255: the packet crossed a router (ucarp: "Bad TTL")
    BAD_VERSION = "bad_version"  # CARP version nibble is not 2 (ucarp: "Bad version")
    BAD_TYPE = "bad_type"  # CARP type nibble is not 1 (advertisement); ucarp does not check it
    BAD_CHECKSUM = "bad_checksum"  # ones'-complement sum is not zero (ucarp: "Bad IP checksum")
    # Used by callers, never raised here.
    BAD_DIGEST = "bad_digest"  # verify() returned False (ucarp: "Bad digest")
    OWN_SOURCE = "own_source"  # our own advert looped back (ucarp drops it silently)
    UNKNOWN_VHID = "unknown_vhid"  # no local instance for this vhid (ucarp: silently)
    WRONG_GROUP = "wrong_group"  # destination is not the configured group (ucarp: silently)


class DecodeError(Exception):
    """A packet that is not a well-formed CARP advertisement; ``reason`` says why."""

    def __init__(self, reason: Reject, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


def _check_byte(name: str, value: int, low: int = 0) -> None:
    if not low <= value <= 0xFF:
        raise ValueError(f"{name} must be in {low}..255, got {value!r}")


def _check_counter(counter: int) -> None:
    if not 0 <= counter <= _MAX_COUNTER:
        raise ValueError(f"counter must be a 64-bit unsigned integer, got {counter!r}")


@dataclass(frozen=True)
class Advert:
    """The fields of one CARP advertisement (the checksum is implied: always valid)."""

    vhid: int
    advskew: int
    advbase: int
    counter: int  # 64-bit unsigned, big-endian on the wire
    digest: bytes  # 20-byte HMAC-SHA1
    authlen: int = CARP_AUTHLEN  # kept as received: ucarp ignores it
    pad: int = 0  # kept as received: ucarp ignores it

    @classmethod
    def _unpacked(
        cls,
        vhid: int,
        advskew: int,
        advbase: int,
        counter: int,
        digest: bytes,
        authlen: int,
        pad: int,
    ) -> Advert:
        """An Advert from the fields struct.unpack gave for CARP_LEN bytes: bytes, a 64-bit
        counter and a 20-byte digest by construction, so __post_init__'s checks are skipped
        (every advert received is decoded: bench/scale.py). The same object otherwise."""
        a = object.__new__(cls)
        for name, value in (
            ("vhid", vhid),
            ("advskew", advskew),
            ("advbase", advbase),
            ("counter", counter),
            ("digest", digest),
            ("authlen", authlen),
            ("pad", pad),
        ):
            object.__setattr__(a, name, value)
        return a

    def __post_init__(self) -> None:
        for name in ("vhid", "advskew", "advbase", "authlen", "pad"):
            _check_byte(name, getattr(self, name))
        _check_counter(self.counter)
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_LEN:
            raise ValueError(f"digest must be {DIGEST_LEN} bytes, got {self.digest!r}")


@dataclass(frozen=True)
class Packet:
    """A received IPv4 packet carrying an advertisement."""

    src: IPv4Address
    dst: IPv4Address
    ttl: int
    advert: Advert


def _ones_sum(data: bytes) -> int:
    """RFC 1071 ones'-complement sum of big-endian 16-bit words, folded to 16 bits.

    0 only for all-zero data, otherwise 1..0xffff; ucarp's running sum gives the same values.
    """
    words = _WORDS.get(len(data))  # an advert's lengths: no format string built per packet
    if words is not None:
        total = sum(words.unpack(data))
    else:
        if len(data) % 2:
            data += b"\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes) -> int:
    """The Internet checksum of data (with its checksum field zeroed), as stored in a header."""
    return ~_ones_sum(data) & 0xFFFF


def digest(password: bytes, vhid: int, vip: IPv4Address, counter: int) -> bytes:
    """HMAC-SHA1 keyed with the raw password over 0x02 0x01 vhid vip counter (15 bytes)."""
    _check_byte("vhid", vhid)
    _check_counter(counter)
    message = bytes((CARP_VERSION, CARP_TYPE_ADVERTISEMENT, vhid)) + vip.packed
    message += counter.to_bytes(8, "big")
    # The one-shot form: no HMAC object built per advert (one per advert sent or received is
    # a good part of the receive path at 1,000 VIPs, bench/scale.py); the same HMAC-SHA1.
    return hmac.digest(password, message, "sha1")


def verify(advert: Advert, password: bytes, vip: IPv4Address) -> bool:
    """True if the advert's digest matches password and vip (constant-time compare)."""
    expected = digest(password, advert.vhid, vip, advert.counter)
    return hmac.compare_digest(expected, advert.digest)


def pack_advert(advert: Advert) -> bytes:
    """The 36 CARP bytes of advert as given (digest not recomputed), checksum filled in."""
    fields = (
        (CARP_VERSION << 4) | CARP_TYPE_ADVERTISEMENT,
        advert.vhid,
        advert.advskew,
        advert.authlen,
        advert.pad,
        advert.advbase,
        0,
        advert.counter,
        advert.digest,
    )
    unsummed = _CARP.pack(*fields)
    return unsummed[:6] + checksum(unsummed).to_bytes(2, "big") + unsummed[8:]


def encode_advert(
    *,
    vhid: int,
    advbase: int,
    advskew: int,
    counter: int,
    vip: IPv4Address,
    password: bytes,
) -> bytes:
    """The 36 CARP bytes of an advertisement as ucarp sends it, digest and checksum filled in."""
    _check_byte("vhid", vhid, low=1)
    _check_byte("advbase", advbase)
    _check_byte("advskew", advskew)
    if advbase == 0 and advskew == 0:
        raise ValueError("advbase and advskew cannot both be 0 (ucarp refuses it)")
    # A password ucarp cannot be given would fail every peer's digest check.
    if not 1 <= len(password) <= MAX_PASSWORD_LEN or b"\0" in password:
        raise ValueError(f"password must be 1..{MAX_PASSWORD_LEN} bytes without NUL")
    # pack_advert(Advert(...)) without the Advert: every field is checked above (the counter in
    # digest), and the master's send path runs this once per advert (bench/scale.py).
    unsummed = _CARP.pack(
        (CARP_VERSION << 4) | CARP_TYPE_ADVERTISEMENT,
        vhid,
        advskew,
        CARP_AUTHLEN,
        0,
        advbase,
        0,
        counter,
        digest(password, vhid, vip, counter),
    )
    return unsummed[:6] + checksum(unsummed).to_bytes(2, "big") + unsummed[8:]


def _unpack_carp(carp: bytes) -> Advert:
    """Parse exactly CARP_LEN bytes, checking version and type but not the checksum."""
    version_type, vhid, advskew, authlen, pad, advbase, _, counter, md = _CARP.unpack(carp)
    if version_type >> 4 != CARP_VERSION:
        raise DecodeError(Reject.BAD_VERSION, f"CARP version {version_type >> 4}")
    if version_type & 0x0F != CARP_TYPE_ADVERTISEMENT:
        raise DecodeError(Reject.BAD_TYPE, f"CARP type {version_type & 0x0F}")
    return Advert._unpacked(vhid, advskew, advbase, counter, md, authlen, pad)


def _check_length(carp_len: int) -> None:
    if carp_len < CARP_LEN:
        raise DecodeError(Reject.SHORT, f"{carp_len} CARP bytes, need {CARP_LEN}")
    if carp_len > CARP_LEN:
        raise DecodeError(Reject.LONG, f"{carp_len} CARP bytes, expected {CARP_LEN}")


def decode_advert(carp: bytes) -> Advert:
    """Decode the 36 CARP bytes alone (checksum over them). Raises DecodeError."""
    carp = bytes(carp)
    _check_length(len(carp))
    advert = _unpack_carp(carp)
    if _ones_sum(carp) != 0xFFFF:
        raise DecodeError(Reject.BAD_CHECKSUM, "CARP checksum")
    return advert


def decode_packet(data: bytes) -> Packet:
    """Decode a whole IPv4 packet as a raw IPPROTO 112 socket returns it. Raises DecodeError.

    Checks in ucarp's order where ucarp checks too; the checksum, like ucarp's, is the sum over
    the IP header and the 36 CARP bytes together. Not checked, as in ucarp: TOS, id, flags and
    fragment offset (the kernel reassembles), authlen, pad, counter. The caller still checks
    source, destination group, vhid and digest.
    """
    data = bytes(data)
    if len(data) < IP_HEADER_LEN:
        raise DecodeError(Reject.SHORT, f"{len(data)} bytes, no room for an IPv4 header")
    version_ihl, _, total_length, _, _, ttl, proto, _, src, dst = _IP.unpack_from(data)
    if version_ihl >> 4 != 4:
        raise DecodeError(Reject.NOT_IPV4, f"IP version {version_ihl >> 4}")
    ihl = version_ihl & 0x0F
    if ihl < 5:
        raise DecodeError(Reject.BAD_IHL, f"IHL {ihl}")
    if ihl > 5:
        raise DecodeError(Reject.IP_OPTIONS, f"IHL {ihl}")
    if total_length != len(data):
        raise DecodeError(Reject.BAD_LENGTH, f"total length {total_length}, got {len(data)}")
    if proto != CARP_PROTO:
        raise DecodeError(Reject.BAD_PROTO, f"IP protocol {proto}")
    _check_length(len(data) - IP_HEADER_LEN)
    if ttl != CARP_TTL:
        raise DecodeError(Reject.BAD_TTL, f"TTL {ttl}")
    advert = _unpack_carp(data[IP_HEADER_LEN:])
    # ucarp sums header and CARP bytes in one go: a valid IP header sums to zero on its own, so
    # this is the CARP checksum in practice (the kernel has already checked the header's).
    if _ones_sum(data) != 0xFFFF:
        raise DecodeError(Reject.BAD_CHECKSUM, "IP header + CARP checksum")
    return Packet(src=IPv4Address(src), dst=IPv4Address(dst), ttl=ttl, advert=advert)


def build_ip_packet(
    src: IPv4Address,
    dst: IPv4Address,
    carp: bytes,
    ttl: int = CARP_TTL,
    tos: int = IPTOS_LOWDELAY,
    *,
    ident: int = 0,
    proto: int = CARP_PROTO,
) -> bytes:
    """A whole IPv4 packet as ucarp sends it (DF set, no options) around carp, any length.

    ucarp puts a random IP id; this takes it as ``ident`` to stay deterministic.
    """
    _check_byte("ttl", ttl)
    _check_byte("tos", tos)
    _check_byte("proto", proto)
    if not 0 <= ident <= 0xFFFF:
        raise ValueError(f"ident must be in 0..65535, got {ident!r}")
    total_length = IP_HEADER_LEN + len(carp)
    if total_length > 0xFFFF:
        raise ValueError(f"payload of {len(carp)} bytes does not fit an IPv4 packet")
    fields = (0x45, tos, total_length, ident, _IP_DF, ttl, proto, 0, src.packed, dst.packed)
    header = _IP.pack(*fields)
    header = header[:10] + checksum(header).to_bytes(2, "big") + header[12:]
    return header + bytes(carp)
