"""Smoke tests for the failover benchmark's building blocks (bench/failover.py and friends): the
keepalived configuration it derives from a plan, the client's packets and the arithmetic, and,
in namespaces, one tiny run of every scenario and a keepalived takeover."""

from __future__ import annotations

import re
import shutil
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from labtools import settled, wait_for

from iprotate.lab.lab import Lab

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import failover  # noqa: E402
import pinger  # noqa: E402
from keepalived import KeepalivedLab, keepalived_conf, master_down, priority  # noqa: E402

INSTANCE = re.compile(
    r"vrrp_instance VI_(\d+) \{\s*state BACKUP\s*interface (\S+)\s*virtual_router_id (\d+)\s*"
    r"priority (\d+)\s*advert_int (\d+)\s*virtual_ipaddress \{\s*(\S+) dev (\S+)\s*\}\s*\}"
)


def test_keepalived_conf_has_one_instance_per_vip_with_priorities_in_plan_order(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path, hosts=3, vips=12)  # not entered: only the cluster file and the plan
    prio: dict[str, dict[str, int]] = {}  # vip -> host -> priority
    for host in lab.names:
        text = keepalived_conf(lab.plan, host)
        assert "nopreempt" not in text and "unicast" not in text
        found = INSTANCE.findall(text)
        assert len(found) == text.count("vrrp_instance") == len(lab.plan.for_host(host))
        for name, iface, vrid, p, adv, vip, dev in found:
            v = lab.vip(vip)
            assert int(name) == int(vrid) == v.vhid
            assert (iface, dev, vip) == ("eth1", "eth1", str(v.address))
            assert int(adv) == lab.plan.cluster.advbase
            prio.setdefault(vip, {})[host] = int(p)
    assert len(prio) == 12
    for vip, by_host in prio.items():
        order = lab.vip(vip).order
        ranked = [by_host[h] for h in order]
        assert ranked == sorted(ranked, reverse=True) and len(set(ranked)) == len(ranked), vip
        assert all(1 <= p <= 254 for p in ranked)


def test_priorities_and_bounds() -> None:
    assert [priority(r, 3) for r in range(3)] == [250, 200, 150]
    many = [priority(r, 20) for r in range(20)]
    assert many == sorted(many, reverse=True) and len(set(many)) == 20 and many[-1] >= 1
    with pytest.raises(ValueError):
        priority(3, 3)
    assert master_down(1, 200) == pytest.approx(3 + 56 / 256)


def test_keepalived_refuses_subsecond(tmp_path: Path) -> None:
    lab = Lab(tmp_path, hosts=2, vips=2, advbase=0)
    with pytest.raises(ValueError, match="advbase"):
        keepalived_conf(lab.plan, "alpha")


def test_echo_request_and_reply_parsing() -> None:
    req = pinger.echo_request(0x1234, 70_000, 5)
    assert pinger.checksum(req) == 0  # a valid checksum sums to zero
    assert struct.unpack("!BBHHH", req[:8])[3:] == (0x1234, 70_000 & 0xFFFF)
    # The reply a host would send: type 0, same id, sequence and payload, in an Ethernet frame.
    icmp = bytes([0, 0]) + b"\0\0" + req[4:]
    ip = bytes([0x45]) + b"\0" * 8 + bytes([1]) + b"\0" * 10
    frame = b"\x02" * 6 + bytes.fromhex("0a0b0c0d0e0f") + b"\x08\x00" + ip + icmp
    assert pinger.parse_reply(frame, 0x1234) == (70_000, 5, "0a:0b:0c:0d:0e:0f")
    assert pinger.parse_reply(frame, 0x4321) is None  # another pinger's
    assert pinger.parse_reply(frame[:20], 0x1234) is None


def test_percentile_stable_run_and_segments() -> None:
    assert failover.percentile([], 50) is None
    assert failover.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert failover.percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    r = failover.Reply
    rs = [r(1.0, 1, "a"), r(1.1, 2, "b"), r(1.2, 3, "a"), r(1.3, 4, "a"), r(1.4, 5, "a")]
    assert failover.stable_since(rs, [1, 2, 3, 4, 5], "a") == 1.2
    assert failover.stable_since(rs, [1, 2, 3, 4, 5, 6], "a") is None  # the last one lost
    sent = {i: 0.99 + i * 0.01 for i in range(1, 6)}
    assert failover.segments(rs, sent, 1.0, 0.0, 2.0) == [
        [0.0, 0.01, "a"],
        [0.01, 0.02, "b"],
        [0.02, 0.05, "a"],
    ]


@pytest.mark.netns
def test_tiny_run_of_every_scenario(tmp_path: Path) -> None:
    """The sub-second engine on 2 hosts and 2 VIPs: the whole cycle in a few seconds."""
    t0 = time.monotonic()
    res = failover.run_engine(
        failover.ENGINES["iprotate-subsecond"], tmp_path / "run", repeat=1, hosts=2, vips=2
    )
    assert time.monotonic() - t0 < 30
    (run,) = res["runs"]
    assert [s["scenario"] for s in run["scenarios"]] == list(failover.SCENARIOS)
    for s in run["scenarios"]:
        assert s["settled"], s["scenario"]
        moved = [v for v in s["vips"].values() if v["moved"]]
        assert len(moved) == 1  # the victim's own VIP
        assert all(v["answer_s"] is not None and v["answer_s"] < s["window_s"] for v in moved)
        assert all(v["sent"] > 0 for v in s["vips"].values())
    rows = failover.table_rows([res])
    assert [row[1] for row in rows] == list(failover.SCENARIOS)
    assert "| iprotate-subsecond | hard" in failover.markdown(
        {"argv": [], "repeat": 1, "environment": failover.environment([]), "results": [res]}
    )


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("keepalived") is None, reason="needs Debian's keepalived")
def test_keepalived_lab_elects_the_plan_and_fails_over(tmp_path: Path) -> None:
    with KeepalivedLab(tmp_path, hosts=2, vips=2) as lab:
        failover.promote_secondaries(lab)
        for conf in ("all", "eth1"):
            path = f"/proc/sys/net/ipv4/conf/{conf}/promote_secondaries"
            assert lab.seg.run("bravo", "cat", path).strip() == "1"
        lab.start_all()
        wait_for(settled(lab), 10.0)
        assert len(lab.pids("alpha")) == 2  # the parent and its VRRP child
        failover.hard_fail(lab, "alpha")
        assert not lab.running("alpha")
        wait_for(settled(lab, {"alpha"}), 3 + 1.0 + 2.0)
        lab.restore("alpha")
        wait_for(settled(lab), 3 + 1.0 + 2.0)
        failover.clean_stop(lab, "alpha")
        took: Callable[[], bool] = settled(lab, {"alpha"})
        assert wait_for(took, 2.0) < 1.0  # priority 0 on the way out: the backup takes over
