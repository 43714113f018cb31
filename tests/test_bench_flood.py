"""Smoke tests for the flood benchmark's pure parts (bench/flood.py): the packets each flood kind
sends are what the receive path must drop, and for the reason the page says; the sender's pacing;
the parsing of /proc/net/raw; the headline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from iprotate.carp import codec
from iprotate.carp.node import Node
from iprotate.lab.lab import Lab
from iprotate.lab.netns import Segment

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import flood  # noqa: E402


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path, hosts=flood.HOSTS, vips=flood.VIPS)  # not entered: the plan only


def feed(lab: Lab, host: str, packets: list[bytes]) -> Node:
    node = Node.build(lab.plan, host)
    node.start(0.0)
    for p in packets:
        assert node.packet(1.0, p) == []
    return node


def test_stranger_flood_is_valid_adverts_from_no_host(lab: Lab) -> None:
    pkts = flood.flood_packets("stranger", lab.plan, count=18)
    for p in pkts:
        pkt = codec.decode_packet(p)
        assert pkt.src == flood.STRANGER and pkt.dst == flood.GROUP
        vip = next(v for v in lab.plan.vips if v.vhid == pkt.advert.vhid)
        assert codec.verify(pkt.advert, lab.plan.cluster.password, vip.ip)
    assert {codec.decode_packet(p).advert.vhid for p in pkts} == {v.vhid for v in lab.plan.vips}
    assert feed(lab, "alpha", pkts).counters["drop_not_a_host"] == 18


def test_spoofed_flood_passes_the_digest_and_fails_the_tag(lab: Lab) -> None:
    pkts = flood.flood_packets("spoofed", lab.plan, count=90)
    owners = {lab.plan.cluster.host(v.owner).address for v in lab.plan.vips}
    assert {codec.decode_packet(p).src for p in pkts} == owners
    node = feed(lab, "alpha", pkts)
    # alpha's own address: ignored as its own advert; the other hosts': forged.
    mine = sum(1 for p in pkts if codec.decode_packet(p).src == node.address)
    assert mine == 30
    assert node.counters["drop_forged"] == 60
    assert node.counters["drop_bad_digest"] == 0 and node.counters["adverts_received"] == 0


def test_garbage_flood_fails_the_decoder(lab: Lab) -> None:
    node = feed(lab, "bravo", flood.flood_packets("garbage", lab.plan, count=50))
    drops = sum(n for k, n in node.counters.items() if k.startswith("drop_"))
    assert drops == 50 and node.counters["adverts_received"] == 0


def test_unknown_kind_is_refused(lab: Lab) -> None:
    with pytest.raises(ValueError, match="unknown flood kind"):
        flood.flood_packets("nonsense", lab.plan)


def test_rates_and_pacing() -> None:
    assert flood.parse_rates("10000, 30k,max,") == [10000, 30000, 0]
    assert flood.due(0.0, 1000, 0) == 1
    assert flood.due(0.5, 1000, 0) == flood.BATCH  # behind: a whole batch, no more
    assert flood.due(0.5, 1000, 501) == 0  # ahead: wait
    assert flood.due(9.9, 0, 10**9) == flood.BATCH  # max: always a batch


def test_raw_drops_reads_the_carp_sockets_only() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode ref pointer drops\n"
        "  112: 00000000:0070 00000000:0000 07 00000000:00000000 00:00000000 00000000     0 "
        "       0 1234 2 0000000000000000 4567\n"
        "    1: 00000000:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0 "
        "       0 1235 2 0000000000000000 99\n"
    )
    assert flood.raw_drops(text) == 4567


def run(kind: str, rate: int, sent: int, transitions: int, two: list[str] | None = None) -> dict:
    return {
        "kind": kind,
        "target": rate,
        "sender": {"rate": sent},
        "transitions": transitions,
        "two_hosts": two or [],
        "no_host": [],
        "received_rate": sent,
        "hosts": {"alpha": {"cpu_pct": 1.0, "kernel_drops": 0, "counters": {"drop_forged": 5}}},
    }


def test_survived_is_the_highest_rate_below_the_first_failure() -> None:
    results = [
        run("spoofed", 10000, 9990, 0),
        run("spoofed", 30000, 29000, 0),
        run("spoofed", 100000, 50000, 2),
        run("spoofed", 0, 55000, 0),  # above a failure: does not count
        run("stranger", 10000, 9999, 0, two=["203.0.113.10"]),
    ]
    assert flood.survived(results) == {"spoofed": 29000, "stranger": None}
    page = flood.markdown(results, 10.0)
    assert "| spoofed | 100,000 | 50,000 | 50,000 | 2 | 0 / 0 (0 / 0) |" in page
    assert "spoofed: 29,000/s; stranger: none" in page


def test_tally_counts_failed_runs_by_rate_sent() -> None:
    results = [
        run("spoofed", 30000, 29990, 0),
        run("spoofed", 30000, 30004, 14),
        run("spoofed", 0, 41000, 0, two=["203.0.113.10"]),
    ]
    assert flood.tally(results) == ["- spoofed: 30,000/s 1 of 2, 40,000/s 1 of 1"]


@pytest.mark.netns
def test_the_sender_paces_its_flood_and_it_reaches_the_segment(tmp_path: Path) -> None:
    """One second at 2,000 packets/s from a client namespace: the rate it reports, and a host's
    interface received them all (the segment is the test's own bridge)."""
    lab = Lab(tmp_path, hosts=1, vips=1)  # the plan only, for the packets
    pkts = tmp_path / "packets.hex"
    pkts.write_text("\n".join(p.hex() for p in flood.flood_packets("stranger", lab.plan, 16)))
    result = tmp_path / "sent.json"
    argv = [sys.executable, str(BENCH / "flood.py"), "--send", "--interface", "eth0"]
    argv += ["--packets", str(pkts), "--rate", "2000", "--duration", "1", "--result", str(result)]
    with Segment() as seg:
        seg.add("alpha", 1)
        seg.add("client", 200, "eth0")

        def rx() -> int:
            out = json.loads(seg.run("alpha", "ip", "-s", "-j", "link", "show", "eth1"))
            return int(out[0]["stats64"]["rx"]["packets"])

        before = rx()
        seg.run("client", *argv)
        got = rx() - before
    sent = json.loads(result.read_text())
    assert 0.9 <= sent["seconds"] <= 1.5
    assert 1800 <= sent["sent"] <= 2100
    assert got >= sent["sent"]
