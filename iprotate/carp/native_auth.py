"""Authenticated senders and priorities between iprotate hosts, inside the counter ucarp copies.

Why: CARP's HMAC (codec.digest) covers the version, type, vhid, the VIP and the 64-bit counter,
not the sender's address, advbase or advskew (CARP.md). Anyone on the segment can therefore take a
captured advert, rewrite its priority or its source address, and send it again: the digest still
verifies. ucarp never checks the counter and only copies it, so iprotate hosts can carry in it
what the digest does not cover, and the packet stays one ucarp reads.

The counter an iprotate host sends is `seq << 32 | tag`:

- tag: the first 4 bytes of HMAC-SHA256 under a key derived from the password, over the sender's
  address, the group, vhid, advbase, advskew, the VIP and seq. A rewritten priority, a packet
  sent again under another host's address, or for another VIP fails it (FORGED). Guessing a tag
  takes 2**31 packets on average; each one costs the attacker a packet on the wire.
- seq: grows with every advert of that VIP, and never falls below the wall clock in seconds nor
  below the highest seq heard for that VIP from any iprotate peer (a Lamport clock). A receiver
  keeps the last seq it accepted from each (peer, VIP) and drops anything not above it (REPLAY):
  a dead master's captured adverts replayed do not hold off its takeover. A seq below the highest
  one seen for that VIP from any host (us included) is dropped too (STALE): the VIP's current
  master always advertises the highest seq of its VIP (it lifts its own above whatever it hears),
  so only a replayed or superseded advert is below it. That also covers a receiver that has never
  heard the replayed host: the first genuine advert it hears for the VIP sets the bar.

Why no restart can lock a host out for long: a restarted host (any clock, a lost counter) starts
as a backup and hears the VIP's current master before it may advertise; that master's seq is
above everything the restarted host sent before (Lamport), so the restarted host's first seq is
too. When nobody advertises the VIP (it was the master and restarted within D), its backups drop
its adverts for at most D, take the VIP, and their adverts lift its seq above theirs: it is heard
again one interval later. A replayed packet can only carry a seq its real sender has already
used, so it never raises a receiver's mark above what that sender's next advert carries.

Why a seq far ahead is dropped (FUTURE): seq saturates at 2**32 - 1 (it must never wrap, or an
old advert would look new), and a receiver's marks only grow. One advert accepted with a seq
near the top, from a host's clock set decades ahead or from an attacker's lucky tag guess (one
in 2**32 tries, hours of flooding), would lift every host's seq of that VIP to the top, where
each advert equals the last and is dropped as a replay: every host master, for good. So a seq
more than MAX_JUMP above everything the receiver knows (its marks, and its own wall clock) is
dropped: a clock up to eight years ahead is still heard, and reaching the top takes an attacker
ten lucky guesses in a row, each one counted. A receiver that knows no seq of the VIP yet (just
started) takes the first one as it comes: it must hear the current master, whatever its seq.

ucarp hosts' adverts carry ucarp's own counters (random, then copied): they are not checked here.
Pure: no socket, no clock; the caller passes the wall-clock seconds.

IPv6 VIPs (issue 11): the same counter, the tag over the same fields with the IPv6 addresses'
16 bytes (sender's address6, group, VIP): 55 bytes instead of 19, so a tag of one family never
verifies as the other's. A host seals its IPv6 adverts with its address6 (`src6`); the marks
are kept per (sender address, group, vhid), so IPv6 sources have their own.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from iprotate.carp.codec import KeyedMac
from iprotate.cluster.model import IPAddress

SEQ_BITS = 32
MAX_SEQ = (1 << SEQ_BITS) - 1
TAG_MASK = (1 << 32) - 1
# How far above what a receiver knows a seq may jump: 2**28 s is eight and a half years of wall
# clock at one advert a second, and a tenth of the room left below MAX_SEQ in 2026.
MAX_JUMP = 1 << 28
_KEY_LABEL = b"iprotate native advert key v1"

Key = tuple[IPAddress, int]  # (group, vhid); an IPv6 group for an IPv6 VIP


class Verdict(enum.Enum):
    OK = "ok"
    FORGED = "forged"  # the tag does not match: rewritten priority, source or VIP
    REPLAY = "replay"  # a seq not above the last one accepted from that peer for that VIP
    STALE = "stale"  # a seq below one already seen for that VIP from anyone: an old advert
    FUTURE = "future"  # a seq more than MAX_JUMP ahead: a forged guess, or a clock years ahead


def derive_key(password: bytes) -> bytes:
    """The tag key: kept apart from the CARP password so the two MACs never share a key."""
    return hmac.new(password, _KEY_LABEL, hashlib.sha256).digest()


def tag(
    key: bytes,
    src: IPAddress,
    group: IPAddress,
    vhid: int,
    vip: IPAddress,
    advbase: int,
    advskew: int,
    seq: int,
) -> int:
    """The 32-bit tag over everything the CARP digest leaves out, and seq."""
    head = src.packed + group.packed + bytes((vhid,))
    mac = KeyedMac(key, "sha256")
    return int.from_bytes(_tag_bytes(mac, head, advbase, advskew, vip.packed, seq), "big")


def _tag_bytes(
    mac: KeyedMac, head: bytes, advbase: int, advskew: int, vip_packed: bytes, seq: int
) -> bytes:
    """The tag's 4 bytes; `head` is `tag_head` (sender, group, vhid), `mac` the key's
    HMAC-SHA256."""
    return mac(head + bytes((advbase, advskew)) + vip_packed + seq.to_bytes(4, "big"))[:4]


def split(counter: int) -> tuple[int, int]:
    """(seq, tag) of a counter."""
    return counter >> SEQ_BITS, counter & TAG_MASK


@dataclass(slots=True)
class Marks:
    """What one host knows of one VIP's seqs: the last it sent, the highest it accepted from
    any peer, and the last accepted from each peer (None: none yet)."""

    sent: int | None = None
    top: int | None = None
    heard: dict[IPAddress, int] = field(default_factory=dict)


def tag_head(src: IPAddress, k: Key) -> bytes:
    """The fixed start of a tag's message for adverts of VIP `k` from `src`."""
    return src.packed + k[0].packed + bytes((k[1],))


@dataclass
class NativeAuth:
    """One host's side: seals the counters it sends, checks the ones its iprotate peers send.

    The marks are kept per VIP (`Marks`): a receive or send path that holds a VIP's Marks and
    its tag message's fixed bytes calls `judge` and `seal` with them, without a lookup keyed by
    addresses per advert (bench/scale.py); `check` and `counter` find them first."""

    key: bytes
    src: IPv4Address  # our own address: what our tags cover
    src6: IPv6Address | None = None  # our IPv6 source: what our IPv6 VIPs' tags cover
    marks: dict[Key, Marks] = field(default_factory=dict)
    _mac: KeyedMac = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._mac = KeyedMac(self.key, "sha256")

    def rekey(self, key: bytes) -> None:
        """Seal and check with another key from now on (the password changed)."""
        self.key, self._mac = key, KeyedMac(key, "sha256")

    @classmethod
    def for_password(
        cls, password: bytes, src: IPv4Address, src6: IPv6Address | None = None
    ) -> NativeAuth:
        return cls(derive_key(password), src, src6)

    # Read-only views for status and tests: per VIP, and per (peer, VIP).
    @property
    def sent(self) -> dict[Key, int]:
        return {k: m.sent for k, m in self.marks.items() if m.sent is not None}

    @property
    def top(self) -> dict[Key, int]:
        return {k: m.top for k, m in self.marks.items() if m.top is not None}

    @property
    def heard(self) -> dict[tuple[IPAddress, Key], int]:
        return {(src, k): s for k, m in self.marks.items() for src, s in m.heard.items()}

    def marks_of(self, k: Key) -> Marks:
        """VIP `k`'s marks (made on first use; the caller asks only for planned VIPs)."""
        m = self.marks.get(k)
        if m is None:
            m = self.marks[k] = Marks()
        return m

    def own_source(self, k: Key) -> IPAddress:
        """The address our adverts for VIP `k` are sealed with: of its group's family."""
        src = self.src6 if k[0].version == 6 else self.src
        if src is None:
            raise ValueError(f"no IPv6 source to seal adverts of vhid {k[1]} in {k[0]}")
        return src

    def counter(
        self, k: Key, vip: IPAddress, advbase: int, advskew: int, wall_seconds: float
    ) -> int:
        """The counter of our next advert for VIP `k` with this priority."""
        head = tag_head(self.own_source(k), k)
        return self.seal(self.marks_of(k), head, vip.packed, advbase, advskew, wall_seconds)

    def seal(
        self,
        marks: Marks,
        head: bytes,
        vip_packed: bytes,
        advbase: int,
        advskew: int,
        wall_seconds: float,
    ) -> int:
        """`counter` for the VIP whose `marks` these are, `head` its `tag_head` from our own
        source and `vip_packed` its address."""
        # max(sent + 1, top + 1, the wall clock), capped at MAX_SEQ: the year 2106; a full seq
        # is replayed, never wrapped. Compared one by one: max and min with a tuple cost 0.2 us
        # an advert sent (bench/scale.py). Seqs are >= 0: a missing mark counts as 0.
        seq = int(wall_seconds)
        above = (marks.sent or 0) + 1
        if above > seq:
            seq = above
        above = (marks.top or 0) + 1
        if above > seq:
            seq = above
        if seq > MAX_SEQ:
            seq = MAX_SEQ
        marks.sent = seq
        # _tag_bytes and the KeyedMac call, inlined: two calls less per advert sent
        # (bench/scale.py).
        mac = self._mac
        inner = mac.inner.copy()
        inner.update(head + bytes((advbase, advskew)) + vip_packed + seq.to_bytes(4, "big"))
        outer = mac.outer.copy()
        outer.update(inner.digest())
        return seq << SEQ_BITS | int.from_bytes(outer.digest()[:4], "big")

    def check(
        self,
        src: IPAddress,
        k: Key,
        vip: IPAddress,
        advbase: int,
        advskew: int,
        counter: int,
        wall_seconds: float | None = None,
    ) -> Verdict:
        """Judge an advert from iprotate peer `src` (its CARP digest already verified).

        `wall_seconds`, our wall clock, is part of what a seq may not jump far above (FUTURE);
        without it that check is skipped."""
        marks = self.marks_of(k)
        return self.judge(
            marks, src, tag_head(src, k), vip.packed, advbase, advskew, counter, wall_seconds
        )

    def judge(
        self,
        marks: Marks,
        src: IPAddress,
        head: bytes,
        vip_packed: bytes,
        advbase: int,
        advskew: int,
        counter: int,
        wall_seconds: float | None = None,
    ) -> Verdict:
        """`check` for the VIP whose `marks` these are, `head` its `tag_head` from `src`."""
        seq = counter >> SEQ_BITS
        # _tag_bytes and the KeyedMac call, inlined: two calls less per advert heard.
        mac = self._mac
        inner = mac.inner.copy()
        inner.update(head + bytes((advbase, advskew)) + vip_packed + seq.to_bytes(4, "big"))
        outer = mac.outer.copy()
        outer.update(inner.digest())
        want = outer.digest()[:4]
        if not hmac.compare_digest(want, (counter & TAG_MASK).to_bytes(4, "big")):
            return Verdict.FORGED
        last = marks.heard.get(src)
        top, sent = marks.top, marks.sent
        if wall_seconds is not None and (top is not None or sent is not None or last is not None):
            # Only against marks: a host that knows nothing of the VIP yet (just started) must
            # hear its master whatever its seq (sub-second intervals lift seqs above the wall
            # clock by 15 a second, and Lamport keeps them there). Seqs are >= 0: a missing
            # mark counts as 0.
            known = max(int(wall_seconds), top or 0, sent or 0, last or 0)
            if seq > known + MAX_JUMP:
                return Verdict.FUTURE
        if last is not None and seq <= last:
            return Verdict.REPLAY
        if seq < max(top or 0, sent or 0):
            return Verdict.STALE
        marks.heard[src] = seq
        if seq > (top or 0):
            marks.top = seq
        return Verdict.OK

    def forget(self, keep: set[Key]) -> None:
        """Drop what we know of VIPs no longer planned (a reload)."""
        self.marks = {k: m for k, m in self.marks.items() if k in keep}
