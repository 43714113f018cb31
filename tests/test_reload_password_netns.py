"""A reload that changes the password, on the wire with the real daemons (IPv4 and IPv6 VIPs):
every advert after it goes out digested and sealed under the new password (the daemon's shared
keyed HMAC and the node's keys renewed, the pairs of the old plan dropped), so the cluster stays
settled with no digest or tag failures once every host has reloaded, and an advert captured
before the reload and replayed after it is dropped and moves nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from labtools import WIRE_TOOL, settled, status_counters, wait_for

from iprotate.carp import codec
from iprotate.cli import main
from iprotate.lab.lab import CLIENT, Lab

pytestmark = pytest.mark.netns


def test_a_reload_that_changes_the_password_keeps_every_vip_where_it_is(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(hosts=2, vips=2, vips6=1, run_args=("--hold-down", "0", "--stagger", "0"))
    lab.start_all()
    wait_for(settled(lab), 8.0)
    v = next(v for v in lab.plan.vips if v.ip.version == 4)
    out = lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "capture", "eth0", str(v.group), "1.5")
    captured = [
        h for h in out.split() if codec.decode_packet(bytes.fromhex(h)).advert.vhid == v.vhid
    ]
    assert captured
    sender = str(codec.decode_packet(bytes.fromhex(captured[-1])).src)

    (lab.workdir / "password").write_text("a-new-secret\n")
    for n in lab.names:
        result = CliRunner().invoke(main, ["reload", "--socket", str(lab.control_socket(n))])
        assert result.exit_code == 0, result.output
    time.sleep(1.5)  # the hosts' reloads a moment apart: their adverts failed each other's checks
    wait_for(settled(lab), 3.0)
    before = {n: status_counters(lab, n) for n in lab.names}
    lab.seg.run(CLIENT, sys.executable, WIRE_TOOL, "send", "eth0", str(v.group), captured[-1])
    t0 = time.monotonic()
    while time.monotonic() - t0 < 4.0:  # longer than D: a host not heard would have taken over
        assert settled(lab)(), lab.holders()
        time.sleep(0.1)
    for n in lab.names:
        after = status_counters(lab, n)
        assert after.get("drop_forged", 0) == before[n].get("drop_forged", 0), n
        assert after.get("adverts_received", 0) > before[n].get("adverts_received", 0), n
        # The replay (old password) fails the digest where it is not our own source; nothing
        # else did.
        replayed = 0 if str(lab.plan.cluster.host(n).address) == sender else 1
        assert after.get("drop_bad_digest", 0) - before[n].get("drop_bad_digest", 0) == replayed
