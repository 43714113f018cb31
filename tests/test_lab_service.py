"""The lab's service: every host serves HTTP with its name, a `[[checks]]` entry checks it, the
client asks it on every VIP; `break` (the service stopped) moves the host's addresses to the next
hosts, and `fix` brings them back. Real TCP services in the host namespaces, the real daemon."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import pytest
from labtools import wait_for

from iprotate.lab.lab import SERVICE_CHECK, Lab

pytestmark = pytest.mark.netns


def _served_by(lab: Lab, down: set[str]) -> Callable[[], bool]:
    """The client's HTTP requests are answered, for every VIP, by the host the plan gives it with
    `down` out, and ARP agrees."""

    def check() -> bool:
        lab.poll_probe(0.1)
        return all(
            lab.served.get(str(v.ip)) == v.holder(down)
            and lab.view.get(str(v.ip)) == [v.holder(down)]
            for v in lab.plan.vips
        )

    return check


def test_break_moves_the_addresses_to_the_service_and_fix_brings_them_back(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=3, vips=6, service=True, run_args=("--hold-down", "1"))
    lab.start_all()
    lab.start_probe(period=0.1)
    wait_for(_served_by(lab, set()), 15.0)
    owned = {str(v.ip) for v in lab.plan.vips if v.owner == "alpha"}
    assert owned

    lab.stop_service("alpha")
    assert not lab.serving("alpha") and lab.running("alpha")  # the host and its engine live on
    # fall failures one interval apart, each at most a timeout long, then a drain's handover
    # (make-before-break, well under a second in the lab) and the probe's next round.
    bound = SERVICE_CHECK["fall"] * SERVICE_CHECK["interval"] + SERVICE_CHECK["timeout"] + 2.0
    took = wait_for(_served_by(lab, {"alpha"}), bound)
    assert not any(ip in owned for ip, hs in lab.holders().items() if "alpha" in hs)
    print(f"break: served by the next hosts after {took:.2f} s")

    lab.start_service("alpha")
    # rise passes, the hold-down, the stagger: then alpha serves its own again.
    wait_for(_served_by(lab, set()), 10.0)


def test_the_service_runs_in_the_host_namespace_and_goes_with_the_lab(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=2, vips=2, service=True)
    pids = {n: p.pid for n, p in lab.services.items()}
    assert set(pids) == {"alpha", "bravo"}
    # It answers on the host's own address from the client, with the host's name.
    out = lab.seg.run("client", sys.executable, "-c", _GET.format(addr="198.51.100.2"))
    assert out.strip() == "bravo"
    lab.stop_service("bravo")
    assert not lab.serving("bravo")
    lab.start_service("bravo")  # `fix` right after `break` binds again at once
    lab.start_service("bravo")  # and twice is once
    assert lab.serving("bravo") and len([p for p in lab.seg.procs if p.poll() is None]) == 2
    lab.close()
    time.sleep(0.1)
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


_GET = (
    "import urllib.request as u;"
    "print(u.urlopen('http://{addr}:8080/', timeout=2).read().decode(), end='')"
)
