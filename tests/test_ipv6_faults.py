"""IPv6 VIPs' addresses tampered with on the hosts, with the real daemon in namespaces: what the
kernel does differently from IPv4 (one copy of an address whatever its prefix, duplicate address
detection) must not leave a VIP on no host or on two."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from labtools import settled, wait_for

from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns


def v6(lab: Lab) -> list[Any]:
    return [v for v in lab.plan.vips if v.ip.version == 6]


def test_an_ipv6_vip_replaced_by_a_copy_with_another_prefix_comes_back(
    make_lab: Callable[..., Lab],
) -> None:
    """On the master, the VIP removed and added again as a /128 before the daemon could add it
    back (here: the daemon stopped meanwhile, as a loaded host's would be descheduled). IPv4 keeps
    both copies; IPv6 only one, so the daemon's add found the copy there, and removing the copy
    (another prefix than the plan's) removed the VIP: nobody held it while its master kept
    advertising."""
    lab = make_lab(hosts=2, vips=0, vips6=2, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in v6(lab) if v.owner == "alpha")
    (proc,) = lab.procs["alpha"]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        lab.seg.run("alpha", "ip", "addr", "del", str(v.address), "dev", "eth1")
        lab.seg.run("alpha", "ip", "addr", "add", f"{v.ip}/128", "dev", "eth1", "nodad")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    wait_for(lambda: str(v.address) in lab.seg.addresses("alpha", family=6), 2.0)
    assert f"{v.ip}/128" not in lab.seg.addresses("alpha", family=6)
    time.sleep(0.5)
    assert settled(lab)(), lab.holders()
    lab.seg.run(CLIENT, "ping", "-6", "-c", "1", "-W", "1", str(v.ip))
