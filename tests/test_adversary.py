"""Attacks found by trying to break the fault-proof engine, each the shortest reproduction on the
wire (or in the lab) of something that went wrong before its fix."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from labtools import status_counters, takeover_bound, wait_for
from test_security import address, capture, holders_of, rewrite, send

from iprotate.lab.lab import Lab

pytestmark = pytest.mark.netns


def test_an_advert_rewritten_under_a_ucarp_host_outside_the_vips_order_is_dropped(
    make_lab: Callable[..., Lab],
) -> None:
    """ucarp hosts' adverts carry no tag, so anyone can send an advert under a ucarp host's
    address. For the VIPs that host serves that is CARP's own limit (README, Security); but a
    VIP whose order does not name that host was open too: alpha's own advert, rewritten to a
    shorter interval and sent from charlie (ucarp, no part in the VIP), made alpha yield and
    kept bravo waiting, so the VIP stayed on no host for as long as it was sent."""
    lab = make_lab(hosts=3, vips=6, legacy=1, extra_cluster={"backups": 1})
    v = next(v for v in lab.plan.vips if v.order == ("alpha", "bravo"))
    lab.start("alpha")
    lab.start("bravo")
    others = {str(u.ip) for u in lab.plan.vips if "charlie" in u.order}

    def v_on(hosts: list[str]) -> Callable[[], bool]:
        return lambda: holders_of(lab, v) == hosts

    wait_for(v_on(["alpha"]), 8.0)
    (p,) = capture(lab, v, address(lab, "alpha"), 1.5)[-1:]
    forged = rewrite(p, src=address(lab, "charlie"), advbase=0, advskew=1)
    t0 = time.monotonic()
    while time.monotonic() - t0 < takeover_bound(lab, "alpha") + 1.0:
        send(lab, v, *[forged] * 4)
        time.sleep(0.1)
    assert holders_of(lab, v) == ["alpha"], lab.holders()
    assert status_counters(lab, "alpha").get("drop_not_in_order", 0) >= 1
    assert others  # charlie's own VIPs exist: the lab really is a mixed one
