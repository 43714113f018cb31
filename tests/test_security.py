"""What someone on the segment without the password can do, on the wire: captured adverts replayed,
rewritten or sent from addresses that are no host, and restarts with a wrong clock. In none of
them may a VIP stay on two hosts, or on none, beyond the protocol's bound (the README's SECURITY
section states these results)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest
from labtools import WIRE_TOOL, settled, status_counters, takeover_bound, wait_for

from iprotate.carp import codec
from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns


def capture(lab: Lab, v: Any, src: str, seconds: float = 2.5) -> list[codec.Packet]:
    """The adverts `src` sends for VIP `v`, as the client sees them."""
    out = lab.seg.run(
        CLIENT, sys.executable, WIRE_TOOL, "capture", "eth0", str(v.group), str(seconds)
    )
    pkts = [codec.decode_packet(bytes.fromhex(h)) for h in out.split()]
    return [p for p in pkts if str(p.src) == src and p.advert.vhid == v.vhid]


def rewrite(p: codec.Packet, src: str | None = None, **fields: int) -> str:
    """The same advert (counter and digest untouched, so the CARP digest still verifies) with
    another source address or priority."""
    a = p.advert
    adv = codec.Advert(
        vhid=a.vhid,
        advskew=fields.get("advskew", a.advskew),
        advbase=fields.get("advbase", a.advbase),
        counter=a.counter,
        digest=a.digest,
    )
    ip = IPv4Address(src) if src else p.src
    return codec.build_ip_packet(ip, p.dst, codec.pack_advert(adv)).hex()


def send(lab: Lab, v: Any, *hexes: str) -> None:
    lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "send", "eth0", str(v.group), *hexes)


def address(lab: Lab, host: str) -> str:
    return str(lab.plan.cluster.host(host).address)


def holders_of(lab: Lab, v: Any) -> list[str]:
    return lab.holders()[str(v.ip)]


def test_a_captured_advert_replayed_under_the_owners_address_changes_nothing(
    make_lab: Callable[..., Lab],
) -> None:
    """The issue's case: charlie's advert captured while charlie held alpha's VIP (alpha
    drained), replayed once with alpha's source and alpha's priority after alpha took the VIP
    back. Before, every peer then dropped alpha's real adverts as replays and the VIP stayed on
    alpha and charlie."""
    lab = make_lab(hosts=3, vips=3, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in lab.plan.vips if v.owner == "alpha")
    taker = v.order[1]
    sock = str(lab.control_socket("alpha"))
    from click.testing import CliRunner

    from iprotate.cli import main

    assert CliRunner().invoke(main, ["drain", "--socket", sock, "--vip", str(v.ip)]).exit_code == 0
    wait_for(lambda: holders_of(lab, v) == [taker], 8.0)
    captured = capture(lab, v, address(lab, taker), 1.5)
    assert captured
    assert CliRunner().invoke(main, ["undrain", "--socket", sock]).exit_code == 0
    wait_for(settled(lab), 8.0)

    before = status_counters(lab, taker)
    send(lab, v, rewrite(captured[-1], src=address(lab, "alpha"), advskew=v.advskew[0]))
    time.sleep(takeover_bound(lab, "alpha") + 1.0)
    assert holders_of(lab, v) == ["alpha"], "a replayed advert locked alpha out"
    assert settled(lab)()
    after = status_counters(lab, taker)
    assert after.get("drop_forged", 0) == before.get("drop_forged", 0) + 1


def test_a_rewritten_priority_from_a_stranger_is_dropped(make_lab: Callable[..., Lab]) -> None:
    """The owner's advert rewritten to advbase 0 / advskew 1 and sent from an address that is no
    host: before, the owner yielded to it and nobody held the VIP."""
    lab = make_lab(hosts=3, vips=3)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in lab.plan.vips if v.owner == "alpha")
    (p,) = capture(lab, v, address(lab, "alpha"), 1.5)[-1:]
    forged = rewrite(p, src="198.51.100.99", advbase=0, advskew=1)
    for _ in range(10):
        send(lab, v, *[forged] * 64)  # enough that the kernel's 1-in-64 sample lets some in
        time.sleep(0.1)
    time.sleep(1.0)
    assert settled(lab)(), lab.holders()
    assert status_counters(lab, "alpha").get("drop_not_a_host", 0) >= 1  # sampled, counted
    # The same rewrite under a host's own address fails iprotate's tag instead.
    send(lab, v, rewrite(p, src=address(lab, "bravo"), advbase=0, advskew=1))
    time.sleep(1.0)
    assert settled(lab)()
    assert status_counters(lab, "alpha").get("drop_forged", 0) >= 1


def test_a_dead_owners_adverts_replayed_from_a_stranger_do_not_hold_off_its_takeover(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=3, vips=3)
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in lab.plan.vips if v.owner == "alpha")
    captured = [rewrite(p, src="198.51.100.97") for p in capture(lab, v, address(lab, "alpha"))]
    assert captured
    (proc,) = lab.procs.pop("alpha")
    lab.seg.stop(proc, signal.SIGKILL)
    t0 = time.monotonic()
    rank1 = v.order[1]
    while time.monotonic() - t0 < takeover_bound(lab, "alpha") + 0.5:
        send(lab, v, *captured)
        if holders_of(lab, v) == [rank1]:
            break
        time.sleep(0.2)
    assert rank1 in holders_of(lab, v), "replays from a stranger held off the takeover"


def test_a_host_restarted_with_its_clock_an_hour_behind_is_not_locked_out(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=3, vips=6, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    time.sleep(2.0)  # alpha's adverts have set every peer's mark
    lab.stop("alpha")
    wait_for(settled(lab, {"alpha"}), 5.0)
    # alpha again, in a new process whose wall clock is one hour behind (monotonic time real).
    argv = [sys.executable, "-m", "iprotate", "run", str(lab.cluster_file), "--host", "alpha"]
    argv += ["--control-socket", str(lab.control_socket("alpha")), "--state-dir"]
    argv += [str(lab.workdir / "state"), "--hold-down", "0", "--stagger", "0"]
    env = {**os.environ, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    proc = lab.seg.spawn(
        "alpha", ["faketime", "-f", "-1h", *argv], log=str(lab.workdir / "alpha.log"), env=env
    )
    lab.procs["alpha"] = [proc]
    # Its VIPs come home and stay there: no peer drops its adverts as replays.
    wait_for(settled(lab), 8.0)
    time.sleep(takeover_bound(lab, "alpha") + 1.0)
    assert settled(lab)(), lab.holders()
    for peer in ("bravo", "charlie"):
        assert status_counters(lab, peer).get("drop_replay", 0) == 0
