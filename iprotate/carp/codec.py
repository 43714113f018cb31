"""CARP advertisements on the wire, as ucarp 1.5.2 sends and accepts them (IPv4), and as the BSD
kernels do over IPv6.

Pure functions over bytes: no sockets, no clock, no randomness. See CARP.md for the protocol; the
receive checks here follow ucarp's order so that a rejected packet gets the reason ucarp would log.

Every decode failure raises :class:`DecodeError` carrying a :class:`Reject`; malformed bytes can
raise nothing else. Encoding functions raise ``ValueError`` for out-of-range arguments.

IPv6 (issue 11), as FreeBSD's sys/netinet/ip_carp.c speaks it (read there, checked here against
scapy's CARP layer and Wireshark's dissector, tests/test_codec_ipv6.py):

- The packet: an IPv6 header (next header 112, hop limit 255, traffic class and flow label 0,
  destination the group, ff02::12 by default; source the host's `address6`) and the same 36-byte
  CARP header as over IPv4, nothing after it: 76 bytes.
- The checksum: the RFC 1071 sum over the 36 CARP bytes alone. No IPv6 pseudo-header, unlike
  ICMPv6 or UDP (carp6_input sums exactly sizeof(struct carp_header) from the CARP header). So a
  raw IPv6 socket must leave IPV6_CHECKSUM off (its default for protocols other than ICMPv6), or
  the kernel would write a pseudo-header sum into the packet.
- The digest: HMAC-SHA1 keyed with the password over version, type, vhid, then the vhid's IPv6
  addresses (16 bytes each, in ascending order, link-local ones with their embedded scope
  cleared; IPv4 ones before them), then the 8 counter bytes as on the wire (carp_hmac_prepare
  and carp_hmac_generate). A vhid carrying exactly one IPv6 VIP, as every iprotate vhid does,
  hashes 0x02 0x01 vhid VIP(16) counter(8): 27 bytes. `digest` computes it from `vip.packed`.
- What a raw AF_INET6 socket gives: the CARP bytes without the IPv6 header; the source comes
  with recvfrom, the hop limit and the destination in ancillary data (IPV6_RECVHOPLIMIT,
  IPV6_RECVPKTINFO). `decode_packet6` takes those four. FreeBSD checks the hop limit first,
  then the length, then the checksum; a payload longer than 36 bytes passes there (it sums 36),
  here it is LONG, as over IPv4: no CARP speaker sends more.
- Sending: the 36 CARP bytes (`encode_advert`, as over IPv4) to (group, 0) with the multicast
  hop limit 255 (IPV6_MULTICAST_HOPS; the unicast hop limit does not apply to multicast).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from iprotate.cluster.model import IPAddress

CARP_PROTO = 112
CARP_LEN = 36  # CARP header bytes
IP_HEADER_LEN = 20  # IPv4 header without options
IPV6_HEADER_LEN = 40  # IPv6 fixed header (CARP adverts carry no extension header)
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
# version/traffic class/flow label, payload length, next header, hop limit, src, dst
_IP6 = struct.Struct("!IHBB16s16s")
# 16-bit words of the two lengths every advert is summed at (CARP bytes alone; IP header + CARP).
# A whole IPv4 advert without options, the fields `advert_fields` looks at: version and IHL,
# total length, TTL, protocol, CARP version and type, advskew, advbase, counter, digest.
_PACKET = struct.Struct("!BxH4xBB10xB1xBxxB2xQ20s")
PACKET_LEN = IP_HEADER_LEN + CARP_LEN


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
    NOT_IPV6 = "not_ipv6"  # decode_ipv6_packet: version nibble not 6; decode_packet6: a v4 address
    BAD_IHL = "bad_ihl"  # IP header length field below 5 words
    IP_OPTIONS = "ip_options"  # IP header longer than 20 bytes (ucarp accepts, summing them)
    BAD_LENGTH = "bad_length"  # IP total length differs from the bytes given (the kernel trims)
    BAD_PROTO = "bad_proto"  # IP protocol is not 112
    BAD_TTL = "bad_ttl"  # TTL (IPv6: hop limit) not 255: it crossed a router (ucarp: "Bad TTL")
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
        # One dict update, not seven object.__setattr__ (a frozen dataclass has a __dict__).
        a.__dict__.update(
            vhid=vhid,
            advskew=advskew,
            advbase=advbase,
            counter=counter,
            digest=digest,
            authlen=authlen,
            pad=pad,
        )
        return a

    def __post_init__(self) -> None:
        for name in ("vhid", "advskew", "advbase", "authlen", "pad"):
            _check_byte(name, getattr(self, name))
        _check_counter(self.counter)
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_LEN:
            raise ValueError(f"digest must be {DIGEST_LEN} bytes, got {self.digest!r}")


@dataclass(frozen=True)
class Packet:
    """A received packet carrying an advertisement: IPv4, or IPv6 (`ttl` is then the hop limit;
    src and dst are of one family)."""

    src: IPAddress
    dst: IPAddress
    ttl: int
    advert: Advert


def _ones_sum(data: bytes) -> int:
    """RFC 1071 ones'-complement sum of big-endian 16-bit words, folded to 16 bits.

    0 only for all-zero data, otherwise 1..0xffff; ucarp's running sum gives the same values.
    """
    if len(data) % 2:
        data += b"\0"
    # The data as one big-endian number is the sum of its words modulo 0xFFFF (2**16 is 1
    # modulo 0xFFFF), and folding the carries keeps that remainder: one remainder instead of
    # unpacking and adding the words, the checksum of every advert sent and received
    # (bench/scale.py). A remainder of 0 is 0xFFFF unless every word is 0.
    rest = int.from_bytes(data, "big") % 0xFFFF
    return rest if rest or not any(data) else 0xFFFF


def checksum(data: bytes) -> int:
    """The Internet checksum of data (with its checksum field zeroed), as stored in a header."""
    return ~_ones_sum(data) & 0xFFFF


def digest(password: bytes, vhid: int, vip: IPAddress, counter: int) -> bytes:
    """HMAC-SHA1 keyed with the raw password over 0x02 0x01 vhid vip counter: 15 bytes for an
    IPv4 VIP (ucarp), 27 for an IPv6 one (FreeBSD, a vhid with one IPv6 address)."""
    prefix = digest_prefix(vhid, vip)
    _check_counter(counter)
    return digest_after(password, prefix, counter)


def digest_prefix(vhid: int, vip: IPAddress) -> bytes:
    """The part of the digest's message fixed for a VIP: 0x02 0x01 vhid vip. Made once per VIP
    by the receive and send paths (bench/scale.py), the counter appended per advert."""
    _check_byte("vhid", vhid)
    return bytes((CARP_VERSION, CARP_TYPE_ADVERTISEMENT, vhid)) + vip.packed


class KeyedMac:
    """HMAC under one key, the key set up once: the same MAC as hmac.digest(key, msg, name)
    (RFC 2104: H(key ^ opad, H(key ^ ipad, msg))), each MAC copying the two hash states keyed
    at the start. OpenSSL 3's one-shot HMAC sets the key up on every call, 1.3 to 1.5 us; a copy
    of its keyed HMAC object 0.70 us; the two hash copies here 0.58 us (hashlib's own states,
    the key's blocks hashed once), and every advert sent or received takes two (bench/scale.py)."""

    __slots__ = ("inner", "key", "name", "outer")

    def __init__(self, key: bytes, name: str) -> None:
        self.key, self.name = key, name
        block = hashlib.new(name).block_size
        if len(key) > block:  # RFC 2104: a key longer than a block is hashed first
            key = hashlib.new(name, key).digest()
        key = key.ljust(block, b"\0")
        # The keyed states, only ever copied (a hot path may copy them itself: see encode).
        self.inner: Any = hashlib.new(name, key.translate(_IPAD))
        self.outer: Any = hashlib.new(name, key.translate(_OPAD))

    def __call__(self, msg: bytes) -> bytes:
        inner = self.inner.copy()
        inner.update(msg)
        outer = self.outer.copy()
        outer.update(inner.digest())
        digest: bytes = outer.digest()
        return digest


_IPAD = bytes(b ^ 0x36 for b in range(256))  # HMAC's inner and outer key pads, as tables
_OPAD = bytes(b ^ 0x5C for b in range(256))


def digest_after(password: bytes, prefix: bytes, counter: int) -> bytes:
    """`digest` from the VIP's `digest_prefix` and a 64-bit counter."""
    return digest_with(KeyedMac(password, "sha1"), prefix, counter)


def digest_with(mac: KeyedMac, prefix: bytes, counter: int) -> bytes:
    """`digest_after` with the password's HMAC-SHA1 set up beforehand (`KeyedMac`)."""
    return mac(prefix + counter.to_bytes(8, "big"))


def verify(advert: Advert, password: bytes, vip: IPAddress) -> bool:
    """True if the advert's digest matches password and vip (constant-time compare)."""
    return verify_after(advert, password, digest_prefix(advert.vhid, vip))


def verify_after(advert: Advert, password: bytes, prefix: bytes) -> bool:
    """`verify` with the VIP's `digest_prefix` made beforehand (its vhid must be the advert's:
    the caller looked the VIP up by it)."""
    return verify_digest(advert.digest, KeyedMac(password, "sha1"), prefix, advert.counter)


def verify_digest(digest: bytes, mac: KeyedMac, prefix: bytes, counter: int) -> bool:
    """`verify_after` from an advert's digest and counter, with the password's HMAC-SHA1 set
    up beforehand (`KeyedMac`); a constant-time compare."""
    # digest_with and the KeyedMac call, inlined: two calls less per advert heard.
    inner = mac.inner.copy()
    inner.update(prefix + counter.to_bytes(8, "big"))
    outer = mac.outer.copy()
    outer.update(inner.digest())
    return hmac.compare_digest(outer.digest(), digest)


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
    vip: IPAddress,
    password: bytes,
) -> bytes:
    """The 36 CARP bytes of an advertisement as ucarp sends it (an IPv6 VIP: as FreeBSD does),
    digest and checksum filled in. The same bytes go out over either family."""
    return AdvertEncoder(vhid, vip, password).encode(advbase, advskew, counter)


class AdvertEncoder:
    """`encode_advert` for one VIP: its vhid and password checked, and its digest's fixed bytes
    made, once. A master's send path encodes one advert per VIP a second (bench/scale.py)."""

    __slots__ = ("_fixed_sum", "_mac", "_prefix", "password", "vhid", "vip")

    def __init__(
        self, vhid: int, vip: IPAddress, password: bytes, mac: KeyedMac | None = None
    ) -> None:
        """`mac`: the password's KeyedMac for SHA-1, to share between the VIPs' encoders."""
        _check_byte("vhid", vhid, low=1)
        # A password ucarp cannot be given would fail every peer's digest check.
        if not 1 <= len(password) <= MAX_PASSWORD_LEN or b"\0" in password:
            raise ValueError(f"password must be 1..{MAX_PASSWORD_LEN} bytes without NUL")
        if mac is not None and (mac.key, mac.name) != (password, "sha1"):
            raise ValueError("mac must be the password's HMAC-SHA1")
        self.vhid, self.vip, self.password = vhid, vip, password
        self._mac = mac or KeyedMac(password, "sha1")
        self._prefix = digest_prefix(vhid, vip)
        # The 16-bit words of the header that every advert of this VIP shares (see encode).
        self._fixed_sum = ((CARP_VERSION << 4 | CARP_TYPE_ADVERTISEMENT) << 8 | vhid) + CARP_AUTHLEN

    def encode(self, advbase: int, advskew: int, counter: int) -> bytes:
        """The 36 CARP bytes of this VIP's advert with these values."""
        if not (0 <= advbase <= 0xFF and 0 <= advskew <= 0xFF and 0 <= counter <= _MAX_COUNTER):
            _check_byte("advbase", advbase)
            _check_byte("advskew", advskew)
            _check_counter(counter)
        if advbase == 0 and advskew == 0:
            raise ValueError("advbase and advskew cannot both be 0 (ucarp refuses it)")
        # pack_advert(Advert(...)) without the Advert: every field is checked above.
        # digest_with and the KeyedMac call, inlined: two calls less per advert sent (0.15 us,
        # bench/scale.py).
        mac = self._mac
        inner = mac.inner.copy()
        inner.update(self._prefix + counter.to_bytes(8, "big"))
        outer = mac.outer.copy()
        outer.update(inner.digest())
        digest = outer.digest()
        # The checksum from the fields, before packing (no packing twice, no slices): the
        # bytes' ones'-complement sum is their words' sum modulo 0xFFFF (see _ones_sum), and a
        # field's words sum to its value modulo 0xFFFF too (2**16 is 1 modulo 0xFFFF). The
        # header's words: version/type and vhid, advskew and authlen, pad (0) and advbase, the
        # checksum (0). Never all zero (the version): a remainder of 0 is 0xFFFF. Property-
        # tested against pack_advert (tests/test_codec.py); 0.3 us an advert (bench/scale.py).
        rest = (
            self._fixed_sum + (advskew << 8) + advbase + counter + int.from_bytes(digest, "big")
        ) % 0xFFFF
        return _CARP.pack(
            (CARP_VERSION << 4) | CARP_TYPE_ADVERTISEMENT,
            self.vhid,
            advskew,
            CARP_AUTHLEN,
            0,
            advbase,
            0xFFFF ^ (rest or 0xFFFF),
            counter,
            digest,
        )


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
    src, dst, ttl, advert = decode_fields(data)
    return Packet(src=IPv4Address(src), dst=IPv4Address(dst), ttl=ttl, advert=advert)


def decode_fields(data: bytes) -> tuple[bytes, bytes, int, Advert]:
    """`decode_packet`'s checks, every one, and its fields without address objects: (source,
    destination, each 4 packed bytes, TTL, advert). The receive path maps the packed addresses
    to objects it holds already: two IPv4Address built per advert were a tenth of decoding
    (bench/scale.py). Raises DecodeError."""
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
    return src, dst, ttl, advert


def advert_fields(data: bytes) -> tuple[int, int, int, bytes] | None:
    """(advskew, advbase, counter, digest) of `data` if `decode_fields` accepts it, else None
    (decode_fields then says why). The receive path's first try for every packet: no Advert
    built, one unpack (bench/scale.py)."""
    if len(data) != PACKET_LEN:
        return None
    vi, total, ttl, proto, vt, advskew, advbase, counter, md = _PACKET.unpack(data)
    if (
        vi != 0x45
        or total != PACKET_LEN
        or ttl != CARP_TTL
        or proto != CARP_PROTO
        or vt != (CARP_VERSION << 4) | CARP_TYPE_ADVERTISEMENT
        or _ones_sum(data) != 0xFFFF
    ):
        return None
    return advskew, advbase, counter, md


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


def decode_packet6(carp: bytes, src: IPv6Address, dst: IPv6Address, hop_limit: int) -> Packet:
    """Decode what a raw AF_INET6 socket for protocol 112 returns: the CARP bytes, with the
    source (recvfrom), destination (IPV6_PKTINFO) and hop limit (IPV6_HOPLIMIT). Raises
    DecodeError.

    Checks: the addresses are IPv6 (NOT_IPV6; a %zone is dropped), 36 bytes (SHORT/LONG), hop
    limit 255 (BAD_TTL: the packet crossed a router), version and type, the checksum over the 36
    CARP bytes alone (no pseudo-header, as carp6_input). The caller still checks source, group,
    vhid, digest.
    """
    if not isinstance(src, IPv6Address) or not isinstance(dst, IPv6Address):
        raise DecodeError(Reject.NOT_IPV6, f"addresses {src!r}, {dst!r}")
    # recvfrom gives link-local addresses with their zone ("fe80::3%eth1"), and ipaddress
    # compares (and hashes) the zone too: the host with address6 fe80::3 would be a stranger.
    # The socket is bound to one link, so the zone says nothing: drop it.
    src, dst = IPv6Address(src.packed), IPv6Address(dst.packed)
    carp = bytes(carp)
    _check_length(len(carp))
    if hop_limit != CARP_TTL:
        raise DecodeError(Reject.BAD_TTL, f"hop limit {hop_limit}")
    advert = _unpack_carp(carp)
    if _ones_sum(carp) != 0xFFFF:
        raise DecodeError(Reject.BAD_CHECKSUM, "CARP checksum")
    return Packet(src=src, dst=dst, ttl=hop_limit, advert=advert)


def decode_ipv6_packet(data: bytes) -> Packet:
    """Decode a whole IPv6 packet (a capture, an AF_PACKET read): the fixed header, next header
    112 directly (CARP adverts carry no extension header), then as `decode_packet6`."""
    data = bytes(data)
    if len(data) < IPV6_HEADER_LEN:
        raise DecodeError(Reject.SHORT, f"{len(data)} bytes, no room for an IPv6 header")
    vtf, payload_length, next_header, hop_limit, src, dst = _IP6.unpack_from(data)
    if vtf >> 28 != 6:
        raise DecodeError(Reject.NOT_IPV6, f"IP version {vtf >> 28}")
    if payload_length != len(data) - IPV6_HEADER_LEN:
        raise DecodeError(
            Reject.BAD_LENGTH, f"payload length {payload_length}, got {len(data) - IPV6_HEADER_LEN}"
        )
    if next_header != CARP_PROTO:
        raise DecodeError(Reject.BAD_PROTO, f"next header {next_header}")
    return decode_packet6(data[IPV6_HEADER_LEN:], IPv6Address(src), IPv6Address(dst), hop_limit)


def build_ipv6_packet(
    src: IPv6Address,
    dst: IPv6Address,
    carp: bytes,
    hop_limit: int = CARP_TTL,
    *,
    traffic_class: int = 0,
    flow_label: int = 0,
    next_header: int = CARP_PROTO,
) -> bytes:
    """A whole IPv6 packet around carp (any length), as FreeBSD sends an advert: traffic class
    and flow label 0, no extension header. The engine lets the kernel build it; this is for
    captures, tests and the lab's attacker."""
    _check_byte("hop_limit", hop_limit)
    _check_byte("traffic_class", traffic_class)
    _check_byte("next_header", next_header)
    if not 0 <= flow_label < 1 << 20:
        raise ValueError(f"flow_label must be in 0..2**20-1, got {flow_label!r}")
    if len(carp) > 0xFFFF:
        raise ValueError(f"payload of {len(carp)} bytes does not fit an IPv6 packet (no jumbo)")
    vtf = 6 << 28 | traffic_class << 20 | flow_label
    header = _IP6.pack(vtf, len(carp), next_header, hop_limit, src.packed, dst.packed)
    return header + bytes(carp)
