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

from iprotate.carp.codec import hmac_digest
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
    msg = src.packed + group.packed + bytes((vhid, advbase, advskew)) + vip.packed
    msg += seq.to_bytes(4, "big")
    # One-shot HMAC (no object per advert): the same HMAC-SHA256, cheaper on both the send and
    # the receive path (bench/scale.py).
    return int.from_bytes(hmac_digest(key, msg, "sha256")[:4], "big")


def split(counter: int) -> tuple[int, int]:
    """(seq, tag) of a counter."""
    return counter >> SEQ_BITS, counter & TAG_MASK


@dataclass
class NativeAuth:
    """One host's side: seals the counters it sends, checks the ones its iprotate peers send."""

    key: bytes
    src: IPv4Address  # our own address: what our tags cover
    src6: IPv6Address | None = None  # our IPv6 source: what our IPv6 VIPs' tags cover
    sent: dict[Key, int] = field(default_factory=dict)  # last seq sent per VIP
    top: dict[Key, int] = field(default_factory=dict)  # highest seq accepted per VIP, any peer
    heard: dict[tuple[IPAddress, Key], int] = field(default_factory=dict)  # per peer and VIP
    # (sender, VIP) -> (vip, the tag message's bytes before vhid and after it): made once, not
    # three `packed` per advert (bench/scale.py). Bounded by senders times VIPs; `forget` and a
    # VIP's address changing renew it.
    _parts: dict[tuple[IPAddress, Key], tuple[IPAddress, bytes, bytes]] = field(
        default_factory=dict, repr=False
    )

    def _tag(
        self, src: IPAddress, k: Key, vip: IPAddress, advbase: int, advskew: int, seq: int
    ) -> int:
        """`tag(self.key, src, *k, vip, advbase, advskew, seq)`, with the fixed parts cached."""
        parts = self._parts.get((src, k))
        if parts is None or (parts[0] is not vip and parts[0] != vip):
            parts = self._parts[(src, k)] = (vip, src.packed + k[0].packed, vip.packed)
        msg = parts[1] + bytes((k[1], advbase, advskew)) + parts[2] + seq.to_bytes(4, "big")
        return int.from_bytes(hmac_digest(self.key, msg, "sha256")[:4], "big")

    @classmethod
    def for_password(
        cls, password: bytes, src: IPv4Address, src6: IPv6Address | None = None
    ) -> NativeAuth:
        return cls(derive_key(password), src, src6)

    def counter(
        self, k: Key, vip: IPAddress, advbase: int, advskew: int, wall_seconds: float
    ) -> int:
        """The counter of our next advert for VIP `k` with this priority."""
        src = self.src6 if k[0].version == 6 else self.src
        if src is None:
            raise ValueError(f"no IPv6 source to seal adverts for {vip}")
        seq = max(self.sent.get(k, 0) + 1, self.top.get(k, 0) + 1, int(wall_seconds))
        seq = min(seq, MAX_SEQ)  # the year 2106; a full seq is replayed, never wrapped
        self.sent[k] = seq
        t = self._tag(src, k, vip, advbase, advskew, seq)
        return seq << SEQ_BITS | t

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
        seq, got = split(counter)
        want = self._tag(src, k, vip, advbase, advskew, seq)
        if not hmac.compare_digest(want.to_bytes(4, "big"), got.to_bytes(4, "big")):
            return Verdict.FORGED
        peer = (src, k)
        last = self.heard.get(peer)
        top, sent = self.top.get(k), self.sent.get(k)
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
        self.heard[peer] = seq
        if seq > (top or 0):
            self.top[k] = seq
        return Verdict.OK

    def forget(self, keep: set[Key]) -> None:
        """Drop what we know of VIPs no longer planned (a reload)."""
        self.sent = {k: s for k, s in self.sent.items() if k in keep}
        self.top = {k: s for k, s in self.top.items() if k in keep}
        self.heard = {pk: s for pk, s in self.heard.items() if pk[1] in keep}
        self._parts = {}
